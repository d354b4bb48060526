"""The benchmark scripts run as a user runs them (subprocesses) and print their ratio lines. Nothing is timed here:
the figures only have to parse as positive numbers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT

NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _run(script: str, *args: str, env: dict) -> str:
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_fusion_benchmark_prints_its_ratio(run_env):
    out = _run("fusion.py", "--trials", "2", "--warmup", "1", env=run_env)
    assert "pixel_values [5, 3, 448, 448], 1538 positions (1280 image)" in out
    for row in (r"\(a\) encoder: vision\.encode\(5 tiles\)", r"\(b\) front half: prepare \+ fuse"):
        found = re.search(rf"^{row}\s+{NUMBER}\s+{NUMBER}$", out, re.M)
        assert found is not None and min(map(float, found.groups())) > 0, out
    ratio = re.search(rf"^ratio front half / encoder = {NUMBER} \(target <= 1\.15\) (PASS|FAIL)", out, re.M)
    assert ratio is not None, out
    assert float(ratio.group(1)) > 0
    assert (float(ratio.group(1)) <= 1.15) == (ratio.group(2) == "PASS")


def test_gpu_benchmark_code_path_on_cpu_tiny(run_env):
    out = _run("gpu.py", "--device", "cpu", "--tiny", "--new-tokens", "4", "--trials", "1", "--warmup", "1",
               env=run_env)
    assert "timer perf_counter" in out and "TINY dims" in out and "vocab 151665" in out, out
    assert "golden case 2, 1538 positions" in out, out
    bound = re.search(rf"-> bound {NUMBER} ms/token", out)
    assert bound is not None and float(bound.group(1)) > 0, out
    for mode in ("framework", "bare"):
        row = re.search(rf"^{mode}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$", out, re.M)
        assert row is not None, out
        prepare, fuse, prefill, ttft, decode, ratio = map(float, row.groups())
        assert min(prepare, prefill, ttft, decode, ratio) > 0 and fuse >= 0
        assert ttft >= prefill
        line = re.search(rf"^ratio {mode} decode / HBM bound = {NUMBER} \({NUMBER} ms/token", out, re.M)
        assert line is not None and float(line.group(1)) > 0 and float(line.group(2)) == pytest.approx(decode, abs=1e-3)


def test_gpu_benchmark_without_cuda_exits_cleanly(run_env):
    # CUDA hidden, so the same path is checked on a machine with a GPU
    out = _run("gpu.py", "--new-tokens", "4", env=dict(run_env, CUDA_VISIBLE_DEVICES=""))
    assert "no CUDA device: nothing measured" in out
