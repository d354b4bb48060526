"""Streaming an answer: generation runs in a worker thread, and an abandoned stream stops it.

:meth:`vita_framework.pipeline.Pipeline.stream` hands :func:`stream_pieces` a generate call. The iterator's
``finally`` runs when the caller breaks out of its loop, calls ``close()``, drops the last reference (garbage
collection) or is interrupted (Ctrl-C): it sets the cancel event, which the LLM checks after every decode step
(:class:`vita_framework.decoding.CancelCriteria`), and waits briefly for the worker to end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

#: the worker thread's name (a server or a test can find it with ``threading.enumerate()``)
STREAM_THREAD_NAME = "vita-stream"
#: how long an abandoned stream waits for its worker, in seconds (one decode step is far shorter)
CANCEL_JOIN_S = 2.0


def stream_pieces(generate: Callable[..., Any], tokenizer: Any, cancel: threading.Event) -> Iterator[Any]:
    """Yield text pieces as ``generate(streamer=..., cancel=cancel)`` produces them, then its result.

    An error in the worker (a :class:`~vita_framework.errors.GenerationError`, say) is raised here, in the
    caller's thread. Abandoning the iterator sets ``cancel``: the generation stops within one decode step.
    """
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = generate(streamer=streamer, cancel=cancel)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc
            streamer.end()

    thread = threading.Thread(target=work, name=STREAM_THREAD_NAME, daemon=True)
    thread.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
    finally:
        if thread.is_alive():  # abandoned (break, close(), garbage collection) or interrupted
            cancel.set()
            thread.join(CANCEL_JOIN_S)
    if "error" in box:
        raise box["error"]
    yield box["result"]
