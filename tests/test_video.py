"""Video input (frame sampling, decoding) and slow-fast pooling, against the case-4 golden data."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import GOLDEN, golden_tensors
from vita_framework.errors import FusionError, InputError
from vita_framework.media.video import load_video, sample_indices
from vita_plugins.fusion.slow_fast import SlowFastOptions, build_slow_fast, vita_register_fusion_strategies

CASE = GOLDEN / "case4_video_sf"


@pytest.fixture(scope="module")
def golden_frames() -> np.ndarray:
    data = np.load(CASE / "video_frames_u8.npz")
    assert float(data["fps"]) == 10.0
    return data["frames"]  # [50, 72, 96, 3] uint8


def _write_video(path, frames, codec: str, pix_fmt: str) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(10, 1))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        out.start_encoding()  # writes the header even when there are no frames
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def _write_frame_dir(path, frames) -> None:
    from PIL import Image

    path.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(path / f"frame_{i:04d}.png")


# -- sampling -------------------------------------------------------------------------------------------
def test_sampler_one_frame_per_second():
    assert sample_indices(50, 10.0) == [0, 10, 20, 30, 40]  # golden case 4
    assert sample_indices(50, 29.97) == [0, 0, 0, 30]  # stride round(29.97) = 30, 2 candidates
    assert sample_indices(9, 2.5) == [0, 2, 4, 6, 8]  # round(2.5) = 2: Python rounds half to even


def test_sampler_truncates_to_max_frames():
    # 20 candidates (0, 10, ..., 190); linspace(0, 19, 16) = i * 19/15 truncated:
    # 0, 1.27, 2.53, 3.8, 5.07, 6.33, 7.6, 8.87, 10.13, 11.4, 12.67, 13.93, 15.2, 16.47, 17.73, 19
    positions = [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 19]
    assert sample_indices(200, 10.0) == [10 * p for p in positions]


def test_sampler_repeats_up_to_min_frames():
    # 2 candidates (0, 10); linspace(0, 1, 4) = 0, 0.33, 0.67, 1 -> positions 0, 0, 0, 1
    assert sample_indices(20, 10.0) == [0, 0, 0, 10]
    assert sample_indices(3, 10.0) == [0, 0, 0, 0]  # one candidate
    assert sample_indices(5, 0.2) == [0, 1, 2, 3, 4]  # stride is at least 1


# -- decoding -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["frames", "png.mov", "ffv1.mkv"])
def test_load_video_is_bit_exact(tmp_path, golden_frames, kind):
    if kind == "frames":
        source = tmp_path / "frames"
        _write_frame_dir(source, golden_frames)
        clip = load_video(source, fps=10.0)
    else:
        codec, suffix = kind.split(".")
        source = tmp_path / f"clip.{suffix}"
        _write_video(source, golden_frames, codec, "rgb24" if codec == "png" else "bgr0")
        clip = load_video(source)
    assert clip.indices == [0, 10, 20, 30, 40]
    assert (clip.fps, clip.total_frames) == (10.0, 50)
    for i, frame in zip(clip.indices, clip.frames):
        assert frame.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(frame), golden_frames[i])


def test_bad_inputs_name_the_path(tmp_path, golden_frames):
    from PIL import Image

    def fails(source, match, **kwargs):
        with pytest.raises(InputError, match=match) as info:
            load_video(source, **kwargs)
        assert str(source) in str(info.value)

    fails(tmp_path / "missing.mp4", "does not exist")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 not a video" * 64)
    fails(corrupt, "cannot read video")
    one = tmp_path / "one.mkv"
    _write_video(one, golden_frames[:1], "ffv1", "bgr0")
    empty = tmp_path / "empty.mkv"  # header intact, the only frame cut off
    empty.write_bytes(one.read_bytes()[:-100])
    fails(empty, "no decodable frames")
    header_only = tmp_path / "header_only.mkv"
    _write_video(header_only, golden_frames[:0], "ffv1", "bgr0")
    fails(header_only, "no decodable frames")
    no_images = tmp_path / "no_images"
    no_images.mkdir()
    (no_images / "notes.txt").write_text("x")
    fails(no_images, "holds no images", fps=10.0)
    mixed = tmp_path / "mixed"
    _write_frame_dir(mixed, golden_frames[:3])
    Image.fromarray(golden_frames[0][:, :64]).save(mixed / "frame_0001.png")
    fails(mixed, r"frame_0000.png is 96x72 but frame_0001.png is 64x72", fps=10.0)
    fails(mixed, r"set video_fps=<frames per second>")
    fails(mixed, "fps must be > 0", fps=0)


# -- slow-fast pooling ----------------------------------------------------------------------------------
def test_slow_fast_matches_reference_pooling():
    golden = golden_tensors("case4_video_sf")
    features = list(golden["image_features"])  # 5 x [256, 64], after the projector
    fusion = build_slow_fast(SlowFastOptions(), None)
    pooled = fusion.reduce("image", features, [1] * 5)
    assert [int(p.shape[0]) for p in pooled] == [144, 49, 49, 49, 144]
    diff = (torch.cat(pooled) - golden["image_features_sf_concat"]).abs().max().item()
    print(f"slow-fast max abs diff vs golden: {diff:.3g}")
    assert diff <= 1e-6


def test_slow_fast_groups_and_order():
    golden = golden_tensors("case4_video_sf")
    frames = list(golden["image_features"])
    tiles = [torch.randn(256, 64), torch.randn(256, 64)]
    fusion = build_slow_fast(SlowFastOptions(), None)
    out = fusion.reduce("image", tiles + frames + frames[:2], [0, 0, 1, 1, 1, 1, 1, 2, 2])
    assert out[0] is tiles[0] and out[1] is tiles[1]
    assert [int(o.shape[0]) for o in out] == [256, 256, 144, 49, 49, 49, 144, 144, 49]
    assert (torch.cat(out[2:7]) - golden["image_features_sf_concat"]).abs().max().item() <= 1e-6
    assert torch.equal(out[7], out[2]) and torch.equal(out[8], out[3])  # the pattern restarts for video 2
    assert [int(o.shape[0]) for o in fusion.reduce("audio", tiles, [0, 0])] == [256, 256]
    with pytest.raises(FusionError, match="square token grid"):
        fusion.reduce("image", [torch.randn(200, 64)], [1])


def test_slow_fast_registers():
    registered = {}
    vita_register_fusion_strategies(lambda name, factory, **kw: registered.setdefault(name, (factory, kw)))
    assert registered["slow_fast"][1]["schema"] is SlowFastOptions
