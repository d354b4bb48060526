"""The demo's chat turns on the server's scheduler: each tab's question becomes a serve :class:`Job`, so questions
from several tabs are batched by the same engine thread as ``python -m vita_framework.serve`` (one implementation
of batching, per-row limits, stop and cancel). No Gradio here: :meth:`DemoChat.respond` yields plain values.

A tab's conversation is sent whole on every turn (rendered by :class:`~vita_framework.serve.chat.ChatRequest`,
as the server renders OpenAI messages); the encoder cache keeps its images from being encoded again. A single
question about uploaded files renders exactly the CLI's prompt, so the demo's greedy answer is the CLI's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from ..errors import VitaError
from ..serve.chat import ChatMessage, ChatRequest, TextPart
from ..serve.continuous import make_engine
from ..serve.protocol import APIError, ChatParams, MediaStore
from ..serve.scheduler import Job, QueueFull
from .options import DemoOptions
from .session import Session, SessionStore, Stats, classify, shown, text_part, user_message

BUSY = "still answering your previous message: wait for it, or press Stop, then ask again"


class DemoJob(Job):
    """A serve job that also notes when the engine finished it (the decode speed is the engine's, not the
    page's: the handler may still be sending earlier pieces when the last token is made)."""

    finished_at: float | None = None

    def post(self, kind: str, payload: Any = None) -> None:
        if kind in ("done", "error"):
            self.finished_at = time.perf_counter()
        super().post(kind, payload)


class BatchRecorder:
    """The pipeline as the scheduler sees it, recording how many rows each request's batch had (by request id)."""

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline
        self.rows: dict[Any, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)

    def generate_rows(self, prepared: list[Any], controls: Any = None, **kwargs: Any) -> Any:
        for p in prepared:
            self.rows[p.id] = len(prepared)
        return self._pipeline.generate_rows(prepared, controls, **kwargs)


class DemoChat:
    """Sessions, the scheduler, and the chat turn; ``start``/``stop`` run the scheduler's engine thread."""

    def __init__(self, pipeline: Any, options: DemoOptions | None = None) -> None:
        self.options = options or DemoOptions()
        self.pipeline = pipeline
        pipeline.set_encoder_cache(self.options.encoder_cache_mb)
        pipeline.set_prefix_cache(self.options.prefix_cache_mb)
        self.recorder = BatchRecorder(pipeline)
        self.continuous = bool(getattr(pipeline.llm, "continuous_batching", False))
        self.scheduler = make_engine(self.recorder, max_batch_size=self.options.max_batch_size,  # the server's
                                     batch_wait_ms=self.options.batch_wait_ms, max_queue=self.options.max_queue)
        defaults = pipeline.llm.generation_config(pipeline.generation_options)
        self.sampling_by_default = bool(pipeline.generation_options.get("do_sample", defaults.do_sample))
        self.sessions = SessionStore()
        self._ids = itertools.count()

    @property
    def default_max_tokens(self) -> int:
        return self.scheduler.default_max_tokens

    @property
    def default_temperature(self) -> float:
        """The slider's start: 0 (greedy) unless the configured generation samples."""
        if not self.sampling_by_default:
            return 0.0
        return float(self.pipeline.generation_options.get("temperature") or 1.0)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    async def respond(
        self, session_id: str | None, text: str, files: list[str], max_tokens: int, temperature: float
    ) -> AsyncIterator[tuple[list[dict[str, Any]], bool, Session]]:
        """Yield (the chat to show, whether the input box should be cleared, the session) as the answer grows."""
        session = self.sessions.get(session_id)
        if session.job is not None:  # this tab is still being answered: say so, keep what was typed
            session.note(BUSY)
            yield session.display, False, session
            return
        text = text or ""
        uploads, problems = classify(list(files or []), self.pipeline.modalities, self.options.max_upload_bytes)
        if not text.strip() and not uploads and not problems:
            yield session.display, False, session
            return
        message = user_message(text, uploads, self.pipeline.modalities)
        if problems:
            session.display.append(shown(message, [name for name, _ in problems]))
            for _, problem in problems:
                session.note(problem)
            yield session.display, True, session
            return
        job_id = f"demo-{next(self._ids)}"
        media = MediaStore()
        media.params.update({u.path: f"'{u.name}'" for u in uploads})  # errors name the file, not its temp path
        try:
            request = ChatRequest(
                [*session.turns, message],
                modalities=self.pipeline.modalities,
                tokenizer=self.pipeline.llm.tokenizer,
                id=job_id,
            )
            params = ChatParams([*session.turns, message], max_tokens=int(max_tokens), temperature=float(temperature))
            job = DemoJob(request, params, media, asyncio.get_running_loop())
            self.scheduler.submit(job)
        except VitaError as exc:  # the conversation cannot be laid out as a request
            session.display.append(shown(message))
            session.note(str(exc))
            yield session.display, False, session
            return
        except QueueFull as exc:
            session.display.append(shown(message))
            session.note(
                f"the demo is busy ({self.scheduler.queue_length()} questions waiting); "
                f"ask again in {exc.retry_after_s} s"
            )
            yield session.display, False, session
            return
        session.job = job
        session.display.append(shown(message))
        answer = {"role": "assistant", "content": [text_part("")]}
        session.display.append(answer)
        session.stats = Stats()
        try:
            yield session.display, True, session
            async for kind, payload in _events(job):
                if kind == "started":
                    session.stats.tokens_in = dict(payload)
                elif kind == "text":
                    answer["content"][0]["text"] += payload
                elif kind == "error":
                    session.display.remove(answer)
                    session.note(_explain(payload))
                    session.stats = None
                else:  # done
                    answer["content"][0]["text"] = payload.text
                    self._finish(session.stats, job, payload)
                    session.turns += [message, ChatMessage("assistant", [TextPart(payload.text)])]
                if kind in ("error", "done"):
                    session.job = None
                if session.closed:  # Clear was pressed: the tab shows its new, empty conversation
                    return
                yield session.display, True, session
        finally:  # finished, or the tab went away (Gradio closed this generator): nothing more is generated
            job.cancel.set()
            if session.job is job:
                session.job = None
            self.recorder.rows.pop(job_id, None)

    def cancel(self, session_id: str | None) -> bool:
        """The Stop button: end this tab's answer within one decode step (its batch-mates go on)."""
        session = self.sessions.get(session_id)
        if session.job is None:
            return False
        session.job.cancel.set()
        return True

    def clear(self, session_id: str | None) -> Session:
        self.sessions.forget(session_id)
        return self.sessions.get(session_id)

    def _finish(self, stats: Stats, job: DemoJob, outcome: Any) -> None:
        done = job.finished_at or time.perf_counter()
        stats.tokens_out, stats.finish = outcome.completion_tokens, outcome.finish_reason
        rows = self.recorder.rows.get(job.request.id)
        if self.continuous:
            stats.batch = "continuous (the LLM engine's)"
        elif rows is not None:
            stats.batch = f"{rows} row{'s' if rows != 1 else ''}"
        first = outcome.first_token_at
        if first is not None:
            stats.ttft_s = max(0.0, first - job.arrived)
            n = outcome.completion_tokens
            stats.decode_tokens_per_s = (n - 1) / (done - first) if n > 1 and done > first else 0.0


async def _events(job: Job) -> AsyncIterator[tuple[str, Any]]:
    """The job's events up to and including ``done`` or ``error``; text pieces that arrived while the page was
    being updated come joined as one, so a page slower than the model shows whole runs of tokens at a time
    instead of falling behind (and each update's work never holds the engine thread back)."""
    while True:
        kind, payload = await job.events.get()
        while kind == "text" and not job.events.empty():
            more_kind, more = job.events.get_nowait()
            if more_kind != "text":
                yield kind, payload
                kind, payload = more_kind, more
                break
            payload += more
        yield kind, payload
        if kind in ("done", "error"):
            return


def _explain(error: Any) -> str:
    """A scheduler error as a chat note (the HTTP status is the server's business, not the reader's)."""
    message = getattr(error, "message", str(error))
    if isinstance(error, APIError) and error.code == "context_length_exceeded":
        message = message.replace("max_tokens", "'Max new tokens'") + ", or press Clear to start a new conversation"
    elif isinstance(error, APIError) and error.status >= 500 and message == "internal server error":
        message = "the model failed on this question (the demo's log says why); the demo goes on"
    return message
