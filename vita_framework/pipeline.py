"""The pipeline: the flow of design.md §1 and nothing else.

A request is prepared (:mod:`vita_framework.preparation`: load, preprocess, size, encode, tokenise), padded
with its batch-mates, fused and generated from. A request without images runs no vision encoder; nothing is
encoded as a dummy.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .lazy import materialise
from .modalities import ModalityTable
from .preparation import RequestPreparer
from .prompt import get_template
from .request import GenerationResult, PreparedRequest, Request, RowResult


class _Clock:
    """A transformers streamer that records the first new token's time and forwards to another streamer."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.start = time.perf_counter()
        self.first: float | None = None
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first puts the prompt (empty for inputs_embeds)
            self._prompt_seen = True
        elif self.first is None:
            self.first = time.perf_counter()
        if self.inner is not None:
            self.inner.put(value)

    def end(self) -> None:
        if self.inner is not None:
            self.inner.end()


class Pipeline:
    """Built components wired in the one-way flow. Build it with :func:`vita_framework.build`.

    ``encoders`` maps each configured encoder kind (``vision``, ``audio``, a plugin's own) to its component;
    ``pipeline.vision`` and friends read from it (None when that kind is not configured).
    """

    def __init__(self, *, llm: Any, fusion: Any, modalities: ModalityTable, encoders: dict[str, Any] | None = None,
                 projector: Any = None, template: str = "qwen2p5_instruct",
                 generation: dict[str, Any] | None = None, max_length: int | None = None,
                 modality_options: dict[str, dict[str, Any]] | None = None,
                 reused_components: list[str] | None = None, claims: dict[str, list[str]] | None = None,
                 encoder_cache_mb: float = 0.0, prefix_cache_mb: float = 0.0) -> None:
        self.llm, self.fusion, self.projector, self.modalities = llm, fusion, projector, modalities
        self.encoders = dict(encoders or {})
        self.template = get_template(template)
        self.generation_options = dict(generation or {})
        self.reused_components = list(reused_components or [])  # taken from a sweep's component cache
        self.claims = dict(claims or {})  # checkpoint prefixes each configured kind reads (saving writes there)
        self.preparer = RequestPreparer(modalities=modalities, encoders=self.encoders, projector=projector,
                                        fusion=fusion, tokenizer=llm.tokenizer, template=self.template,
                                        max_length=max_length, modality_options=modality_options)
        self.set_encoder_cache(encoder_cache_mb)
        self.set_prefix_cache(prefix_cache_mb)

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not attributes: an encoder kind reads as its component or None
        encoders = self.__dict__.get("encoders", {})
        modalities = self.__dict__.get("modalities")
        if name in encoders:
            return materialise(encoders[name])  # a lazy encoder is built when asked for by name
        if modalities is not None and name in modalities.encoder_kinds():
            return None
        raise AttributeError(f"'Pipeline' has no attribute '{name}'")

    @property
    def max_length(self) -> int | None:
        """Longest spliced sequence allowed (the LLM's context, or the bundle's tokenizer_model_max_length)."""
        return self.preparer.max_length

    @max_length.setter
    def max_length(self, value: int | None) -> None:
        self.preparer.max_length = value

    @property
    def encoder_cache(self) -> Any:
        """The :class:`~vita_framework.encoder_cache.EncoderCache` the front half consults (None: off)."""
        return self.preparer.encoder_cache

    def set_encoder_cache(self, max_mb: float | None) -> None:
        """Cache encoded items by content hash (``max_mb`` MB; 0/None: off): a repeated image is encoded once."""
        from .encoder_cache import EncoderCache

        self.preparer.encoder_cache = EncoderCache(max_mb) if max_mb else None

    def set_prefix_cache(self, max_mb: float | None) -> None:
        """Share LLM states of common prompt prefixes (``max_mb`` MB; 0/None: off): :mod:`.prefix_cache`."""
        from .prefix_cache import PrefixStore

        self.prefix_store = PrefixStore(max_mb) if max_mb else None

    @property
    def placeholder_ids(self) -> dict[str, int]:
        """Placeholder stream -> id, as ``fusion.fuse`` receives them."""
        return self.modalities.streams()

    def prepare(self, request: Request) -> PreparedRequest:
        """Encode a request's inputs and tokenise its prompt (see :mod:`vita_framework.preparation`)."""
        return self.preparer.prepare(request)

    def generate(self, prompt: str | Request | None = None, *, streamer: Any = None, output_scores: bool = False,
                 seed: int | None = None, generation: dict[str, Any] | None = None,
                 cancel: threading.Event | None = None, **fields: Any) -> GenerationResult:
        """Answer one request: ``generate("What is it?", images=["a.png"])``.

        ``fields`` are request fields (``images``, ``audios``, ``videos``, ``video_fps``, a plugin modality's key)
        and, for backward compatibility, generation options (``max_new_tokens=...``); ``generation`` sets the
        latter explicitly. ``seed`` makes sampling repeatable for this call; None draws fresh randomness.
        Setting ``cancel`` (from another thread, e.g. a server's) stops generation within one decode step; the
        result holds what was generated so far (rows end early, no error).
        """
        request, options = self._request(prompt, fields, generation)
        return self.run([request], streamer=streamer, output_scores=output_scores, seed=seed, cancel=cancel,
                        **options)

    def _request(self, prompt: Any, fields: dict[str, Any], generation: dict[str, Any] | None
                 ) -> tuple[Request, dict[str, Any]]:
        """Split keyword fields into request fields (modality table) and generation options."""
        keys = {*self.modalities.request_keys(), *self.modalities.request_options(), *self.modalities.names()}
        options = dict(generation or {})
        options.update({k: v for k, v in fields.items() if k not in keys})
        request_fields = {k: v for k, v in fields.items() if k in keys}
        if isinstance(prompt, Request):
            return prompt, options
        return Request(prompt, **request_fields), options

    def generate_batch(self, requests: list[Request | dict[str, Any]], *, batch_size: int = 8,
                       progress: bool = False, output_scores: bool = False, seed: int | None = None,
                       cancel: threading.Event | None = None, **generation: Any) -> GenerationResult:
        """Answer many requests, ``batch_size`` at a time (left-padded; each row stops on its own).

        A row whose inputs fail (missing file, marker mismatch, ...) gets its ``error`` set and no answer;
        the other rows still run. Rows come back in input order. Once ``cancel`` is set, the running batch
        ends within one decode step (its rows end early) and later rows get the error ``cancelled``.
        """
        from .errors import VitaError
        from .requests_io import parse_request

        items = [r if isinstance(r, Request) else parse_request(r, self.modalities) for r in requests]
        rows: list[RowResult | None] = [None] * len(items)
        timings: dict[str, float] = {}
        scores = []
        bar = _progress(len(items), enabled=progress)
        for start in range(0, len(items), batch_size):
            chunk = list(range(start, min(start + batch_size, len(items))))
            ready = []
            t_start = time.perf_counter()
            for index in chunk:
                if cancel is not None and cancel.is_set():
                    rows[index] = RowResult(items[index].prompt or "", "", [], {}, 0, error="cancelled",
                                            id=items[index].id)
                    continue
                try:
                    ready.append((index, self.prepare(items[index])))
                except VitaError as exc:
                    rows[index] = RowResult(items[index].prompt or "", "", [], {}, 0, error=str(exc),
                                            id=items[index].id)
            if ready:
                result = self._generate_prepared([p for _, p in ready], t_start=t_start, output_scores=output_scores,
                                                 seed=seed, cancel=cancel, **generation)
                for (index, _), row in zip(ready, result.rows):
                    rows[index] = row
                for key, value in result.timings.items():
                    timings[key] = timings.get(key, 0.0) + value
                if result.scores is not None:
                    scores.append(result.scores)
            bar.update(len(chunk))
        bar.close()
        return GenerationResult([r for r in rows if r is not None], timings, scores or None)

    def stream(self, prompt: str | Request | None = None, *, cancel: threading.Event | None = None, **kwargs: Any):
        """Yield the answer's text pieces as they are generated, then the final :class:`GenerationResult`.

        Abandoning the iterator (``break``, ``close()``, garbage collection) sets ``cancel`` (a fresh event
        unless given) and generation stops within one decode step (:mod:`vita_framework.streaming`).
        """
        from .streaming import stream_pieces

        run = {k: kwargs.pop(k) for k in ("seed", "output_scores") if k in kwargs}
        generation = kwargs.pop("generation", None)
        request, options = self._request(prompt, kwargs, generation)
        kwargs = {**run, **options}
        t_start = time.perf_counter()
        prepared = self.prepare(request)  # input errors surface here, before the thread starts

        def generate(**streaming: Any) -> GenerationResult:
            return self._generate_prepared([prepared], t_start=t_start, **streaming, **kwargs)

        yield from stream_pieces(generate, self.llm.tokenizer, cancel if cancel is not None else threading.Event())

    def run(self, requests: list[Request], *, streamer: Any = None, output_scores: bool = False,
            seed: int | None = None, cancel: threading.Event | None = None, **generation: Any) -> GenerationResult:
        t_start = time.perf_counter()
        return self._generate_prepared([self.prepare(r) for r in requests], t_start=t_start, streamer=streamer,
                                       output_scores=output_scores, seed=seed, cancel=cancel, **generation)

    def generate_rows(self, prepared: list[PreparedRequest], controls: list[Any] | None = None, *,
                      seed: int | None = None, t_start: float | None = None, **generation: Any) -> GenerationResult:
        """Generate for a left-padded batch of prepared requests, each row with its own
        :class:`~vita_framework.row_control.RowControl`: token limit, stop strings, cancel event and text
        callback. ``generation`` (sampling, ...) applies to every row; rows needing different sampling go in
        separate calls. Each row's answer equals the same request generated alone (greedy). The controls
        receive each row's outcome (``finish_reason``, ``first_token_at``, ids, text); the rows returned hold
        the same ids and text."""
        from .row_control import RowControl, RowTracker

        controls = list(controls) if controls is not None else [RowControl() for _ in prepared]
        if len(controls) != len(prepared):
            raise ValueError(f"{len(prepared)} prepared requests but {len(controls)} row controls")
        options = {**self.generation_options, **generation}
        config = self.llm.generation_config(options)
        limits = [int(c.max_new_tokens or config.max_new_tokens or 20) for c in controls]
        options["max_new_tokens"] = max(limits)
        tracker = RowTracker(self.llm.tokenizer, controls, limits, config.eos_token_id or [])
        result = self._generate_prepared(prepared, t_start=time.perf_counter() if t_start is None else t_start,
                                         streamer=tracker, seed=seed, cancel=tracker, **options)
        for row, control in zip(result.rows, controls):
            row.generated_ids, row.tokens_out, row.text = list(control.ids), len(control.ids), control.text
        return result

    def _generate_prepared(self, prepared: list[PreparedRequest], *, t_start: float, streamer: Any = None,
                           output_scores: bool = False, seed: int | None = None,
                           cancel: threading.Event | None = None, **generation: Any) -> GenerationResult:
        """Pad, fuse and generate for already encoded requests; ``t_start`` is when their encoding began.
        A set ``cancel`` ends generation within one step: rows keep the tokens made so far."""
        import torch

        t0 = t_start
        t_encode = time.perf_counter()
        width = max(len(p.input_ids) for p in prepared)
        pad = self.llm.tokenizer.pad_token_id or 0
        ids = torch.full((len(prepared), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prepared), width), dtype=torch.long)
        for row, p in enumerate(prepared):  # left padding: every row ends at the last slot
            ids[row, width - len(p.input_ids):] = torch.tensor(p.input_ids, dtype=torch.long)
            mask[row, width - len(p.input_ids):] = 1
        placeholder_ids = self.placeholder_ids
        features = {s: [f for p in prepared for f in p.features.get(s, [])] for s in placeholder_ids}
        device = self.llm.device
        with torch.inference_mode():
            fused = self.fusion.fuse(ids.to(device), mask.to(device), self.llm.embed, features, placeholder_ids)
        if self.prefix_store is not None:
            fused.prefix = self.prefix_store.plan_rows([p.input_ids for p in prepared])
        options = {**self.generation_options, **generation}
        if output_scores:
            options["output_scores"] = True
        gen_config = self.llm.generation_config(options)
        clock = _Clock(streamer)
        t_gen = time.perf_counter()
        clock.start = t_gen
        cancelling = {"cancel": cancel} if cancel is not None else {}  # LLM plugins written before `cancel`
        out = self.llm.generate(fused, gen_config, streamer=clock, seed=seed, **cancelling)
        t_end = time.perf_counter()
        sequences = out.sequences.cpu()
        eos = set(gen_config.eos_token_id or [])
        rows = []
        for row, p in enumerate(prepared):
            new = sequences[row].tolist()
            n = _length_until_eos(new, eos, gen_config.pad_token_id)
            new = new[:n]
            text = self.llm.tokenizer.decode(new, skip_special_tokens=True).strip()
            rows.append(RowResult(p.question, text, new, p.tokens, len(new), id=p.id))
        first = clock.first or t_end
        n_out = max(r.tokens_out for r in rows)
        timings = {
            "encode_s": t_encode - t0, "fuse_s": t_gen - t_encode, "generate_s": t_end - t_gen,
            "time_to_first_token_s": first - t0,
            "decode_tokens_per_s": (n_out - 1) / (t_end - first) if n_out > 1 and t_end > first else 0.0,
            "total_s": t_end - t0,
        }
        scores = None
        if output_scores and out.scores is not None:
            scores = torch.stack(list(out.scores), dim=1).float().cpu()
        return GenerationResult(rows, timings, scores)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, *, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="requests", unit="req")


def _length_until_eos(ids: list[int], eos: set[int], pad: int | None) -> int:
    """New tokens up to and including the first eos; later slots are padding of a finished row."""
    for i, token in enumerate(ids):
        if token in eos:
            return i + 1
    return len(ids)
