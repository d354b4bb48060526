"""The asynchronous side of the ``llm=vllm`` backbone, mixed into :class:`.backend.VLLMBackbone`: what a server
calls (:meth:`AsyncGeneration.agenerate`), and the synchronous API's path on ``llm.engine=async``."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import torch

from .sampling import dense_logprobs, row_result, sampling_params

REQUEST_IDS = itertools.count()


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


class AsyncGeneration:
    """``agenerate`` and the async engine's batch runner; the backbone provides the engines and ``prompts``."""

    _async: Any
    _offline: Any
    _loop: asyncio.AbstractEventLoop | None
    _lock: threading.Lock
    vocab_size: int

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
        params = sampling_params(generation_config, seed=seed, output_scores=output_scores, delta=True)
        queue: asyncio.Queue = asyncio.Queue()
        caller = asyncio.get_running_loop()

        def put(item: tuple) -> None:
            try:
                caller.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the caller's loop is closed: nobody is listening any more
                pass

        if self._async is not None:
            rid = request_id or f"vita-{next(REQUEST_IDS)}"

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
                    yield StepDelta([], True, reason, dense_logprobs(logprobs, self.vocab_size) if logprobs else None)
                    return
                else:
                    logprobs = dense_logprobs(item.logprobs, self.vocab_size) if item.logprobs else None
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

    async def _collect(self, prompts: list[dict[str, Any]], params: list[Any], streamer: Any,
                       cancel: threading.Event | None) -> list[tuple[list[int], list | None, str | None]]:
        latest: dict[int, Any] = {}
        sent = 0

        async def one(index: int) -> None:
            nonlocal sent
            async for out in self._async.generate(prompts[index], params[index], f"vita-{next(REQUEST_IDS)}"):
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
        return [row_result(latest.get(i)) for i in range(len(prompts))]


class _QueueStreamer:
    """A streamer (put/end) that forwards generated ids to :meth:`VLLMBackbone.agenerate`'s queue."""

    def __init__(self, put: Any) -> None:
        self._put = put

    def put(self, value: torch.Tensor) -> None:
        if value.numel():
            self._put(("tokens", value.flatten().tolist(), False))

    def end(self) -> None:
        pass
