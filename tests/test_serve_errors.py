"""The server's limits and faults over raw HTTP: every bad request gets OpenAI's error object with the right
status and the server answers the next good one; 429 with Retry-After, 413, 401, 500 without a traceback;
a client that goes away cancels its row within one decode step while its batch-mate goes on."""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
from urllib.parse import urlparse

import pytest
from serve_helpers import BASE, answer, call, chat, image_question, is_error_object, png_url, serving

from conftest import build_cached
from vita_framework.cli import SAMPLE_IMAGE

pytest.importorskip("fastapi")

LONG = (*BASE, "generation.max_new_tokens=1024", "generation.min_new_tokens=1024")


@pytest.fixture(scope="module")
def pipe():
    return build_cached(*BASE)


@pytest.fixture(scope="module")
def server(pipe):
    with serving(pipe, max_request_bytes=200_000) as (url, app):
        yield url, app


def _image(path=SAMPLE_IMAGE):
    from PIL import Image

    return png_url(Image.open(path))


# a question about the shipped sample, which the bundle answers with a word (`purple`); without an image the
# bundle may answer nothing, as it never saw a question without one
GOOD = image_question(_image(), "What colour is the square?")


def _part(kind, value):
    return [{"role": "user", "content": [{"type": kind, kind: value}, {"type": "text", "text": "What?"}]}]


BAD = [
    ("not json", None, 400, None),
    ({"messages": []}, None, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, None, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "hologram"}]}]}, None, 400, "messages[0].content[0].type"),
    ({"messages": _part("image_url", {"url": "data:image/png;base64,!!!"})}, None, 400,
     "messages[0].content[0].image_url.url"),
    ({"messages": _part("image_url", {"url": "data:image/png;base64,AAAA"})}, "cannot be read as an image", 400,
     "messages[0].content[0].image_url.url"),
    ({"messages": _part("image_url", {"url": "https://example.com/a.png"})}, None, 400,
     "messages[0].content[0].image_url.url"),
    ({"messages": _part("image_url", {"url": f"file://{SAMPLE_IMAGE}"})}, "allow_local_files", 400,
     "messages[0].content[0].image_url.url"),
    ({"messages": _part("input_audio", {"data": "AAAA", "format": "wav"})}, "no audio encoder", 400, "messages"),
    ({"messages": [{"role": "user", "content": "word " * 7000}]}, "positions", 400, "messages"),
    ({"messages": GOOD, "max_tokens": 40_000}, None, 400, "max_tokens"),
    ({"messages": GOOD, "temperature": 3}, None, 400, "temperature"),
    ({"messages": GOOD, "n": 2}, None, 400, "n"),
    ({"messages": GOOD, "stop": [1]}, None, 400, "stop"),
    ({"messages": GOOD, "model": "gpt-9"}, "does not exist", 404, "model"),
    ({"messages": [*GOOD, {"role": "assistant", "content": "x"}]}, None, 400, "messages[1].role"),
]


@pytest.mark.parametrize("body,says,status,param", BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_request_then_a_good_one(server, body, says, status, param):
    url, _ = server
    got, _, error = call(url, "/v1/chat/completions", raw=b"{nope" if body == "not json" else None,
                         body=None if body == "not json" else body)
    assert got == status and is_error_object(error), error
    assert error["error"]["param"] == param
    assert says is None or says in error["error"]["message"]
    assert "/tmp/" not in error["error"]["message"]  # saved media are named by their parameter
    ok, good = chat(url, GOOD, max_tokens=4)
    assert ok == 200 and answer(good)


def test_body_too_large_is_413_and_a_stream_error_is_a_status(server):
    url, _ = server
    big = {"messages": [{"role": "user", "content": "x" * 300_000}]}
    status, _, error = call(url, "/v1/chat/completions", big)
    assert status == 413 and is_error_object(error) and error["error"]["code"] == "request_too_large"
    # a stream whose request is bad gets its status before any event
    status, headers, error = call(url, "/v1/chat/completions", {"messages": _part("image_url", {
        "url": "data:image/png;base64,AAAA"}), "stream": True})
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert chat(url, GOOD, max_tokens=4)[0] == 200


def test_unexpected_failure_is_500_without_traceback(server, pipe, monkeypatch):
    url, _ = server
    real = pipe.prepare

    def broken(request):
        if "boom" in (request.prompt or ""):
            raise RuntimeError("secret internals at /srv/app.py line 3")
        return real(request)

    monkeypatch.setattr(pipe, "prepare", broken)
    status, _, error = call(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "boom"}]})
    assert status == 500 and is_error_object(error)
    assert "secret" not in json.dumps(error) and "Traceback" not in json.dumps(error)
    assert chat(url, GOOD, max_tokens=4)[0] == 200
    metrics = call(url, "/metrics", method="GET")[2]
    assert 'vita_requests_total{status="500"} 1.0' in metrics
    for name in ("vita_queue_length", "vita_batch_size_bucket", "vita_time_to_first_token_seconds_bucket",
                 "vita_request_latency_seconds_bucket", "vita_prompt_tokens_total", "vita_completion_tokens_total"):
        assert name in metrics


def test_api_key(pipe):
    with serving(pipe, api_key="s3cret") as (url, _):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            status, _got, error = call(url, "/v1/chat/completions", {"messages": GOOD}, headers=headers)
            assert status == 401 and is_error_object(error) and error["error"]["code"] == "invalid_api_key"
            assert call(url, "/v1/models", method="GET", headers=headers)[0] == 401
        status, _, body = call(url, "/v1/chat/completions", {"messages": GOOD, "max_tokens": 4},
                               headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and answer(body)
        assert call(url, "/health", method="GET")[0] == 200


def test_local_files_when_allowed(pipe):
    with serving(pipe, allow_local_files=True) as (url, _):
        status, body = chat(url, image_question(f"file://{SAMPLE_IMAGE}", "What colour is the circle?"))
        assert status == 200 and answer(body) == pipe.generate("What colour is the circle?", images=[SAMPLE_IMAGE]).text


def test_full_queue_is_429_with_retry_after(pipe, monkeypatch):
    gate = threading.Event()
    real = pipe.prepare

    def held(request):
        gate.wait(30)
        return real(request)

    monkeypatch.setattr(pipe, "prepare", held)
    with serving(pipe, max_queue=1, max_batch_size=1, batch_wait_ms=0) as (url, _):
        results = []
        first = threading.Thread(target=lambda: results.append(chat(url, GOOD, max_tokens=4)))
        first.start()
        time.sleep(0.5)  # the engine holds the first request; the next one waits in the queue
        second = threading.Thread(target=lambda: results.append(chat(url, GOOD, max_tokens=4)))
        second.start()
        time.sleep(0.5)
        status, headers, error = call(url, "/v1/chat/completions", {"messages": GOOD})
        assert status == 429 and int(headers["retry-after"]) >= 1 and is_error_object(error)
        gate.set()
        first.join(60)
        second.join(60)
        assert [s for s, _ in results] == [200, 200]
        assert chat(url, GOOD, max_tokens=4)[0] == 200


def _wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _read_tokens(response, n):
    """Read a stream's raw lines (chunked encoding and all) until ``n`` content deltas have arrived."""
    seen = 0
    while seen < n:
        line = response.fp.readline()
        assert line, "the stream ended early"
        if line.startswith(b"data: {") and b'"content": "' in line and b'"content": ""' not in line:
            seen += 1


def test_disconnect_cancels_within_a_step_and_the_batch_mate_goes_on(monkeypatch):
    from vita_framework.serve import app as app_module
    from vita_framework.serve.scheduler import Job

    pipe = build_cached(*LONG)
    steps = [0]

    def count(module, args, kwargs):  # generation steps: one new position each (the server prefills the rest of
        embeds = kwargs.get("inputs_embeds")  # each prompt row by row beforehand, from shared prefix states)
        ids = kwargs.get("input_ids")
        if (embeds if embeds is not None else ids).shape[1] == 1:
            steps[0] += 1

    hook = pipe.llm.model.register_forward_pre_hook(count, with_kwargs=True)
    cancelled_at: list[int] = []

    class RecordingEvent(threading.Event):
        def set(self):
            if not self.is_set():
                cancelled_at.append(steps[0])
            super().set()

    @dataclasses.dataclass
    class RecordingJob(Job):
        cancel: threading.Event = dataclasses.field(default_factory=RecordingEvent)

    monkeypatch.setattr(app_module, "Job", RecordingJob)
    alone = pipe.generate("What colour is the circle?", images=[SAMPLE_IMAGE], max_new_tokens=24).text
    gate, holding, real = threading.Event(), threading.Event(), pipe.prepare

    def held(request):  # the first request holds the engine until the stream and its batch-mate are queued
        holding.set()
        gate.wait(30)
        return real(request)

    monkeypatch.setattr(pipe, "prepare", held)
    steps[0] = 0  # decode steps (LLM forwards) of the server's generations from here
    try:
        with serving(pipe, max_batch_size=4) as (url, app):
            holder = threading.Thread(target=lambda: chat(url, GOOD, max_tokens=1))
            holder.start()
            assert holding.wait(30)
            mate = []
            mate_thread = threading.Thread(target=lambda: mate.append(chat(url, image_question(
                _image(), "What colour is the circle?"), max_tokens=24)))
            parsed = urlparse(url)
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
            conn.request("POST", "/v1/chat/completions", body=json.dumps({
                "messages": [{"role": "user", "content": "Tell me a story."}], "stream": True}),
                headers={"Content-Type": "application/json"})
            _wait_for(lambda: app.state.scheduler.queue_length() == 1)
            mate_thread.start()
            _wait_for(lambda: app.state.scheduler.queue_length() == 2)
            gate.set()  # the next batch: the stream and its batch-mate
            response = conn.getresponse()
            assert response.status == 200
            _read_tokens(response, 2)  # two tokens of the stream, then the client goes away
            conn.sock.shutdown(2)
            conn.close()
            mate_thread.join(120)
            holder.join(60)
            status, body = mate[0]
            assert status == 200
            assert answer(body) == alone and body["usage"]["completion_tokens"] == 24  # as alone
            assert body["choices"][0]["finish_reason"] == "length"
            deadline = time.monotonic() + 30
            while not cancelled_at and time.monotonic() < deadline:
                time.sleep(0.05)
            assert cancelled_at and 3 <= cancelled_at[0] < 25
            assert steps[0] <= 1 + 25  # the holder's step, then the batch-mate's 24 tokens: not the stream's 1024
            lone = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
            lone.request("POST", "/v1/chat/completions", body=json.dumps({"messages": GOOD, "stream": True}),
                         headers={"Content-Type": "application/json"})
            response = lone.getresponse()
            _read_tokens(response, 3)
            lone.sock.shutdown(2)
            lone.close()
            while len(cancelled_at) < 2 and time.monotonic() < deadline + 30:
                time.sleep(0.05)
            time.sleep(0.5)
            assert len(cancelled_at) == 2 and steps[0] - cancelled_at[1] <= 2  # within one decode step
    finally:
        hook.remove()
