"""The server's engine for an LLM that batches by itself (``llm=vllm``, whose ``llm.engine=auto`` is vLLM's
async engine in a server: continuous batching and a paged KV cache).

The framework's :class:`~vita_framework.serve.scheduler.Scheduler` gathers requests into left-padded batches
that run to their end; an engine with continuous batching does better on its own: a request joins the running
batch at the next step and leaves it when done. So here every request goes to the LLM as soon as it is
prepared: its media are encoded and its prompt tokenised on one preparation thread (the encoders run one
request at a time, as in the scheduler), its embeddings fused at batch size 1, then
:meth:`~vita_framework.contracts.ContinuousBatchingLLM.agenerate` streams its ids. Each request keeps the
scheduler's per-row contract (:class:`~vita_framework.row_control.RowTracker`: its own token limit, stop
strings, and the client's cancel event, checked at every step; leaving early aborts the request in the engine),
and the same events reach the HTTP handler, so the endpoints, errors and metrics are those of the local engine.

Back-pressure: at most ``max_queue`` requests are in flight (waiting for preparation or generating); beyond
that :meth:`ContinuousEngine.submit` raises :class:`~vita_framework.serve.scheduler.QueueFull` (429).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from ..errors import VitaError
from ..row_control import RowControl, RowTracker
from .protocol import APIError
from .scheduler import Job, Outcome, QueueFull, prepare_job

log = logging.getLogger(__name__)


def fuse_request(pipeline: Any, prepared: Any) -> Any:
    """``fusion.fuse`` of one prepared request at batch size 1 (no padding): what ``agenerate`` takes."""
    import torch

    ids = torch.tensor([prepared.input_ids], dtype=torch.long, device=pipeline.llm.device)
    features = {s: prepared.features.get(s, []) for s in pipeline.placeholder_ids}
    with torch.inference_mode():
        return pipeline.fusion.fuse(ids, torch.ones_like(ids), pipeline.llm.embed, features, pipeline.placeholder_ids)


class ContinuousEngine:
    """Drop-in for :class:`~vita_framework.serve.scheduler.Scheduler` when ``pipeline.llm.continuous_batching``."""

    def __init__(self, pipeline: Any, *, max_queue: int = 64, metrics: Any = None) -> None:
        self.pipeline, self.metrics, self.max_queue = pipeline, metrics, int(max_queue)
        defaults = pipeline.llm.generation_config(pipeline.generation_options)
        self.default_max_tokens = int(getattr(defaults, "max_new_tokens", None) or 20)
        self.context_length = pipeline.llm.context_length
        self._prepare: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task] = set()
        self._in_flight = self._waiting = self._generating = 0

    # -- the Scheduler's interface -----------------------------------------------------------------------
    def start(self) -> None:
        if self._prepare is None:
            self._prepare = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vita-serve-prepare")

    def stop(self, timeout: float = 10.0) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._prepare is not None:
            self._prepare.shutdown(wait=False, cancel_futures=True)
            self._prepare = None

    @property
    def alive(self) -> bool:
        return self._prepare is not None

    def queue_length(self) -> int:
        """Requests waiting for their preparation (the engine's own queue is vLLM's)."""
        return self._waiting

    def submit(self, job: Job) -> None:
        """Called on the job's event loop (the HTTP handler's)."""
        if self._in_flight >= self.max_queue:
            raise QueueFull(1)
        self._in_flight += 1
        self._waiting += 1
        task = job.loop.create_task(self._serve(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one request -----------------------------------------------------------------------------------
    async def _serve(self, job: Job) -> None:
        running = False
        try:
            loop = asyncio.get_running_loop()
            try:
                ready = await loop.run_in_executor(self._prepare, self._prepare_one, job)
            finally:
                self._waiting -= 1
            if ready is None:
                return
            self._generating += 1
            running = True
            if self.metrics is not None:  # rows in the engine's batch as this one joins it
                self.metrics.running.inc()
                self.metrics.batch_size.observe(self._generating)
            await self._generate(job, *ready)
        except asyncio.CancelledError:
            job.cancel.set()
            raise
        except VitaError as exc:
            log.warning("generation failed: %s", exc)
            job.post("error", APIError(500, str(exc)))
        except Exception:
            log.exception("generation failed")
            job.post("error", APIError(500, "internal server error"))
        finally:
            self._in_flight -= 1
            if running:
                self._generating -= 1
                if self.metrics is not None:
                    self.metrics.running.dec()

    def _prepare_one(self, job: Job) -> tuple[Any, Any, int] | None:
        prepared = prepare_job(self.pipeline, job, self.default_max_tokens, self.context_length)
        if prepared is None:
            return None
        prepared, limit = prepared
        return prepared, fuse_request(self.pipeline, prepared), limit

    async def _generate(self, job: Job, prepared: Any, fused: Any, limit: int) -> None:
        import torch

        pipeline = self.pipeline
        options = {**pipeline.generation_options, **job.params.generation(), "max_new_tokens": limit}
        config = pipeline.llm.generation_config(options)
        control = RowControl(max_new_tokens=limit, stop=job.params.stop, cancel=job.cancel,
                             on_text=lambda piece: job.post("text", piece))
        tracker = RowTracker(pipeline.llm.tokenizer, [control], [limit], getattr(config, "eos_token_id", None) or [])
        tracker.put(None)  # the streamer protocol's prompt
        reason = None
        stream = pipeline.llm.agenerate(fused, config, seed=job.params.seed)
        try:
            async for delta in stream:
                for token in delta.token_ids:
                    tracker.put(torch.tensor([token]))
                reason = delta.finish_reason if delta.finished else None
                if tracker.is_set() or delta.finished:
                    break
        finally:
            await stream.aclose()  # ended early (a stop string, the client gone): vLLM aborts the request
        if control.finish_reason is None:
            tracker.end()
            if reason == "stop":  # the engine stopped on an eos or stop id it did not return
                control.finish_reason = "stop"
        job.post("done", Outcome(control.text, control.finish_reason or "stop", len(control.ids),
                                 control.first_token_at))


def make_engine(pipeline: Any, *, max_batch_size: int, batch_wait_ms: float, max_queue: int,
                metrics: Any = None) -> Any:
    """The engine a server (or the demo) runs ``pipeline`` on: :class:`ContinuousEngine` when its LLM batches by
    itself (``llm=vllm`` in a server: ``llm.engine=auto`` -> async), else the framework's dynamic batcher
    (:class:`~vita_framework.serve.scheduler.Scheduler`)."""
    if getattr(pipeline.llm, "continuous_batching", False):
        return ContinuousEngine(pipeline, max_queue=max_queue, metrics=metrics)
    from .scheduler import Scheduler

    return Scheduler(pipeline, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms, max_queue=max_queue,
                     metrics=metrics)
