"""Issue 13: every class of bad input ends as one ``error:`` line naming the culprit and the fix, exit status 2, no
traceback and no result.json; in batch mode the bad row records its error and the other rows are answered.

The table (:data:`CASES`) runs through the real CLI as subprocesses. Each process spends seconds importing torch,
so they all start when the module's first case asks (a few at a time, bounded so that memory stays modest) and
each test waits only for its own. The loaders' pixel limits, the JSONL checks, the summary and the output-dir
probe are also tested in-process, where they are cheap.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from vita_framework.errors import CheckpointError, InputError

TIMEOUT_S = 300
WORKERS = max(2, min(6, 2 * (os.cpu_count() or 1)))  # each process holds up to ~1 GB
BASE = ("+vision=internvit", "+audio=none", "device=cpu", "generation.max_new_tokens=2", "stream=false")
HUGE = 100_000  # a 100000x100000 header: 10 gigapixels, a decompression bomb for Pillow too


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
def write_png(path: Path, width: int = 8, height: int = 8) -> Path:
    """An 8x8 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): Pillow reads that size from the header."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def write_frames(path: Path, bomb_at: int | None = None) -> Path:
    path.mkdir()
    for i in range(4):
        write_png(path / f"{i}.png", *((HUGE, HUGE) if i == bomb_at else (8, 8)))
    return path


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
    files["locked"] = _locked_dir(base / "locked")
    return files


#: a directory no process may write, root included (sysfs): the fallback where neither mode nor chattr locks
UNWRITABLE_FALLBACK = Path("/sys/fs")


def _locked_dir(path: Path) -> Path:
    """A directory nobody may write: mode 0555, or (as root, who ignores modes) immutable, or else sysfs."""
    path.mkdir()
    path.chmod(0o555)
    if not os.access(path, os.W_OK):
        return path
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        return path
    path.chmod(0o755)
    return UNWRITABLE_FALLBACK


def _unlock(path: Path) -> None:
    if path != UNWRITABLE_FALLBACK:
        if shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o755)


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
    _unlock(made["locked"])


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


# -- in-process: loaders, JSONL, validation, summary, output dir, checkpoint ---------------------------------
@pytest.fixture
def pil_limit(monkeypatch):
    """Pillow's process-wide bomb limit, restored after a test that raises it through a high max_pixels."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    return Image


def test_image_loader_refuses_from_the_header_before_decoding(tmp_path, pil_limit):
    from vita_framework.media.image import load_image

    bomb, big = write_png(tmp_path / "bomb.png", HUGE, HUGE), write_png(tmp_path / "big.png", 12_000, 12_000)
    with pytest.raises(InputError, match=r"bomb.png' claims 10,000,000,000 pixels .*\(image.max_pixels\)"):
        load_image(bomb)
    with pytest.raises(InputError, match=r"12000x12000 \(144,000,000 pixels\), over the limit of 50,000,000"):
        load_image(big)
    with pytest.raises(InputError, match=r"over the limit of 63 pixels \(video.max_pixels\)"):
        load_image(write_png(tmp_path / "small.png"), max_pixels=63, setting="video.max_pixels")
    assert load_image(tmp_path / "small.png", max_pixels=64).size == (8, 8)
    # a limit above Pillow's own lets the header through; the patched file then fails to decode, cleanly
    with pytest.raises(InputError, match="cannot be read as an image"):
        load_image(big, max_pixels=200_000_000)
    assert pil_limit.MAX_IMAGE_PIXELS >= 200_000_000


def test_modality_loaders_read_the_limit_from_their_options(tmp_path):
    from vita_framework.modalities import LoadContext
    from vita_plugins.modalities import ImageLimits, VideoSampling, load_image, load_video

    assert ImageLimits().max_pixels == VideoSampling().max_pixels == 50_000_000
    small = write_png(tmp_path / "small.png")
    assert load_image(str(small), LoadContext(None)).size == (8, 8)  # the default limit
    with pytest.raises(InputError, match=r"over the limit of 10 pixels \(image.max_pixels\)"):
        load_image(str(small), LoadContext(None, {"max_pixels": 10}))
    frames = write_frames(tmp_path / "frames")
    assert len(load_video(str(frames), LoadContext(None, {"video_fps": 2})).frames) == 4
    with pytest.raises(InputError, match=r"frames/0.png in .* over the limit of 10 pixels \(video.max_pixels\)"):
        load_video(str(frames), LoadContext(None, {"video_fps": 2, "max_pixels": 10}))
    with pytest.raises(ValueError, match=r"image\.max_pixels must be >= 1"):
        ImageLimits(max_pixels=0)
    with pytest.raises(ValueError, match=r"video\.frames_per_second must be a finite number > 0"):
        VideoSampling(frames_per_second=float("inf"))


def test_video_loader_checks_every_frame_and_the_stream_header(tmp_path):
    from fractions import Fraction

    import av
    import numpy as np

    from vita_framework.media.video import load_video

    with pytest.raises(InputError, match=r"frame .*/2.png in .* claims 10,000,000,000 pixels.*video.max_pixels"):
        load_video(write_frames(tmp_path / "frames", bomb_at=2), fps=2.0)
    clip = tmp_path / "clip.mkv"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("ffv1", rate=Fraction(10, 1))
        stream.width, stream.height, stream.pix_fmt = 16, 8, "bgr0"
        for _ in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((8, 16, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode())
    assert len(load_video(clip).frames) == 4
    with pytest.raises(InputError, match=r"clip.mkv is 16x8 \(128 pixels a frame\), over the limit of 100 pixels"):
        load_video(clip, max_pixels=100)


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "\\udc80"}', "'prompt' is not valid UTF-8 text: character 0 is a lone surrogate"),
    ('{"prompt": "a", "video_fps": NaN}', "NaN is not valid JSON"),
    ('{"prompt": "a", "video_fps": -Infinity}', "-Infinity is not valid JSON"),
    ('{"prompt": "a", "video_fps": 1e400}', "video_fps must be a finite number > 0 (for modality 'video'); got inf"),
    ('{"prompt": "a", "video_fps": true}', "video_fps must be a finite number > 0 (for modality 'video'); got True"),
    ('{"prompt": "a", "video_fps": "10"}', "got '10'"),
    ('{"prompt": "a", "video_fps": -2}', "got -2"),
])
def test_jsonl_refuses_non_finite_numbers_booleans_and_surrogates(tmp_path, line, message):
    from vita_framework.requests_io import read_requests

    path = tmp_path / "r.jsonl"
    path.write_text(f'{{"prompt": "fine", "video_fps": 2.5}}\n{line}\n')
    with pytest.raises(InputError) as info:
        read_requests(path)
    text = str(info.value)
    assert "1 malformed line(s):\n  line 2: " in text and message in text, text


def test_jsonl_that_is_not_utf8_is_refused(tmp_path):
    from vita_framework.requests_io import read_requests

    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "café"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match=r"is not UTF-8 text \(byte 15\); save it as UTF-8"):
        read_requests(path)


@pytest.mark.parametrize("overrides,message", [
    (["video_fps=nan"], "video_fps must be a finite number > 0 (for modality 'video'); got nan"),
    (["video_fps=inf"], "got inf"),
    (["video_fps=-1"], "got -1"),
    (["video_fps=abc"], "got 'abc'"),
    (["video_fps=true"], "got True"),
    (["seed=abc"], "seed must be an integer (or null for fresh randomness); got 'abc'"),
    (["seed=1.5"], "got 1.5"),
    (["seed=true"], "got True"),
    (["seed=18446744073709551616"], "seed must be an integer"),
    (["image.max_pixels=0"], "image.max_pixels must be >= 1"),
    (["video.max_pixels=-5"], "video.max_pixels must be >= 1"),
    (["image=cat.png"], "'image' is the image modality's option group, set as image.<option>=...; got 'cat.png' "
                        "(the inputs go in images=[...])"),
    (["generation.max_new_tokens=-3"], "generation.max_new_tokens must be >= 1; got -3"),
])
def test_validation_reports_bad_values_before_model_work(overrides, message):
    problems = _problems(["+vision=internvit", "+audio=none", *overrides])
    assert any(message in p for p in problems), problems


def test_prompt_with_a_lone_surrogate_is_refused_by_validation():
    from vita_framework.config import compose
    from vita_framework.validation import run_problems

    cfg = compose(["prompt=ok"])
    cfg.prompt = "ok\udc80"  # what a non-UTF-8 command line becomes in Python (Hydra's parser stops it earlier)
    assert any("prompt is not valid UTF-8 text: character 2 is a lone surrogate" in p for p in run_problems(cfg))


def test_validation_reads_the_request_files_headers(tmp_path):
    """A bomb or an oversized frame is found before any model work, with the options and video_fps in force."""
    bomb, frames = write_png(tmp_path / "bomb.png", HUGE, HUGE), write_frames(tmp_path / "frames", bomb_at=3)
    good = write_frames(tmp_path / "good")
    base = ["+vision=internvit", "+audio=none"]
    problems = _problems([*base, f"images=[{bomb}]", f"videos=[{frames}]", "video_fps=2"])
    assert len(problems) == 2 and "claims 10,000,000,000 pixels" in problems[0] and "frames/3.png" in problems[1]
    assert "no frame rate: set video_fps" in _problems([*base, f"videos=[{good}]"])[0]
    assert "over the limit of 63 pixels (video.max_pixels)" in \
        _problems([*base, f"videos=[{good}]", "video_fps=1", "video.max_pixels=63"])[0]
    assert _problems([*base, f"videos=[{good}]", "video_fps=1", f"images=[{good / '0.png'}]"]) == []
    # a bad option is reported once, not again by the header check it would feed
    assert len(_problems([*base, f"images=[{bomb}]", "image.max_pixels=abc"])) == 1
    assert len(_problems([*base, f"videos=[{good}]", "video_fps=nan"])) == 1


def test_good_values_pass_validation():
    assert _problems(["+vision=internvit", "+audio=none", "video_fps=2.5", "seed=null", "image.max_pixels=1000"]) == []
    assert _problems(["seed=18446744073709551615", "video_fps=10", "video.max_pixels=7"]) == []


def _problems(overrides: list[str]) -> list[str]:
    """Every problem of a run, as the CLI's job finds them (composition checks the top-level keys first)."""
    from vita_framework.config import compose
    from vita_framework.errors import ValidationErrors
    from vita_framework.validation import run_problems

    try:
        cfg = compose(overrides)
    except ValidationErrors as exc:
        return exc.problems
    return run_problems(cfg)


def _payload(rows, timings=None):
    return {"rows": rows, "timings": timings or {}, "peak_memory_mb": 12.0}


def test_summary_survives_failed_rows():
    from vita_framework.cli import summary

    ok = {"tokens_in": {"total": 10, "text": 10, "image": 0}, "tokens_out": 3}
    failed = {"tokens_in": {}, "tokens_out": 0, "error": "image file 'x' does not exist"}
    timings = {"total_s": 1.5, "time_to_first_token_s": 0.1, "decode_tokens_per_s": 20.0}
    assert "tokens in: 10 (text 10); tokens out: 3; time to first token: 100 ms" in summary(_payload([ok], timings))
    assert "1 request (1 failed): no answers" in summary(_payload([failed]))
    assert "3 requests (3 failed): no answers" in summary(_payload([failed] * 3))
    assert "2 requests (1 failed); tokens in: 10; tokens out: 3; 2.0 new tokens/s" in \
        summary(_payload([failed, ok], timings))


def test_output_dir_probe(tmp_path):
    from vita_framework.cli import output_dir_problem

    assert output_dir_problem(tmp_path / "new" / "run") is None and (tmp_path / "new" / "run").is_dir()
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the probe file is gone
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is a file, not a directory" in output_dir_problem(blocker)
    assert f"lies under '{blocker}', which is a file" in output_dir_problem(blocker / "a" / "b")
    assert "cannot be written" in output_dir_problem("/proc/vita-x", "hydra.sweep.dir")
    assert "hydra.sweep.dir=<dir>" in output_dir_problem("/proc/vita-x", "hydra.sweep.dir")
    locked = _locked_dir(tmp_path / "locked")
    try:
        assert "cannot be written" in output_dir_problem(locked)
    finally:
        _unlock(locked)


def test_pickle_checkpoint_refusals_are_checkpoint_errors(tmp_path):
    import argparse

    import torch

    from vita_framework.weights import Bundle

    def bundle(name: str, content: Any) -> Bundle:
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text("{}")
        if isinstance(content, bytes):
            (path / "pytorch_model.bin").write_bytes(content)
        else:
            torch.save(content, path / "pytorch_model.bin")
        return Bundle(path, allow_pickle=True)

    with pytest.raises(CheckpointError, match=r"weights_only=True: it holds an object of type argparse.Namespace"):
        bundle("objects", {"w": torch.zeros(1), "args": argparse.Namespace()}).has_prefix("w")
    with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint"):
        bundle("junk", b"not a checkpoint" * 8).has_prefix("w")
    with pytest.raises(CheckpointError, match="not a flat state dict"):
        bundle("nested", {"model": {"w": torch.zeros(1)}}).has_prefix("w")
    assert bundle("flat", {"w": torch.zeros(1)}).load("w", strip=False)["w"].shape == (1,)
