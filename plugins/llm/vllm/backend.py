"""The ``llm=vllm`` backbone: vLLM generates from the pipeline's fused embeddings.

Encoders, projector and fusion run in this process as with every other backbone; the fused ``inputs_embeds``
of each row (left padding removed) go to vLLM as a ``prompt_embeds`` prompt. vLLM loads the LLM from a
directory prepared from the same bundle (:mod:`.model_dir`: links, no copy); this process keeps only the
embedding table the fusion needs.

Two engines:

- ``llm.engine=offline`` (default; CLI and batch mode): vLLM's ``LLMEngine``, stepped by the calling thread, so
  a streamer sees every step and ``cancel`` aborts the requests within one step. One call at a time.
- ``llm.engine=async`` (a server): vLLM's ``AsyncLLM`` on an event loop this backbone owns. Concurrent
  :meth:`VLLMBackbone.agenerate` calls (from any event loop) are scheduled together by vLLM's continuous
  batching; the synchronous :meth:`VLLMBackbone.generate` works too.

Generation options keep the transformers backend's meaning (:func:`.sampling.sampling_params`); VITA's
repetition penalty runs as our own vLLM logits processor over generated tokens only (:mod:`.logits`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .async_api import REQUEST_IDS, AsyncGeneration, StepDelta
from .errors import engine_error
from .sampling import dense_logprobs, row_result, sampling_params

__all__ = ["StepDelta", "VLLMBackbone", "VLLMOutput"]


@dataclass
class VLLMOutput:
    """What :meth:`VLLMBackbone.generate` returns, shaped as transformers' ``generate`` output: ``sequences``
    ``[B, steps]`` (rows that stopped early padded with the pad id) and, when asked, ``scores``: one ``[B, V]``
    tensor per step holding vLLM's processed log-probabilities (``-inf`` for rows already finished)."""

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    finish_reasons: list[str | None] = field(default_factory=list)


class VLLMBackbone(AsyncGeneration):
    """Tokenizer + embedding table here, the LLM in vLLM. Satisfies ``LLMBackbone``."""

    #: a server may hand concurrent requests straight to :meth:`agenerate` (vLLM batches them itself)
    continuous_batching: bool

    def __init__(self, *, tokenizer: Any, embed_weight: torch.Tensor, model_dir: Path, engine_kwargs: dict[str, Any],
                 engine: str, generation_defaults: dict[str, Any], bundle: Any, llm_exclude: tuple[str, ...],
                 vllm_dtype: torch.dtype) -> None:
        self.tokenizer = tokenizer
        self.embed_weight = embed_weight
        self.hidden_size = int(embed_weight.shape[1])
        self.model_dir = model_dir
        self.engine_kwargs = engine_kwargs
        self.engine = engine
        self.continuous_batching = engine == "async"
        self.generation_defaults = generation_defaults
        self.vocab_size = int(embed_weight.shape[0])
        self._bundle = bundle
        self._llm_exclude = llm_exclude
        self._vllm_dtype = vllm_dtype
        self._lock = threading.Lock()
        self._offline: Any = None
        self._async: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_model_len: int | None = None
        self._start()

    # -- engines ---------------------------------------------------------------------------------------
    def _start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

        try:
            if self.engine == "async":
                from vllm.v1.engine.async_llm import AsyncLLM

                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="vita-vllm-loop", daemon=True).start()
                self._async = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_kwargs))
                self._max_model_len = int(self._async.model_config.max_model_len)
            else:
                from vllm.v1.engine.llm_engine import LLMEngine

                self._offline = LLMEngine.from_engine_args(EngineArgs(**self.engine_kwargs))
                self._max_model_len = int(self._offline.model_config.max_model_len)
        except (ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
            raise engine_error(exc, self.engine_kwargs) from None
        weakref.finalize(self, _shutdown, self._offline, self._async, self._loop)

    def close(self) -> None:
        """Stop vLLM's engine (its processes, when it runs in others). The backbone cannot generate after it."""
        _shutdown(self._offline, self._async, self._loop)
        self._offline = self._async = None

    # -- LLMBackbone ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.embed_weight.device

    @property
    def context_length(self) -> int | None:
        return self._max_model_len

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(input_ids.to(self.device), self.embed_weight)

    def checkpoint_state(self) -> dict[str, Any]:
        """The LLM's tensors as the bundle holds them (embedding rows cut to the tokenizer), read on demand."""
        state = self._bundle.load("", exclude=self._llm_exclude)
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            if key in state and state[key].shape[0] > self.vocab_size:
                state[key] = state[key][:self.vocab_size]
        return state

    def generation_config(self, options: dict[str, Any]) -> Any:
        """The same merge as the transformers backend: a transformers ``GenerationConfig``."""
        from vita_framework.causal_lm import CausalLMBackbone

        return CausalLMBackbone.generation_config(self, options)  # reads only .generation_defaults, .tokenizer

    def prompts(self, fused: Any) -> list[dict[str, Any]]:
        """One vLLM ``prompt_embeds`` prompt per row, left padding removed (on CPU, vLLM's dtype)."""
        embeds = fused.inputs_embeds.detach()
        mask = fused.attention_mask
        rows = []
        for row in range(embeds.shape[0]):
            keep = mask[row].bool() if mask is not None else slice(None)
            rows.append({"prompt_embeds": embeds[row][keep].to(device="cpu", dtype=self._vllm_dtype).contiguous()})
        return rows

    def generate(self, fused: Any, generation_config: Any, *, streamer: Any = None, seed: int | None = None,
                 cancel: threading.Event | None = None) -> VLLMOutput:
        """Every row as its own vLLM request (row ``i`` sampled with ``seed + i``); the streamer gets row 0's
        ids step by step; a set ``cancel`` aborts the requests within one step, rows keeping what they have."""
        prompts = self.prompts(fused)
        params = [sampling_params(generation_config, seed=None if seed is None else seed + row)
                  for row in range(len(prompts))]
        if streamer is not None:
            streamer.put(torch.empty((1, 0), dtype=torch.long))  # the prompt, as transformers puts it first
        try:
            if self._async is not None:
                future = asyncio.run_coroutine_threadsafe(self._collect(prompts, params, streamer, cancel), self._loop)
                rows = future.result()
            else:
                with self._lock:
                    rows = self._collect_offline(prompts, params, streamer, cancel)
        finally:
            if streamer is not None:
                streamer.end()
        pad = generation_config.pad_token_id if generation_config.pad_token_id is not None else 0
        return self._assemble(rows, pad, bool(params[0].logprobs is not None))

    # -- running requests -----------------------------------------------------------------------------
    def _collect_offline(self, prompts: list[dict[str, Any]], params: list[Any], streamer: Any,
                         cancel: threading.Event | None) -> list[tuple[list[int], list | None, str | None]]:
        engine = self._offline
        if engine is None:
            raise RuntimeError("the vLLM engine was closed")
        ids = [f"vita-{next(REQUEST_IDS)}" for _ in prompts]
        for rid, prompt, param in zip(ids, prompts, params):
            engine.add_request(rid, prompt, param)
        latest: dict[str, Any] = {}
        sent = 0
        try:
            while engine.has_unfinished_requests():
                if cancel is not None and cancel.is_set():
                    engine.abort_request([r for r in ids if r not in latest or not latest[r].finished])
                    break
                for out in engine.step():
                    latest[out.request_id] = out
                if streamer is not None and ids[0] in latest:
                    got = latest[ids[0]].outputs[0].token_ids
                    if len(got) > sent:
                        streamer.put(torch.tensor(list(got[sent:]), dtype=torch.long))
                        sent = len(got)
        except BaseException:
            engine.abort_request([r for r in ids if r not in latest or not latest[r].finished])
            raise
        return [row_result(latest.get(rid)) for rid in ids]

    def _assemble(self, rows: list[tuple[list[int], list | None, str | None]], pad: int, scores: bool) -> VLLMOutput:
        steps = max((len(ids) for ids, _, _ in rows), default=0)
        sequences = torch.full((len(rows), steps), pad, dtype=torch.long)
        for r, (ids, _, _) in enumerate(rows):
            sequences[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        out_scores = None
        if scores:
            dense = torch.full((len(rows), steps, self.vocab_size), float("-inf"))
            for r, (_, logprobs, _) in enumerate(rows):
                if logprobs:
                    dense[r, :len(logprobs)] = dense_logprobs(logprobs, self.vocab_size)
            out_scores = tuple(dense[:, s] for s in range(steps))
        return VLLMOutput(sequences, out_scores, [reason for _, _, reason in rows])


def _shutdown(offline: Any, async_engine: Any, loop: asyncio.AbstractEventLoop | None) -> None:
    for engine in (offline, async_engine):
        if engine is None:
            continue
        try:
            if hasattr(engine, "shutdown"):
                engine.shutdown()
            elif hasattr(getattr(engine, "engine_core", None), "shutdown"):
                engine.engine_core.shutdown()
        except Exception:
            pass
    if loop is not None and loop.is_running():
        loop.call_soon_threadsafe(loop.stop)


