"""Config sweeps as users run them: multirun subprocesses, every job's result.json, the collector's summary."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import GOLDEN

CASE5 = GOLDEN / "case5_batch2"
BASE = ["+vision=internvit", "+audio=none", "device=cpu", "generation.max_new_tokens=3"]


def multirun(tmp_path, *args, env=None, timeout=600, base=tuple(BASE)):
    cmd = [sys.executable, "-m", "vita_framework", "-m", *base, *args, f"hydra.sweep.dir={tmp_path}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _results(tmp_path):
    return [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]


def test_sweep_writes_every_result_and_a_summary_and_survives_a_failed_job(tmp_path, run_env):
    proc = multirun(tmp_path, "projector=mlp2x_gelu,linear", "fusion=splice,slow_fast", env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = _results(tmp_path)
    assert len(entries) == 4
    combos = {(e["choices"]["projector"], e["choices"]["fusion"]) for e in entries}
    assert combos == {("mlp2x_gelu", "splice"), ("mlp2x_gelu", "slow_fast"), ("linear", "splice"),
                      ("linear", "slow_fast")}
    by = {(e["choices"]["projector"], e["choices"]["fusion"]): e for e in entries}
    assert by[("mlp2x_gelu", "splice")]["status"] == "ok" and by[("mlp2x_gelu", "splice")]["tokens_out"] >= 1
    # the bundle's projector is an MLP: `linear` cannot load it, and those jobs are recorded as failed
    assert by[("linear", "splice")]["status"] == "failed" and "projector" in by[("linear", "splice")]["error"]
    for n in range(4):
        assert (tmp_path / str(n) / "result.json").is_file()
    assert "== sweep summary: 4 jobs, 2 failed" in proc.stdout
    # the swept overrides are the table's columns; the shared ones are printed once above it
    header = next(line for line in proc.stdout.splitlines() if "ttft ms" in line)
    assert header.split()[:4] == ["#", "status", "projector", "fusion"]
    assert "fixed: vision=internvit audio=none device=cpu" in proc.stdout
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["projector"], r["fusion"]) for r in rows] == [(e["choices"]["projector"], e["choices"]["fusion"])
                                                           for e in entries]
    assert "vision" not in rows[0] and rows[1]["status"] == "ok" and float(rows[1]["peak_mb"]) > 0
    # components are reused across jobs of one process when their config is identical
    second = json.loads((tmp_path / "1" / "result.json").read_text())
    assert {"llm", "vision", "projector"} <= set(second["components_reused"])
    assert second["peak_memory_mb"] > 0 and "reset at job start" in second["peak_memory_method"]


def test_eval_dataset_scores_each_run(tmp_path, run_env):
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "What color is the square?", "images": [str(CASE5 / "row0_source.png")], "answer": "red"},
        {"prompt": "Say hi", "answer": "hi"},
    ]) + "\n")
    out = tmp_path / "sweep"
    proc = multirun(out, f"eval.dataset={data}", "eval.metric=contains", "seed=1,2", env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = _results(out)
    assert len(entries) == 2 and all(isinstance(e["score"], float) for e in entries)
    result = json.loads((out / "0" / "result.json").read_text())
    assert result["eval"]["n"] == 2 and result["eval"]["metric"] == "contains"
    assert result["eval"]["score"] == result["eval"]["contains"]
    assert [r["expected"] for r in result["rows"]] == ["red", "hi"]
    # the report: accuracy (the eval score) and visual tokens per image (one image among the two rows), plotted
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    image_tokens = result["rows"][0]["tokens_in"]["image"]
    assert [(float(r["accuracy"]), float(r["visual_tokens"])) for r in rows] == [
        (e["score"], float(image_tokens)) for e in entries]
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_joblib_launcher_runs_the_sweep(tmp_path, run_env):
    proc = multirun(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2,3", env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = _results(tmp_path)
    assert [e["status"] for e in entries] == ["ok", "ok", "ok"]
    assert sorted(e["job"] for e in entries) == [0, 1, 2]


@pytest.mark.slow
def test_ray_launcher_runs_a_small_sweep_on_a_local_ray(tmp_path, run_env):
    env = dict(run_env, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_DISABLE_DOCKER_CPU_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    proc = multirun(tmp_path, "hydra/launcher=vita_ray_local", "seed=1,2", env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [e["status"] for e in _results(tmp_path)] == ["ok", "ok"]


def _fake_result(sweep_dir, num, overrides, choices, peak, answer="a red circle"):
    job = sweep_dir / str(num)
    job.mkdir(parents=True)
    rows = [{"text": answer, "tokens_in": {"total": 100 + num}, "tokens_out": 4}]
    job.joinpath("result.json").write_text(json.dumps({
        "status": "ok", "job_num": num, "overrides": overrides, "choices": choices, "rows": rows,
        "timings": {"time_to_first_token_s": 0.05, "decode_tokens_per_s": 120.0}, "peak_memory_mb": peak}))


def test_summary_has_a_column_per_swept_override_and_a_csv(tmp_path, capsys):
    from omegaconf import OmegaConf

    from vita_framework.sweep import ResultsCollector

    shared = ["+vision=internvit", "+audio=none", "device=cpu"]
    choices = {"vision": "internvit", "audio": "none", "llm": "qwen2", "fusion": "splice", "generation": "greedy"}
    _fake_result(tmp_path, 0, [*shared, "vision.max_tiles=1"], choices, 810.0)
    _fake_result(tmp_path, 1, [*shared, "vision.max_tiles=6"], choices, 640.5, answer="two")
    # a choice changed by an experiment (no override of its own) is a column too
    _fake_result(tmp_path, 2, [*shared, "vision.max_tiles=6", "+experiment=x"], {**choices, "fusion": "slow_fast"},
                 700.0)
    ResultsCollector().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "fixed: vision=internvit audio=none device=cpu" in out
    header = next(i for i, line in enumerate(lines) if line.startswith("#"))
    assert lines[header].split()[:5] == ["#", "status", "vision.max_tiles", "experiment", "fusion"]
    table = [line.split()[:5] for line in lines[header + 1:]]
    assert table == [["0", "ok", "1", "-", "splice"], ["1", "ok", "6", "-", "splice"],
                     ["2", "ok", "6", "x", "slow_fast"]]
    assert "llm" not in lines[header] and "qwen2" not in out  # unchanging choices are not repeated
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["job", "status", "vision.max_tiles", "experiment", "fusion", "tokens_in", "tokens_out",
                             "ttft_ms", "tokens_per_s", "peak_mb", "score", "accuracy", "visual_tokens", "answer",
                             "error"]
    assert [(r["job"], r["vision.max_tiles"], r["peak_mb"], r["answer"]) for r in rows] == [
        ("0", "1", "810.0", "a red circle"), ("1", "6", "640.5", "two"), ("2", "6", "700.0", "a red circle")]
    assert rows[0]["ttft_ms"] == "50.0" and rows[0]["tokens_in"] == "100" and rows[0]["accuracy"] == ""
    assert "summary.png not drawn: no job has both accuracy and visual tokens" in out
    entries = _results(tmp_path)
    assert entries[1]["params"]["vision.max_tiles"] == "6"


@pytest.mark.parametrize("method", ["vmhwm", "sampled"])
def test_peak_memory_is_the_jobs_own_not_the_process_peak(monkeypatch, method):
    import time

    from vita_framework import peak_memory

    if method == "vmhwm":  # Linux lets a process reset its own peak RSS; a kernel that refuses is a finding
        peak_memory._reset_hwm()
    if method == "sampled":  # where the kernel refuses the VmHWM reset, a sampling thread measures the job
        monkeypatch.setattr(peak_memory, "_reset_hwm", lambda: (_ for _ in ()).throw(OSError("refused")))
    meter = peak_memory.PeakMemory(interval_s=0.002)
    meter.start()
    baseline = meter.peak_mb()
    block = bytearray(300 * 2**20)
    for i in range(0, len(block), 4096):  # touch every page: resident
        block[i] = 1
    deadline = time.monotonic() + 10  # a loaded machine may run the sampler late: wait until it has seen the block
    while meter.peak_mb() - baseline < 250 and time.monotonic() < deadline:
        time.sleep(0.01)
    first = meter.peak_mb()
    del block
    meter.start()  # the next job
    time.sleep(0.05)
    second = meter.peak_mb()
    meter.stop()
    assert first - second > 250, (first, second, meter.method)
    assert ("clear_refs" if method == "vmhwm" else "sampled") in meter.method


def test_batch_rows_echo_their_ids_in_result_json(tmp_path, run_env):
    req = tmp_path / "requests.jsonl"
    req.write_text("\n".join(json.dumps(r) for r in [
        {"id": "scene-a", "prompt": "What colour is the square?", "images": [str(CASE5 / "row0_source.png")]},
        {"id": 7, "prompt": "How many shapes are there?", "images": [str(CASE5 / "row0_source.png")]},
        {"prompt": "Describe this image.", "images": [str(CASE5 / "row0_source.png")]},
    ]) + "\n")
    cmd = [sys.executable, "-m", "vita_framework", *BASE, f"requests={req}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "run" / "result.json").read_text())["rows"]
    assert [r.get("id") for r in rows] == ["scene-a", 7, None]
    assert all(r["tokens_out"] >= 1 for r in rows)


def write_heldout_eval_set(directory, n=12, size=448):
    """Held-out synthetic questions (scenes the default bundle never saw) as an eval JSONL, images as PNGs.

    Rendered at 448 px: with ``vision.max_tiles=1`` an image becomes one tile, as in training; with more tiles
    it is split into a 2x2 grid plus a thumbnail, which the tiny model was never trained on.
    """
    from vita_training import synthetic

    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for e in synthetic.examples("heldout", n):
        image = directory / f"heldout_{e.index}.png"
        e.image(size).save(image)
        lines.append(json.dumps({"id": e.index, "prompt": e.question, "images": [str(image)], "answer": e.answer}))
    (directory / "qa.jsonl").write_text("\n".join(lines) + "\n")
    return directory / "qa.jsonl"


def test_optuna_sweeper_maximises_the_eval_score(tmp_path, run_env):
    import yaml

    data = write_heldout_eval_set(tmp_path / "heldout")
    out = tmp_path / "sweep"
    base = [*BASE[:-1], "generation.max_new_tokens=16"]  # descriptions need more than 3 tokens
    proc = multirun(out, f"eval.dataset={data}", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize",
                    "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0", "vision.max_tiles=choice(1,4,6)",
                    "vision.select_layer=choice(-1,-2)", env=dict(run_env, OMP_NUM_THREADS="1"), base=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((out / "optimization_results.yaml").read_text())
    entries = _results(out)
    assert len(entries) == 4 and all(e["status"] == "ok" for e in entries)
    scores = [e["score"] for e in entries]
    assert best["best_value"] == max(scores)
    winners = [e["params"] for e in entries if e["score"] == max(scores)]
    assert {k: str(v) for k, v in best["best_params"].items()} in [
        {k: p[k] for k in ("vision.max_tiles", "vision.select_layer")} for p in winners]
    # the search space matters: one tile (as trained) answers far better than a 2x2 grid + thumbnail
    assert len(set(scores)) > 1 and best["best_params"]["vision.max_tiles"] == 1 and best["best_value"] > 0.8
    header = next(line for line in proc.stdout.splitlines() if "ttft ms" in line)
    assert header.split()[2:4] == ["vision.max_tiles", "vision.select_layer"]


def test_peak_memory_on_cuda_resets_the_allocator_peak_at_job_start(monkeypatch):
    """No GPU needed: a stand-in ``torch.cuda`` records the resets and reports per-device peaks."""
    import types

    from vita_framework import peak_memory

    calls = []
    cuda = types.SimpleNamespace(
        is_available=lambda: True, is_initialized=lambda: True, device_count=lambda: 2,
        reset_peak_memory_stats=calls.append, max_memory_allocated=lambda d: (d + 1) * 2**20)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    meter = peak_memory.PeakMemory()
    meter.start()
    assert calls == [0, 1]
    assert meter.peak_mb() == 3.0 and "cuda.max_memory_allocated, reset at job start" in meter.method
    meter.stop()
