"""Issue 13: every class of bad input ends as one ``error:`` line naming the culprit and the fix, exit status 2, no
traceback and no result.json; in batch mode the bad row records its error and the other rows are answered.

The table (:data:`CASES`) runs through the real CLI as subprocesses. Each process spends seconds importing torch,
so they all start when the module's first case asks (a few at a time, bounded so that memory stays modest) and
each test waits only for its own. The loaders' pixel limits, the JSONL checks, the summary and the output-dir
probe are tested in-process, where they are cheap, in test_bad_input_checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bad_files import HUGE, locked_dir, unlock, write_frames, write_png

from conftest import ROOT

TIMEOUT_S = 300
WORKERS = max(2, min(6, 2 * (os.cpu_count() or 1)))  # each process holds up to ~1 GB
BASE = ("+vision=internvit", "+audio=none", "device=cpu", "generation.max_new_tokens=2", "stream=false")


@dataclass(frozen=True)
class Case:
    """``args`` after BASE ({name} fields are the fixture files' paths); ``fragments`` must all appear in the
    error (stderr for a failed run, the bad rows' errors in batch mode); ``failed_rows``: a batch run's rows that
    must fail (the rest answered)."""

    id: str
    args: tuple[str | bytes, ...]
    fragments: tuple[str, ...]
    code: int = 2
    failed_rows: tuple[int, ...] | None = None
    needs: str = ""  # a fixture feature the case needs ("unwritable")
    base: tuple[str, ...] = field(default=BASE)


CASES = [
    # 1. pixel limits: a decompression bomb, a 144-MP image, a bomb frame in a frame directory, the option itself
    Case("image-bomb", ("prompt=hi", "images=[{bomb}]"),
         ("bomb.png' claims 10,000,000,000 pixels", "over the limit of 50,000,000 pixels (image.max_pixels)")),
    Case("image-144mp", ("prompt=hi", "images=[{big}]"), ("is 12000x12000 (144,000,000 pixels)", "image.max_pixels=")),
    Case("image-limit-is-configurable", ("prompt=hi", "images=[{small}]", "image.max_pixels=10"),
         ("small.png' is 8x8 (64 pixels), over the limit of 10 pixels",)),
    Case("image-limit-invalid", ("prompt=hi", "image.max_pixels=0"), ("image.max_pixels must be >= 1; got 0",)),
    Case("video-frame-bomb", ("prompt=hi", "videos=[{frames}]", "video_fps=2"),
         ("frame {frames}/2.png in {frames} claims 10,000,000,000 pixels", "(video.max_pixels)")),
    # 2. text that is not UTF-8: a Latin-1 command line, a lone surrogate in JSONL (with class 3's lines)
    Case("prompt-not-utf8", (b"prompt=caf\xe9",),
         ("'prompt' on the command line is not valid UTF-8", "byte 0xe9 at position 3")),
    # 3. JSONL numbers and encodings, video_fps on the command line
    Case("jsonl-malformed", ("requests={malformed}",),
         ("has 4 malformed line(s)", "line 1: 'prompt' is not valid UTF-8 text", "line 2: NaN is not valid JSON",
          "line 3: Infinity is not valid JSON", "line 4: video_fps must be a finite number > 0")),
    Case("jsonl-not-utf8", ("requests={latin1}",), ("latin1.jsonl' is not UTF-8 text", "save it as UTF-8")),
    Case("video-fps-nan", ("videos=[{good_frames}]", "video_fps=nan"), ("video_fps must be a finite number > 0",
                                                                          "got nan")),
    Case("video-fps-zero", ("videos=[{good_frames}]", "video_fps=0"), ("video_fps must be a finite number > 0",
                                                                         "got 0")),
    # 4. run and generation values
    Case("seed-not-integer", ("prompt=hi", "seed=abc"), ("seed must be an integer", "got 'abc'")),
    Case("generation-ranges", ("prompt=hi", "generation.max_new_tokens=0", "generation.top_p=2.0"),
         ("2 problems", "generation.max_new_tokens must be >= 1; got 0", "generation.top_p must be > 0.0 and <= 1.0")),
    Case("generation-temperature-text", ("prompt=hi", "generation.temperature=abc"), ("generation.temperature",)),
    # 5. batches with failed rows: one bad row among good ones, and every row bad (exit 0: result.json lists them)
    Case("batch-one-bad-row", ("requests={mixed}", "batch_size=4"), ("image.max_pixels",), code=0,
         failed_rows=(1,)),
    Case("batch-all-rows-fail", ("requests={all_bad}",), ("image.max_pixels", "does not exist"), code=0,
         failed_rows=(0, 1)),
    # 6. an output directory that cannot be written
    Case("outdir-under-a-file", ("prompt=hi", "hydra.run.dir={a_file}/run"), ("which is a file, not a directory",
                                                                             "hydra.run.dir=<dir>")),
    Case("outdir-is-a-file", ("prompt=hi", "hydra.run.dir={a_file}"), ("a_file' is a file, not a directory",)),
    Case("outdir-in-proc", ("prompt=hi", "hydra.run.dir=/proc/vita-x"), ("'/proc/vita-x' cannot be written",)),
    Case("outdir-unwritable", ("prompt=hi", "hydra.run.dir={locked}/run"), ("cannot be written",),
         needs="unwritable"),
    Case("sweep-dir-is-a-file", ("-m", "prompt=hi", "hydra.sweep.dir={a_file}"), ("hydra.sweep.dir=<dir>",)),
    # 7. a pickle checkpoint that weights_only=True refuses
    Case("pickle-with-objects", ("prompt=hi", "checkpoint={pickle_ckpt}", "allow_pickle=true"),
         ("cannot be loaded with weights_only=True", "argparse.Namespace", "Convert it to safetensors")),
    # 8. Hydra-level mistakes (vita_framework.overrides)
    Case("hydra-unknown-option", ("+vision=internvitt", "+audio=none"), ("Did you mean '+vision=internvit'",), base=()),
    Case("hydra-unknown-key", ("+vision=internvit", "+audio=none", "vision.max_tile=3"),
         ("unknown config key 'vision.max_tile'", "vision.max_tiles"), base=()),
    Case("hydra-generation-typo", ("generation.max_new_token=5",), ("max_new_tokens",), base=()),
    Case("hydra-unknown-experiment", ("+experiment=nope",), ("config group 'experiment' has no option 'nope'",),
         base=()),
    Case("hydra-missing-plus", ("vision=internvit",), ("append it with '+vision=internvit'",), base=()),
    Case("hydra-unknown-projector", ("projector=mlp9x_gelu",), ("config group 'projector' has no option",
                                                                 "mlp2x_gelu"), base=()),
]


# -- fixture files ------------------------------------------------------------------------------------------
def make_files(base: Path) -> dict[str, Any]:
    import argparse

    import torch

    from vita_framework.weights import default_bundle_path

    files: dict[str, Any] = {
        "bomb": write_png(base / "bomb.png", HUGE, HUGE), "big": write_png(base / "big.png", 12_000, 12_000),
        "small": write_png(base / "small.png"), "frames": write_frames(base / "frames", bomb_at=2),
        "good_frames": write_frames(base / "good_frames"), "a_file": base / "a_file",
    }
    files["a_file"].write_text("in the way")
    lines = ['{"prompt": "\\udc80"}', '{"prompt": "a", "video_fps": NaN}', '{"prompt": "a", "video_fps": Infinity}',
             '{"prompt": "a", "videos": [], "video_fps": true}', '{"prompt": "fine"}']
    (base / "malformed.jsonl").write_text("\n".join(lines) + "\n")
    (base / "latin1.jsonl").write_bytes('{"prompt": "café"}\n'.encode("latin-1"))
    rows = [{"prompt": "Hello"}, {"prompt": "What is this?", "images": [str(files["bomb"])]},
            {"prompt": "What shape?", "images": [str(files["small"])]}]
    (base / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad_rows = [{"prompt": "a", "images": [str(files["big"])]}, {"prompt": "b", "images": [str(base / "nope.png")]}]
    (base / "all_bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad_rows))
    files.update(malformed=base / "malformed.jsonl", latin1=base / "latin1.jsonl", mixed=base / "mixed.jsonl",
                 all_bad=base / "all_bad.jsonl")
    ckpt = base / "pickle_ckpt"
    shutil.copytree(default_bundle_path(), ckpt, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save({"w": torch.zeros(2), "args": argparse.Namespace(lr=1.0)}, ckpt / "pytorch_model.bin")
    files["pickle_ckpt"] = ckpt
    files["locked"] = locked_dir(base / "locked")
    return files


# -- running the table -------------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITA_") and k != "HYDRA_FULL_ERROR"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def command(case: Case, files: dict[str, Any], run_dir: Path) -> list[str | bytes]:
    args = [a if isinstance(a, bytes) else a.format(**files) for a in case.args]
    if not any(isinstance(a, str) and a.startswith(("hydra.run.dir=", "hydra.sweep.dir=")) for a in args):
        args.append(f"hydra.run.dir={run_dir}")
    return [sys.executable, "-m", "vita_framework", *case.base, *args]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):
    made = make_files(tmp_path_factory.mktemp("bad_inputs"))
    yield made
    unlock(made["locked"])


@pytest.fixture(scope="module")
def runs(files: dict[str, Any], tmp_path_factory: pytest.TempPathFactory):
    """Start every runnable case (a bounded pool); case id -> (future CompletedProcess, its run dir)."""
    base = tmp_path_factory.mktemp("bad_input_runs")
    env = _env()

    def run(cmd: list[str | bytes]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=TIMEOUT_S, check=False)

    pool = ThreadPoolExecutor(max_workers=WORKERS)
    started: dict[str, tuple[Future, Path]] = {}
    for case in sorted(CASES, key=lambda c: c.base == ()):  # the slow ones (torch) first
        run_dir = base / case.id
        started[case.id] = (pool.submit(run, command(case, files, run_dir)), run_dir)
    yield started
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clean_error(case: Case, runs, files):
    future, run_dir = runs[case.id]
    done = future.result(timeout=TIMEOUT_S)
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace")
    report = f"exit {done.returncode}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}"
    assert done.returncode == case.code, report
    assert "Traceback" not in stderr + stdout, report
    fragments = [f.format(**files) for f in case.fragments]
    if case.failed_rows is None:
        error = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert error, report
        text = stderr[stderr.index(error[0]):]
        for fragment in fragments:
            assert fragment in text, f"{fragment!r} not in the error\n{report}"
        assert not (run_dir / "result.json").exists() and not (run_dir / "scores.safetensors").exists()
        return
    rows = json.loads((run_dir / "result.json").read_text())["rows"]
    errors = " ".join(rows[i].get("error", "") for i in case.failed_rows)
    for fragment in fragments:
        assert fragment in errors, f"{fragment!r} not in the rows' errors: {errors}\n{report}"
    for i, row in enumerate(rows):
        if i in case.failed_rows:
            assert row.get("error") and f"[{i}] error: " in stdout, report
        else:
            assert "error" not in row and row["tokens_out"] >= 1, report
    assert f"({len(case.failed_rows)} failed)" in stderr, report  # the summary line survived failed rows
