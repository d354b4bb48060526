"""``serve.engine=ray``: a local Ray instance (CPU, dashboard off) runs the app as two Ray Serve replicas, and
requests are answered by both (each response names its replica)."""

from __future__ import annotations

import concurrent.futures
import os

import pytest
from serve_helpers import BASE, answer, call, chat

pytest.importorskip("fastapi")
pytest.importorskip("ray.serve")


@pytest.mark.slow
def test_two_ray_serve_replicas_answer(monkeypatch):
    import ray
    from ray import serve

    from vita_framework.config import compose
    from vita_framework.serve.options import serve_options
    from vita_framework.serve.ray_app import start

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose([*BASE, "+serve=default", "serve.engine=ray", "serve.replicas=2", "serve.port=0",
                   "serve.replica_resources.num_cpus=0.5"])
    options = serve_options(cfg.serve)
    assert (options.engine, options.replicas) == ("ray", 2)
    try:
        url = start(cfg, options)
        assert call(url, "/v1/models", method="GET")[2]["data"][0]["id"] == "vita-default"
        messages = [{"role": "user", "content": "Tell me a story."}]
        replicas, answers = set(), set()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in range(4):
                for status, headers, body in pool.map(
                        lambda _: call(url, "/v1/chat/completions", {"messages": messages, "max_tokens": 8}),
                        range(8)):
                    assert status == 200, body
                    replicas.add(headers["x-vita-replica"])
                    answers.add(answer(body))
                if len(replicas) == 2:
                    break
        assert len(replicas) == 2, replicas  # both replicas answered
        assert len(answers) == 1  # the same greedy answer from each
        assert all(r.split(":")[-1] != str(os.getpid()) for r in replicas)  # not this process
        assert chat(url, [{"role": "user", "content": [{"type": "hologram"}]}])[0] == 400
    finally:
        serve.shutdown()
        ray.shutdown()
