"""Checkpoint bundles: a directory in the VITA-1.5 layout, read as published.

A bundle holds ``config.json`` (LLM architecture plus the ``mm_*`` keys), safetensors shards (with
``model.safetensors.index.json`` when sharded), tokenizer files, ``generation_config.json`` and the encoder
sub-directories named by ``mm_vision_tower`` / ``mm_audio_encoder``. Those sub-directories supply only
configs (architecture, image processor, yaml, CMVN stats); every tensor comes from the main shards, so
pickles such as ``final.pt`` are never opened. Components read only their own key prefix, so an unused
component's tensors are never loaded; the LLM takes what no component claims, and a tensor that is nobody's
is an error naming its prefix (:func:`load_into` with ``context``). :func:`vita_framework.saving.save_bundle`
writes a built pipeline back in the same layout.
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")  # not copied by save_bundle (it writes its own)


def default_bundle_path() -> Path:
    """The tiny bundle shipped inside the package."""
    return Path(__file__).resolve().parent / "assets" / "default_bundle"


class Bundle:
    """A checkpoint directory. Cheap to open: tensors are read on demand, by prefix."""

    def __init__(self, path: str | os.PathLike, *, allow_pickle: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.allow_pickle = allow_pickle
        self._pickle: dict[str, Any] | None = None
        if not self.path.is_dir():
            raise CheckpointError(
                f"checkpoint directory '{self.path}' does not exist; pass checkpoint=<dir with config.json "
                "and model*.safetensors>, or checkpoint=default for the embedded bundle"
            )
        if not (self.path / "config.json").is_file():
            raise CheckpointError(f"checkpoint '{self.path}' has no config.json; is it a VITA bundle directory?")

    def __repr__(self) -> str:
        return f"Bundle('{self.path}')"

    @cached_property
    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json")

    @cached_property
    def generation_config(self) -> dict[str, Any]:
        path = self.path / "generation_config.json"
        return read_json(path) if path.is_file() else {}

    # -- tensors ---------------------------------------------------------------------------------
    @cached_property
    def _key_to_file(self) -> dict[str, Path]:
        index = self.path / INDEX_FILE
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"'{index}' has no 'weight_map' object")
            return {key: self.path / name for key, name in weight_map.items()}  # shards checked when read
        single = self.path / SINGLE_FILE
        if single.is_file():
            return dict.fromkeys(_safetensors_keys(single), single)
        shards = sorted(self.path.glob("model*.safetensors"))
        if shards:
            return {key: shard for shard in shards for key in _safetensors_keys(shard)}
        pickles = [name for name in PICKLE_FILES if (self.path / name).is_file()]
        if pickles:
            if not self.allow_pickle:
                raise CheckpointError(
                    f"checkpoint '{self.path}' only has pickle weights ({pickles[0]}); pickles can run code. "
                    "Convert it to safetensors, or pass allow_pickle=true to load it with weights_only=True"
                )
            return dict.fromkeys(self._pickle_state(), self.path / pickles[0])
        raise CheckpointError(
            f"checkpoint '{self.path}' has no weights: expected {SINGLE_FILE} or {INDEX_FILE} with its shards"
        )

    def _pickle_state(self) -> dict[str, Any]:
        if self._pickle is None:
            import pickle

            import torch

            file = self.path / "pytorch_model.bin"
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:  # weights_only refuses anything but tensors and plain containers
                text = str(exc)
                found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
                if found:
                    raise CheckpointError(
                        f"'{file}' cannot be loaded with weights_only=True: it holds an object of type "
                        f"{found.group(1)}, not only tensors, and only a full unpickle (able to run code) could read "
                        "it. Convert it to safetensors in a trusted environment "
                        "(safetensors.torch.save_file(state_dict, 'model.safetensors'))") from None
                detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
                raise CheckpointError(f"'{file}' is not a readable PyTorch checkpoint "
                                      f"({detail.group(1) if detail else text.strip().splitlines()[0]}); re-save it "
                                      "or convert it to model.safetensors") from None
            except (RuntimeError, EOFError, OSError, ValueError) as exc:
                raise CheckpointError(f"'{file}' is not a readable PyTorch checkpoint ({exc}); re-save or convert "
                                      "it to model.safetensors") from None
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise CheckpointError(f"'{file}' holds a {type(state).__name__} that is not a flat state dict "
                                      "(name -> tensor); save model.state_dict() (as safetensors, preferably)")
            self._pickle = state
        return self._pickle

    def has_prefix(self, prefix: str) -> bool:
        return any(key.startswith(prefix) for key in self._key_to_file)

    def load(self, prefix: str = "", *, exclude: tuple[str, ...] = (), strip: bool = True) -> dict[str, Any]:
        """Tensors whose key starts with ``prefix`` (and none of ``exclude``), prefix stripped."""
        wanted: dict[Path, list[str]] = {}
        for key, file in self._key_to_file.items():
            if key.startswith(prefix) and not key.startswith(exclude):
                wanted.setdefault(file, []).append(key)
        out: dict[str, Any] = {}
        for file, keys in wanted.items():
            if not file.is_file():  # a shard holding only unconfigured components' tensors may be absent
                raise CheckpointError(f"shard '{file.name}' listed in '{self.path / INDEX_FILE}' is missing (it holds "
                                      f"{keys[0]}, ...)")
            if file.suffix == ".bin":
                state = self._pickle_state()
                tensors = {key: state[key] for key in keys}
            else:
                from safetensors import safe_open

                with safe_open(str(file), framework="pt") as handle:
                    tensors = {key: handle.get_tensor(key) for key in keys}
            for key, tensor in tensors.items():
                out[key[len(prefix):] if strip else key] = tensor
        return out

    # -- sub-directories -------------------------------------------------------------------------
    def resolve(self, config_key: str) -> Path:
        """Resolve ``config[config_key]`` (e.g. ``mm_vision_tower``) to a local directory.

        The value is the checkpoint's, not the user's, so it is confined: it resolves inside the bundle
        directory (``..`` and symlinks followed, never the current directory), or it is a hub id whose config files
        (never weights: those come from the main shards) are fetched into the Hugging Face cache.
        """
        value = self.config.get(config_key)
        if not value:
            raise CheckpointError(f"'{self.path / 'config.json'}' has no '{config_key}'")
        from .fetch import TOWER_FILES

        return resolve_local_dir(str(value), base=self.path, what=f"{config_key} of {self.path}", confine=True,
                                 patterns=TOWER_FILES)


def read_bundle_info(bundle: str | os.PathLike) -> dict[str, Any]:
    """A bundle's ``bundle_info.json`` (how its weights were made; {} when absent or unreadable)."""
    try:
        return json.loads((Path(bundle) / "bundle_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def resolve_local_dir(value: str, *, base: Path, what: str, confine: bool = False,
                      patterns: tuple[str, ...] | None = None) -> Path:
    """A local directory for ``value``: ``base / value``, then ``value`` itself (a user's path), then a hub id
    (``org/name[@revision]``) fetched into the Hugging Face cache (only ``patterns``: a model's files by default;
    offline, from the cache alone; see :mod:`vita_framework.hub`).

    ``confine`` is for a checkpoint's own config keys: only ``base / value`` is tried, and it must lie inside
    ``base`` or the Hugging Face cache once ``..`` and symlinks are resolved (``../../../etc`` is an error).
    """
    if confine:
        _check_confined(value, base=base, what=what)
    candidates = [base / value] if confine else [base / value, Path(value).expanduser()]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    from .hub import parse_hub_ref, snapshot

    ref = parse_hub_ref(value)
    if ref is not None:
        from .fetch import MODEL_FILES

        return snapshot(ref, list(patterns or MODEL_FILES), what=what.split(" of ")[0],
                        flag="--model" if patterns is None else "--config-only")
    raise CheckpointError(f"{what} is '{value}', but no directory '{base / value}' exists")


def _check_confined(value: str, *, base: Path, what: str) -> None:
    target = (base / value).resolve()
    roots = [base.resolve()]
    try:
        from huggingface_hub import constants

        roots.append(Path(constants.HF_HUB_CACHE).expanduser().resolve())
    except ImportError:
        pass
    if any(target == root or root in target.parents for root in roots):
        return
    raise CheckpointError(
        f"{what} is '{value}', which resolves to '{target}', outside the checkpoint directory '{base}'. A "
        "checkpoint's own config keys resolve only inside it or the local Hugging Face cache "
        f"('{roots[-1]}'); copy that directory into the checkpoint (only its config files are read) and set "
        "the key to its relative name")


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise CheckpointError(f"'{path}' is missing") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"'{path}' must hold a JSON object")
    return data


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:
        raise CheckpointError(f"'{path}' is not a readable safetensors file: {exc}") from None


class Claimed(list):
    """One kind's claimed prefixes (a plain ``list[str]``) that remembers who claims them, for error messages."""

    def __init__(self, prefixes: Any = (), *, owner: str = "") -> None:
        super().__init__(prefixes)
        self.owner = owner


def load_into(module: Any, state: dict[str, Any], *, what: str, ignore_missing: tuple[str, ...] = (),
              context: Any = None) -> None:
    """Load ``state`` into ``module`` strictly, naming missing, unexpected and mis-shaped keys.

    With the build ``context`` (the LLM's load: ``state`` is what no component claims), unexpected tensors are
    reported by prefix with the configured components' claims (:func:`unclaimed_message`).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(ignore_missing)]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s), e.g. {', '.join(missing[:5])}")
    if wrong:
        problems.append(f"{len(wrong)} mis-shaped tensor(s): {'; '.join(wrong[:5])}")
    if unexpected:
        problems.append(unclaimed_message(unexpected, context) if context is not None
                        else f"unexpected {len(unexpected)} tensor(s), e.g. {', '.join(unexpected[:5])}")
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))
    module.load_state_dict(state, strict=False, assign=True)


def unclaimed_message(keys: list[str], context: Any) -> str:
    """Tensors nobody claims, grouped by prefix, with every configured component's claim and what to do."""
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        prefix = ".".join(parts[:min(3, len(parts) - 1)]) + "." if len(parts) > 1 else key
        groups[prefix] = groups.get(prefix, 0) + 1
    by_prefix = ", ".join(f"'{p}' ({n})" for p, n in sorted(groups.items(), key=lambda item: -item[1])[:10])
    owners = [f"{getattr(prefixes, 'owner', '') or kind} claims "
              + (", ".join(f"'{p}'" for p in prefixes) if prefixes else "nothing")
              for kind, prefixes in context.claims.items()]
    return (f"unexpected {len(keys)} tensor(s), e.g. {', '.join(keys[:5])}: no configured component claims them "
            f"and the LLM has no such weights. Unclaimed prefixes: {by_prefix}. Configured: "
            f"{'; '.join(owners) or 'no component besides the LLM'}; the LLM takes every other tensor. Configure "
            "the component these tensors belong to (+<kind>=<option>), set its <kind>.weights_prefix to their "
            "prefix, or remove them from the bundle")


def unclaimed_state(bundle: Bundle, context: Any) -> dict[str, Any]:
    """The tensors no configured component claims and no unconfigured registered component would read: the
    LLM's share of the bundle (design.md §6: components own their weights, the LLM takes what remains)."""
    claimed = tuple(p for prefixes in context.claims.values() for p in prefixes)
    return bundle.load("", exclude=claimed + tuple(context.ignored_prefixes))
