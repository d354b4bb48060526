"""Config sweeps as users run them: multirun subprocesses, every job's result.json, the collector's summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import GOLDEN

CASE5 = GOLDEN / "case5_batch2"
BASE = ["+vision=internvit", "+audio=none", "device=cpu", "generation.max_new_tokens=3"]


def multirun(tmp_path, *args, env=None, timeout=600):
    cmd = [sys.executable, "-m", "vita_framework", "-m", *BASE, *args, f"hydra.sweep.dir={tmp_path}"]
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
    assert "ttft ms" in proc.stdout and "fusion=slow_fast" in proc.stdout
    # components are reused across jobs of one process when their config is identical
    second = json.loads((tmp_path / "1" / "result.json").read_text())
    assert {"llm", "vision", "projector"} <= set(second["components_reused"])


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
