"""Cancelling generation: an abandoned stream (close, break, garbage collection) stops its worker within one
decode step, and ``cancel=`` events end generate/run/generate_batch early with what they have."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from conftest import build_cached
from vita_framework.streaming import STREAM_THREAD_NAME

# eos suppressed for 1024 tokens: an uncancelled stream really runs long
LONG = ("+vision=internvit", "+audio=none", "generation.max_new_tokens=1024", "generation.min_new_tokens=1024")


@pytest.fixture
def pipe():
    return build_cached(*LONG)


@pytest.fixture
def steps(pipe):
    """Forward passes of the LLM (one per decode step), counted while the test runs."""
    count = [0]
    handle = pipe.llm.model.register_forward_pre_hook(lambda module, args: count.__setitem__(0, count[0] + 1))
    yield count
    handle.remove()


class RecordingEvent(threading.Event):
    """A cancel event that remembers how many steps had run when it was set."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.at = steps, None

    def set(self):
        self.at = self.steps[0]
        super().set()


def _stream_threads():
    return [t for t in threading.enumerate() if t.name == STREAM_THREAD_NAME and t.is_alive()]


def _wait_no_stream_threads(seconds):
    deadline = time.monotonic() + seconds
    while _stream_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return _stream_threads()


def test_close_stops_generation_within_a_step(pipe, steps):
    event = RecordingEvent(steps)
    stream = pipe.stream("Describe a circle.", cancel=event)
    pieces = [next(stream), next(stream)]
    assert all(isinstance(p, str) for p in pieces)
    stream.close()
    assert event.is_set() and not _wait_no_stream_threads(1.0)
    after_close = steps[0]
    time.sleep(0.2)
    assert steps[0] == after_close  # nothing runs after close returned
    assert steps[0] - event.at <= 2 and steps[0] < 1024


def test_break_and_garbage_collection_stop_generation(pipe, steps):
    event = RecordingEvent(steps)
    stream = pipe.stream("Describe a circle.", cancel=event)
    for i, _piece in enumerate(stream):
        if i == 1:
            break
    del stream
    gc.collect()
    assert event.is_set() and not _wait_no_stream_threads(1.0)
    assert steps[0] - event.at <= 2 and steps[0] < 1024


def test_ten_abandoned_streams_leave_no_generation_running(pipe, steps):
    for _ in range(10):
        stream = pipe.stream("Describe a circle.")
        next(stream)
        next(stream)
    del stream
    gc.collect()
    assert not _wait_no_stream_threads(1.0)
    total = steps[0]
    time.sleep(0.2)
    assert steps[0] == total and total < 1024


def test_finished_stream_leaves_the_event_unset(pipe):
    event = threading.Event()
    *pieces, result = pipe.stream("Hi", cancel=event, max_new_tokens=5, min_new_tokens=5)
    assert result.rows[0].tokens_out == 5 and "".join(pieces).strip() == result.rows[0].text
    assert not event.is_set()


def test_set_cancel_ends_generate_after_one_step(pipe, steps):
    event = threading.Event()
    event.set()
    result = pipe.generate("Describe a circle.", cancel=event)
    row = result.rows[0]
    assert row.error is None and row.tokens_out == 1 and steps[0] == 1


def test_cancel_from_another_thread_returns_what_it_had(pipe):
    event = threading.Event()
    timer = threading.Timer(0.05, event.set)
    timer.start()
    result = pipe.run([_request("Describe a circle.")], cancel=event)
    timer.join()
    assert 1 <= result.rows[0].tokens_out < 1024
    assert len(result.rows[0].generated_ids) == result.rows[0].tokens_out


def test_generate_batch_cancel_marks_later_rows(pipe):
    event = threading.Event()
    event.set()
    result = pipe.generate_batch([{"prompt": "One"}, {"prompt": "Two"}], batch_size=1, cancel=event)
    assert [row.error for row in result.rows] == ["cancelled", "cancelled"]


def _request(prompt):
    from vita_framework.request import Request

    return Request(prompt)
