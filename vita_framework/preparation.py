"""From a :class:`Request` to a :class:`PreparedRequest`: load, preprocess, size, encode, tokenise.

Everything a request costs is known before any encoder runs: items are loaded and preprocessed, the prompt is
laid out and tokenised once, each segment's rows are planned (encoder, projector, fusion) and the total is
checked against the context. Only then are the encoders run. A request without items of a modality runs none
of that modality's work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .contracts import EncoderInput
from .errors import ConfigError, FusionError, InputError
from .modalities import LoadContext, Modality, ModalityTable
from .prompt import PromptTokens, layout_user_text, system_prompt_key
from .request import PreparedRequest, Request

DEFAULT_QUESTION = "Describe this image."


@dataclass
class _Staged:
    """One present modality after loading and preprocessing (nothing encoded yet).

    With an encoder cache, items found there are not preprocessed: ``encoder_input`` holds only the others
    (None when every item was found) and ``cached`` the found ones by item index."""

    modality: Modality
    encoder: Any
    encoder_input: EncoderInput | None  # the items to encode (all of them without a cache)
    planned: list[int]  # rows per segment after the encoder (and projector), every item
    segments: list[int]  # segments per item, every item
    keys: list[str] = field(default_factory=list)  # content keys per item (with a cache)
    cached: dict[int, Any] = field(default_factory=dict)  # item index -> CachedItem


class RequestPreparer:
    """The pipeline's front half; holds the parts it needs, not the LLM's generation."""

    def __init__(self, *, modalities: ModalityTable, encoders: dict[str, Any], projector: Any, fusion: Any,
                 tokenizer: Any, template: Any, max_length: int | None,
                 modality_options: dict[str, dict[str, Any]] | None = None, encoder_cache: Any = None) -> None:
        self.modalities, self.encoders, self.projector, self.fusion = modalities, encoders, projector, fusion
        self.tokenizer, self.template, self.max_length = tokenizer, template, max_length
        self.modality_options = dict(modality_options or {})
        self.placeholder_ids = modalities.streams()
        self.encoder_cache = encoder_cache  # a vita_framework.encoder_cache.EncoderCache, or None

    def prepare(self, request: Request) -> PreparedRequest:
        unknown = sorted(set(request.inputs) - set(self.modalities.names()))
        if unknown:
            raise InputError(f"unknown modality {unknown}; registered: {', '.join(self.modalities.names())}")
        staged = [self._stage(m, request) for m in self.modalities if request.items(m.name)]
        if request.prompt is not None:
            question = request.prompt
        else:  # as the reference demo: a spoken question comes with an empty text question
            question = "" if any(s.modality.replaces_question for s in staged) else DEFAULT_QUESTION
        if not isinstance(question, str):
            raise InputError(f"the prompt must be text; got {type(question).__name__}")
        user, order = layout_user_text(question, {s.modality.name: s.segments for s in staged}, self.modalities)
        system = system_prompt_key([s.modality for s in staged])
        render = getattr(request, "render_prompt", None)  # a chat request renders its conversation itself
        if render is not None:
            prompt = render(user, system, self.template, self.tokenizer, self.modalities.stream_markers())
        else:
            text = self.template.render(user, system, self.tokenizer)
            prompt = PromptTokens(self.tokenizer, text, self.modalities.stream_markers())
        by_name = {s.modality.name: s for s in staged}
        planned_rows = {name: s.planned for name, s in by_name.items()}
        planned = {stream: self.fusion.reduced_tokens(stream, *self._in_order(items, by_name, planned_rows))
                   for stream, items in order.items()}
        self._check_budget(prompt.text_tokens, planned, order, by_name)
        encoded = {s.modality.name: self._encode(s) for s in staged}
        features: dict[str, list[Any]] = {}
        rows: dict[str, list[int]] = {}
        tokens = dict.fromkeys(self.modalities.names(), 0)
        for stream, items in order.items():
            feats, groups = self._in_order(items, by_name, encoded)
            features[stream] = self.fusion.reduce(stream, feats, groups)
            rows[stream] = [int(f.shape[0]) for f in features[stream]]
            if len(rows[stream]) != len(feats):
                raise FusionError(f"fusion {type(self.fusion).__name__}.reduce returned {len(rows[stream])} tensors "
                                  f"for {len(feats)} {stream} segments; it must keep one per segment")
            counted = rows[stream]
            pruned = getattr(self.fusion, "pruned_tokens", None)  # rows the LLM drops in its prefill (fastv)
            if pruned is not None:
                counted = [int(n) for n in pruned(stream, rows[stream], groups)]
            for name, count in zip(self._owners(items, by_name), counted):
                tokens[name] += count
        ids = prompt.ids(rows, self.placeholder_ids)
        tokens["text"] = prompt.text_tokens
        tokens["total"] = len(ids)
        if self.max_length is not None and len(ids) > self.max_length:
            self._check_budget(prompt.text_tokens, rows, order, by_name)
        return PreparedRequest(question, ids, features, tokens, request.id)

    # -- steps -------------------------------------------------------------------------------------------
    def _stage(self, modality: Modality, request: Request) -> _Staged:
        encoder = self.encoders.get(modality.encoder)
        if encoder is None:
            raise ConfigError(f"{modality.request_key} were given but no {modality.encoder} encoder is configured; "
                              f"add +{modality.encoder}=<option> (`python -m vita_framework.plugins` lists them)")
        options = dict(self.modality_options.get(modality.name, {}))
        options.update({k: request.options[k] for k in modality.request_options if k in request.options})
        context = LoadContext(encoder, options)
        sources = request.items(modality.name)
        cache, keys, cached = self.encoder_cache, [], {}
        if cache is None:
            items = dict(enumerate(modality.load(source, context) for source in sources))
        else:  # a file is keyed by its bytes (a hit is not even decoded), an object in memory by its content
            items = {}
            namespace = f"{modality.name}/{type(encoder).__name__}@{id(encoder):x}"
            for i, source in enumerate(sources):
                key = cache.source_key(namespace, source, options)
                if key is None:
                    items[i] = modality.load(source, context)
                    key = cache.key(namespace, items[i])
                keys.append(key)
            cached = {i: hit for i, key in enumerate(keys) if (hit := cache.get(key)) is not None}
            items.update({i: modality.load(sources[i], context) for i in range(len(sources))
                          if i not in cached and i not in items})
        missing = [items[i] for i in range(len(sources)) if i not in cached]
        encoder_input = modality.prepare(encoder, missing) if missing else None
        fresh: list[int] = []
        if encoder_input is not None:
            fresh = [int(n) for n in encoder.planned_tokens(encoder_input.batch)]
            if modality.projected:
                fresh = [int(self.projector.tokens_out(n)) for n in fresh]
        if not cached:
            return _Staged(modality, encoder, encoder_input, fresh, list(encoder_input.segments), keys)
        segments, planned, fresh_segments, start = [], [], iter(encoder_input.segments if missing else []), 0
        for i in range(len(sources)):
            if i in cached:
                segments.append(cached[i].segments)
                planned += cached[i].planned
            else:
                n = next(fresh_segments)
                segments.append(n)
                planned += fresh[start:start + n]
                start += n
        return _Staged(modality, encoder, encoder_input, planned, segments, keys, cached)

    def _encode(self, staged: _Staged) -> list[Any]:
        features: list[Any] = []
        if staged.encoder_input is not None:
            features = staged.encoder.encode(staged.encoder_input.batch)
            if staged.modality.projected and features:
                import torch

                with torch.inference_mode():
                    features = list(self.projector(torch.stack(features)).unbind(0))
            features = list(features)
        if self.encoder_cache is None:
            return features
        from .encoder_cache import CachedItem

        out, fresh, row = [], iter(features), 0
        for i, n in enumerate(staged.segments):
            if i in staged.cached:
                out += staged.cached[i].features
            else:
                mine = [next(fresh) for _ in range(n)]
                self.encoder_cache.put(staged.keys[i], CachedItem(
                    n, tuple(staged.planned[row:row + n]), tuple(f.detach().clone() for f in mine)))
                out += mine
            row += n
        return out

    @staticmethod
    def _in_order(items: list[tuple[str, int]], staged: dict[str, _Staged], values: dict[str, list[Any]]
                  ) -> tuple[list[Any], list[int]]:
        """A stream's per-segment ``values`` in prompt order, with group ids (k > 0 per grouped item, else 0)."""
        out, groups, group = [], [], 0
        for name, index in items:
            segments = staged[name].segments
            start = sum(segments[:index])
            out += values[name][start:start + segments[index]]
            if staged[name].modality.grouped:
                group += 1
                groups += [group] * segments[index]
            else:
                groups += [0] * segments[index]
        return out, groups

    @staticmethod
    def _owners(items: list[tuple[str, int]], staged: dict[str, _Staged]) -> list[str]:
        return [name for name, index in items for _ in range(staged[name].segments[index])]

    def _check_budget(self, text_tokens: int, rows: dict[str, list[int]], order: dict[str, list[tuple[str, int]]],
                      staged: dict[str, _Staged]) -> None:
        """Refuse a request whose spliced length exceeds the context (the reference silently truncates at
        tokenizer_model_max_length, which can cut through an image)."""
        if self.max_length is None:
            return
        by_modality = dict.fromkeys(self.modalities.names(), 0)
        for stream, items in order.items():
            for name, count in zip(self._owners(items, staged), rows[stream]):
                by_modality[name] += count
        total = text_tokens + sum(by_modality.values())
        if total <= self.max_length:
            return
        parts = ", ".join(f"{name} {n}" for name, n in by_modality.items())
        hints = [self.modalities.get(n).budget_hint for n, count in by_modality.items()
                 if count and self.modalities.get(n).budget_hint]
        raise InputError(f"the request needs {total} positions (text {text_tokens}, {parts}) but the model allows "
                         f"{self.max_length}; use {' or '.join(hints) or 'a shorter prompt'}")
