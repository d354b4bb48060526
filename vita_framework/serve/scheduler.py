"""Dynamic batching: concurrent requests gathered into left-padded batches and run on one engine thread.

The engine thread takes the first waiting request, then keeps gathering until ``max_batch_size`` requests are
in hand or ``batch_wait_ms`` have passed, but waits only while fewer requests are in hand than were active
around the last ``RECENT`` batches (a batch's rows plus the requests that queued while it ran): when requests
come one at a time (a single client's conversation), nothing waits for batch-mates that are not coming, and
when clients resubmit as their answers end, the next batch waits for them instead of splitting into cohorts. Each
request is prepared (:meth:`Pipeline.prepare`: its media loaded and encoded, through the encoder cache), then
the batch runs as one generation per group of requests that sample alike (greedy requests all together;
sampling ones by temperature and top-p; a seeded sampling request alone, so its draw is the one it gets alone),
each row with its own token limit, stop strings and cancel event (:meth:`Pipeline.generate_rows`). Rows of a
left-padded batch are independent, so a greedy answer is the one the request gets alone.

Back-pressure: at most ``max_queue`` requests wait; beyond that :meth:`Scheduler.submit` raises
:class:`QueueFull` (the app answers 429 with ``Retry-After``). A job talks to its HTTP handler through an
asyncio queue of events: ``started`` (its prompt tokens), ``text`` pieces, then ``done`` or ``error``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, FusionError, InputError, VitaError
from ..row_control import RowControl
from .protocol import APIError, ChatParams, MediaStore

log = logging.getLogger(__name__)
ENGINE_THREAD_NAME = "vita-serve-engine"
#: a batch waits for batch-mates only while it is smaller than the largest of this many previous batches
RECENT = 8


class QueueFull(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the server's queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class Outcome:
    text: str
    finish_reason: str
    completion_tokens: int
    first_token_at: float | None


@dataclass
class Job:
    request: Any  # a ChatRequest
    params: ChatParams
    media: MediaStore
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.perf_counter)
    tokens: dict[str, int] = field(default_factory=dict)  # the prompt's positions by modality, once prepared

    def post(self, kind: str, payload: Any = None) -> None:
        """Hand an event to the job's handler (thread-safe; dropped once its loop is closed)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:
            pass

    def group(self, sampling_by_default: bool) -> tuple:
        """Requests with equal groups can share one generation."""
        options = self.params.generation()
        sampling = options.get("do_sample", sampling_by_default)
        if not sampling:
            return ("greedy",)
        if self.params.seed is not None:
            return ("seeded", id(self))
        return ("sampling", options.get("temperature"), options.get("top_p"))


class Scheduler:
    def __init__(self, pipeline: Any, *, max_batch_size: int = 8, batch_wait_ms: float = 10.0, max_queue: int = 64,
                 metrics: Any = None) -> None:
        self.pipeline = pipeline
        self.max_batch_size, self.batch_wait_s = int(max_batch_size), float(batch_wait_ms) / 1000.0
        self.metrics = metrics
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=int(max_queue))
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._batch_s = 1.0  # a running mean of batch durations, for Retry-After
        self._recent: collections.deque[int] = collections.deque([1], maxlen=RECENT)
        defaults = pipeline.llm.generation_config(pipeline.generation_options)
        self.default_max_tokens = int(defaults.max_new_tokens or 20)
        self.sampling_by_default = bool(pipeline.generation_options.get("do_sample", defaults.do_sample))
        self.context_length = pipeline.llm.context_length

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=ENGINE_THREAD_NAME, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def queue_length(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(max(1, math.ceil(self._batch_s))) from None

    # -- the engine thread -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch, expected = [first], max(self._recent)
            deadline = time.perf_counter() + self.batch_wait_s
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.perf_counter() if len(batch) < expected else 0.0
                try:
                    batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            t0 = time.perf_counter()
            try:
                self._run(batch)
            except BaseException:  # never let the engine die: every job of the batch gets an error
                log.exception("the engine failed on a batch of %d", len(batch))
                for job in batch:
                    job.post("error", APIError(500, "internal server error"))
            self._batch_s = 0.8 * self._batch_s + 0.2 * (time.perf_counter() - t0)
            # the clients active: this batch's, plus those that queued while it ran (they will be resubmitting
            # together); remembering only the batch size would let two half-size cohorts alternate for ever
            self._recent.append(min(self.max_batch_size, len(batch) + self._queue.qsize()))

    def _run(self, batch: list[Job]) -> None:
        ready: list[tuple[Job, Any, int]] = []
        for job in batch:
            prepared = prepare_job(self.pipeline, job, self.default_max_tokens, self.context_length)
            if prepared is not None:
                ready.append((job, *prepared))
        groups: dict[tuple, list[tuple[Job, Any, int]]] = {}
        for item in ready:
            groups.setdefault(item[0].group(self.sampling_by_default), []).append(item)
        for members in groups.values():
            for start in range(0, len(members), self.max_batch_size):
                self._generate(members[start:start + self.max_batch_size])

    def _generate(self, rows: list[tuple[Job, Any, int]]) -> None:
        jobs = [job for job, _, _ in rows]
        controls = [RowControl(max_new_tokens=limit, stop=job.params.stop, cancel=job.cancel,
                               on_text=lambda piece, job=job: job.post("text", piece)) for job, _, limit in rows]
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(rows))
            self.metrics.running.inc(len(rows))
        try:
            self.pipeline.generate_rows([p for _, p, _ in rows], controls, seed=jobs[0].params.seed,
                                        **jobs[0].params.generation())
        except VitaError as exc:
            log.warning("generation failed: %s", exc)
            for job in jobs:
                job.post("error", APIError(500, str(exc)))
            return
        except Exception:
            log.exception("generation failed")
            for job in jobs:
                job.post("error", APIError(500, "internal server error"))
            return
        finally:
            if self.metrics is not None:
                self.metrics.running.dec(len(rows))
        for job, control in zip(jobs, controls):
            job.post("done", Outcome(control.text, control.finish_reason or "stop", len(control.ids),
                                     control.first_token_at))


def prepare_job(pipeline: Any, job: Job, default_max_tokens: int, context_length: int | None
                ) -> tuple[Any, int] | None:
    """Encode and tokenise a job's request and size its token limit; on bad input the job gets its error event
    (400 naming the part, 499 when its client already left) and None is returned. Posts ``started``."""
    if job.cancel.is_set():  # the client left while waiting
        job.media.cleanup()
        job.post("error", APIError(499, "client disconnected"))
        return None
    try:
        prepared = pipeline.prepare(job.request)
        limit = token_limit(job, prepared.tokens.get("total", len(prepared.input_ids)), default_max_tokens,
                            context_length)
    except (InputError, ConfigError, FusionError) as exc:
        message, param = job.media.explain(str(exc))
        job.post("error", APIError(400, message, param=param or "messages"))
        return None
    except APIError as exc:
        job.post("error", exc)
        return None
    except VitaError as exc:
        log.warning("request failed: %s", exc)
        job.post("error", APIError(500, str(exc)))
        return None
    except Exception:
        log.exception("preparing a request failed")
        job.post("error", APIError(500, "internal server error"))
        return None
    finally:
        job.media.cleanup()
    job.tokens = dict(prepared.tokens)
    job.post("started", job.tokens)
    return prepared, limit


def token_limit(job: Job, prompt: int, default_max_tokens: int, context_length: int | None) -> int:
    """The request's max_tokens (default: the server's max_new_tokens, cut to what the context leaves)."""
    limit = job.params.max_tokens or default_max_tokens
    if context_length is None or prompt + limit <= context_length:
        return limit
    left = context_length - prompt
    if job.params.max_tokens is not None or left < 1:
        raise APIError(400, f"this model's context is {context_length} positions; the messages take "
                            f"{prompt} and max_tokens asks for {limit} more; shorten the messages or lower "
                            "max_tokens", param="max_tokens", code="context_length_exceeded")
    return left
