"""Bad input checked in-process, where it is cheap: the loaders' pixel limits, the JSONL checks, validation before
model work, the summary of failed rows, the output-directory probe and pickle-checkpoint refusals (the CLI table of
the same promise, one subprocess per case, is test_bad_inputs)."""

from __future__ import annotations

from typing import Any

import pytest
from bad_files import HUGE, locked_dir, unlock, write_frames, write_png

from vita_framework.errors import CheckpointError, InputError


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
    locked = locked_dir(tmp_path / "locked")
    try:
        assert "cannot be written" in output_dir_problem(locked)
    finally:
        unlock(locked)


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
