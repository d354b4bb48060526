"""The modality table: every input kind (image, video, audio, a plugin's own) is one registered entry.

An entry says everything the framework needs to accept that input: the request key users fill
(``images=[...]``), the marker a prompt may place (``<image>``), which component kind encodes it
(``vision``), how a file is loaded and turned into the encoder's batch, which placeholder stream its features
are spliced through, and how it shapes the prompt (system prompt, position, default question). Built-ins
register through the same ``vita_register_modalities`` hook as third parties, so nothing in the core names a
modality.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, DuplicateModalityError, InputError


@dataclass
class LoadContext:
    """What a modality's loader may use: the configured encoder and the modality's options."""

    #: the encoder serving this modality (e.g. its ``sample_rate``); None only in validation dry runs
    encoder: Any
    #: the modality's config node (``options_key``) merged with the request's own options (``request_options``)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Modality:
    """One input kind. ``load`` and ``prepare`` run for every request that has items of this modality."""

    #: short name, also the key of per-modality token counts (``tokens_in``)
    name: str
    #: what a user may write in a prompt to place one item (``<image>``); one marker per item
    marker: str
    #: the request / config / JSONL key holding this modality's items (``images``)
    request_key: str
    #: component kind (config group) of the encoder that serves it (``vision``)
    encoder: str
    #: ``load(source, LoadContext) -> item``: a path (or an in-memory object) to what ``prepare`` takes
    load: Callable[[Any, LoadContext], Any]
    #: ``prepare(encoder, items) -> EncoderInput``: items to the encoder's batch and segments per item
    prepare: Callable[[Any, list[Any]], Any]
    #: placeholder id written into the prompt ids, one per feature row (negative: never a real token)
    placeholder_id: int
    #: placeholder stream whose marker and features this modality's segments use; "" means its own name.
    #: Video frames use the "image" stream, exactly as VITA splices them.
    placeholder: str = ""
    #: features pass through the ``projector`` component (False: the encoder outputs the LLM width itself)
    projected: bool = False
    #: the chat template's system prompt chosen when this modality is present (None: no preference)
    system_prompt: str | None = None
    #: when several present modalities choose a system prompt, the highest priority wins
    system_priority: int = 0
    #: without markers in the prompt, items go "before" the question (then a newline) or "after" it
    position: str = "before"
    #: the segments of one item form a group (frames of one video; slow-fast pools per group)
    grouped: bool = False
    #: a request with this modality and no prompt gets an empty question (a spoken question)
    replaces_question: bool = False
    #: top-level config node with loader options (``video``: frame sampling), validated by ``options_schema``
    options_key: str | None = None
    options_schema: type | None = None
    #: extra per-request fields this modality reads (``video_fps``), allowed in requests and JSONL rows
    request_options: tuple[str, ...] = ()
    #: the request options that must be finite numbers > 0 (``video_fps``), checked before model work
    positive_request_options: tuple[str, ...] = ()
    #: ``check(source, options)``: the loader's cheap checks alone (headers, sizes), run by the validator on the
    #: CLI's files before any model is built; raises InputError. None: the loader checks when it runs.
    check: Callable[[Any, dict[str, Any]], None] | None = None
    #: what to suggest when a request is too long for the context and this modality is in it
    budget_hint: str = ""
    description: str = ""

    @property
    def stream(self) -> str:
        return self.placeholder or self.name


@dataclass(frozen=True)
class ModalityEntry:
    modality: Modality
    plugin: str
    package: str

    @property
    def origin(self) -> str:
        return f"plugin '{self.plugin}' ({self.package})"


class ModalityTable:
    """Registered modalities in registration order (built-ins first), with the lookups the core needs."""

    def __init__(self) -> None:
        self._entries: dict[str, ModalityEntry] = {}

    def add(self, modality: Modality, *, plugin: str, package: str) -> None:
        entry = ModalityEntry(modality, plugin, package)
        if not isinstance(modality, Modality):
            raise ConfigError(f"{entry.origin} registered {modality!r}; register a vita_framework.modalities."
                              "Modality")
        if modality.position not in ("before", "after"):
            raise ConfigError(f"{entry.origin}: modality '{modality.name}' has position={modality.position!r}; "
                              "use 'before' or 'after'")
        for other in self._entries.values():
            om = other.modality
            clashes = [what for what, mine, theirs in (
                ("name", modality.name, om.name), ("marker", modality.marker, om.marker),
                ("request key", modality.request_key, om.request_key)) if mine == theirs]
            if modality.placeholder_id == om.placeholder_id and modality.stream != om.stream:
                clashes.append(f"placeholder id {modality.placeholder_id}")
            if clashes:
                raise DuplicateModalityError(
                    f"modality '{modality.name}' from {entry.origin} and modality '{om.name}' from {other.origin} "
                    f"claim the same {', '.join(clashes)}. Uninstall one package, or block a plugin with "
                    f"VITA_BLOCK_PLUGINS={plugin}")
        self._entries[modality.name] = entry

    def check_streams(self) -> None:
        """Every stream a modality points to must exist and agree on its placeholder id and encoder."""
        for entry in self._entries.values():
            m = entry.modality
            owner = self._entries.get(m.stream)
            if owner is None:
                raise ConfigError(f"{entry.origin}: modality '{m.name}' uses placeholder stream '{m.stream}', "
                                  f"which no modality registers; registered: {', '.join(self._entries)}")
            o = owner.modality
            if (o.placeholder_id, o.encoder, o.projected) != (m.placeholder_id, m.encoder, m.projected):
                raise ConfigError(f"{entry.origin}: modality '{m.name}' shares stream '{m.stream}' but differs in "
                                  "placeholder_id, encoder or projected from the stream's owner")

    # -- lookups ---------------------------------------------------------------------------------------
    def __iter__(self):
        return (entry.modality for entry in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[ModalityEntry]:
        return list(self._entries.values())

    def get(self, name: str) -> Modality:
        try:
            return self._entries[name].modality
        except KeyError:
            raise InputError(f"unknown modality '{name}'; registered: {', '.join(self._entries)}") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def encoder_kinds(self) -> list[str]:
        return list(dict.fromkeys(m.encoder for m in self))

    def modalities_of(self, kind: str) -> list[Modality]:
        return [m for m in self if m.encoder == kind]

    def streams(self) -> dict[str, int]:
        """Placeholder stream -> placeholder id (what ``FusionStrategy.fuse`` receives)."""
        return {m.stream: m.placeholder_id for m in self}

    def stream_markers(self) -> dict[str, str]:
        """Placeholder stream -> the marker that stands for one segment in an expanded prompt."""
        return {m.name: m.marker for m in self if m.stream == m.name}

    def request_keys(self) -> dict[str, Modality]:
        return {m.request_key: m for m in self}

    def request_options(self) -> dict[str, Modality]:
        return {opt: m for m in self for opt in m.request_options}

    def options_keys(self) -> dict[str, Modality]:
        return {m.options_key: m for m in self if m.options_key}

    def split_fields(self, fields: Mapping[str, Any]) -> tuple[dict[str, list[Any]], dict[str, Any]]:
        """Request fields (``images=...``, ``video_fps=...``) -> inputs by modality name and request options."""
        keys, options = self.request_keys(), self.request_options()
        inputs: dict[str, list[Any]] = {}
        extra: dict[str, Any] = {}
        for key, value in fields.items():
            if key in keys or key in self._entries:
                modality = keys[key] if key in keys else self._entries[key].modality
                items = [] if value is None else [value] if isinstance(value, (str, bytes)) or not _listlike(value) \
                    else list(value)
                if items:
                    inputs[modality.name] = items
            elif key in options:
                if value is not None:
                    extra[key] = value
            else:
                valid = sorted([*keys, *options])
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise InputError(f"unknown request field '{key}'.{hint} Valid: prompt, id, {', '.join(valid)}")
        return inputs, extra


def _listlike(value: Any) -> bool:
    """A list of items, not one item: PIL images, arrays/tensors and (array, rate) pairs are single items."""
    return isinstance(value, Iterable) and not isinstance(value, (Mapping, tuple)) \
        and not hasattr(value, "convert") and not hasattr(value, "shape")
