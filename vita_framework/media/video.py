"""Video input: pick frames the way VITA-1.5's demo does, and decode only those.

The reference (``video_audio_demo.py``, ``_get_rawvideo_dec``) reads the whole clip with decord and keeps
about one frame per second, at most 16 and at least 4. :func:`sample_indices` reproduces its choice of
frame numbers exactly, so a video gives the same frames, prompt length and features as the reference.
:func:`load_video` accepts any container PyAV decodes, or a directory of frame images (then the frame rate
must be given, as ``video_fps`` in the config, since images carry no timing). A frame (or a video stream)
larger than ``max_pixels`` (``video.max_pixels``) is refused from its header, before anything is decoded.

PyAV, numpy and Pillow are imported inside the functions, so importing the framework stays fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .image import DEFAULT_MAX_PIXELS

#: suffixes (lower case) of the files a frame directory may hold; other files are ignored
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class VideoClip:
    """The sampled frames (RGB ``PIL.Image``), their frame numbers, and the clip's rate and length."""

    frames: list[Any]
    indices: list[int]
    fps: float
    total_frames: int


def sample_indices(num_frames: int, fps: float, *, frames_per_second: float = 1.0, max_frames: int = 16,
                   min_frames: int = 4) -> list[int]:
    """Frame numbers to keep out of ``num_frames`` frames at ``fps``, exactly as the reference sampler.

    Candidates are every ``t_stride``-th frame from 0 to ``num_frames - 1`` inclusive, with
    ``t_stride = round(fps / frames_per_second)`` (Python's half-to-even ``round``, as the reference; at
    least 1 so that very low rates keep every frame instead of failing). With more than ``max_frames``
    candidates, ``np.linspace(0, n - 1, max_frames, dtype=int)`` (truncating) positions among the ``n``
    candidates are kept; with fewer than ``min_frames``, ``np.linspace(0, n - 1, min_frames, dtype=int)``
    positions, so frames repeat (2 candidates -> positions 0, 0, 0, 1).
    """
    if num_frames < 1:
        raise InputError(f"a video needs at least one frame; got {num_frames}")
    if fps <= 0 or frames_per_second <= 0:
        raise InputError(f"frame rates must be > 0; got fps={fps}, frames_per_second={frames_per_second}")
    if max_frames < 1 or min_frames < 1:
        raise InputError(f"max_frames and min_frames must be >= 1; got {max_frames} and {min_frames}")
    import numpy as np

    t_stride = max(1, round(float(fps) / frames_per_second))
    candidates = list(range(0, num_frames, t_stride))
    n = len(candidates)
    if n > max_frames:
        return [candidates[int(i)] for i in np.linspace(0, n - 1, num=max_frames, dtype=int)]
    if n < min_frames:
        return [candidates[int(i)] for i in np.linspace(0, n - 1, num=min_frames, dtype=int)]
    return candidates


def load_video(source: str | Path, *, fps: float | None = None, frames_per_second: float = 1.0,
               max_frames: int = 16, min_frames: int = 4, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> VideoClip:
    """Sample and decode the frames of a video file or a directory of frame images.

    For a file, the rate is the stream's average rate unless ``fps`` overrides it; frames are counted by
    decoding (mkv and nut headers report 0 frames). For a directory, images are taken in natural name
    order (``2.png`` before ``10.png``; zero-padded names sort the same either way), all must have one
    size, and ``fps`` is required. Only the sampled frames are converted to RGB images. Every frame's (or the
    stream's) width x height is checked against ``max_pixels`` (None: Pillow's own limit only) from the headers.
    """
    path = _checked_path(source, fps)
    sampling = {"frames_per_second": frames_per_second, "max_frames": max_frames, "min_frames": min_frames}
    if path.is_dir():
        return _load_frame_dir(path, fps, sampling, max_pixels)
    return _load_video_file(path, fps, sampling, max_pixels)


def check_video(source: str | Path, *, fps: float | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """The checks :func:`load_video` makes before decoding anything (the rate; the frames' or the stream's sizes,
    from the headers), alone: cheap enough to run on a request before any model work."""
    path = _checked_path(source, fps)
    if path.is_dir():
        _frame_files(path, fps, max_pixels)
    else:
        _stream_header(path, fps, max_pixels)


def _checked_path(source: str | Path, fps: float | None) -> Path:
    path = Path(source)
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf")):
        raise InputError(f"video {path}: fps must be > 0; got {fps} (set video_fps=<frames per second>)")
    if not path.exists():
        raise InputError(f"video {path} does not exist")
    return path


def _natural_key(p: Path) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", p.name)]


def _frame_files(path: Path, fps: float | None, max_pixels: int | None) -> list[Path]:
    """A frame directory's images in order, each one's header read: readable, within the limit, one size."""
    from PIL import UnidentifiedImageError

    from .image import open_image

    files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)
    if not files:
        raise InputError(f"frame directory {path} holds no images ({', '.join(FRAME_SUFFIXES)})")
    if fps is None:
        raise InputError(f"frame directory {path} has no frame rate: set video_fps=<frames per second>")
    sizes = []
    for f in files:  # Image.open reads only the header, so this is cheap even for many frames
        try:
            with open_image(f, max_pixels=max_pixels, setting="video.max_pixels", what=f"frame {f} in {path}") as im:
                sizes.append(im.size)
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"frame {f} in {path} is not a readable image: {exc}") from None
        if sizes[-1] != sizes[0]:
            raise InputError(f"frames in {path} differ in size: {files[0].name} is {sizes[0][0]}x{sizes[0][1]} "
                             f"but {f.name} is {sizes[-1][0]}x{sizes[-1][1]}; all frames must have one size")
    return files


def _load_frame_dir(path: Path, fps: float | None, sampling: dict[str, Any], max_pixels: int | None) -> VideoClip:
    from PIL import UnidentifiedImageError

    from .image import open_image

    files = _frame_files(path, fps, max_pixels)
    indices = sample_indices(len(files), fps, **sampling)
    loaded: dict[int, Any] = {}
    for i in sorted(set(indices)):
        try:
            with open_image(files[i], max_pixels=max_pixels, setting="video.max_pixels") as im:
                loaded[i] = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"frame {files[i]} in {path} cannot be decoded: {exc}") from None
    return VideoClip([loaded[i] for i in indices], indices, float(fps), len(files))


def _stream_header(path: Path, fps: float | None, max_pixels: int | None) -> tuple[float, int]:
    """The first video stream's rate (``fps`` when given) and frame-count hint; its frame size checked."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            hint = int(stream.frames or 0)
            width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    except av.error.EOFError:
        raise InputError(f"video {path} has no decodable frames (the file ends before the first one)") from None
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"cannot read video {path}: {exc}") from None
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(f"video {path} is {width}x{height} ({width * height:,} pixels a frame), over the limit "
                         f"of {max_pixels:,} pixels (video.max_pixels); downscale it, or raise the limit with "
                         "video.max_pixels=<pixels> if you trust the file")
    if fps is None:
        if not rate or float(rate) <= 0:
            raise InputError(f"video {path} has no frame rate in its header: set video_fps=<frames per second>")
        fps = float(rate)
    return fps, hint


def _load_video_file(path: Path, fps: float | None, sampling: dict[str, Any], max_pixels: int | None) -> VideoClip:
    """Decode once when the header's frame count is right (picks are grabbed on the way), else twice."""
    import av

    fps, hint = _stream_header(path, fps, max_pixels)
    try:
        guess = sample_indices(hint, fps, **sampling) if hint > 0 else []
        total, grabbed = _scan(path, set(guess))
        if total == 0:
            raise InputError(f"video {path} has no decodable frames")
        indices = sample_indices(total, fps, **sampling)
        if not set(indices) <= grabbed.keys():
            _, grabbed = _scan(path, set(indices))
    except av.error.EOFError:
        raise InputError(f"video {path} has no decodable frames (the file ends before the first one)") from None
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"cannot read video {path}: {exc}") from None
    return VideoClip([grabbed[i] for i in indices], indices, fps, total)


def _scan(path: Path, wanted: set[int]) -> tuple[int, dict[int, Any]]:
    """Decode every frame of the first video stream; count them and convert those numbered in ``wanted``."""
    import av

    grabbed: dict[int, Any] = {}
    total = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if total in wanted:
                grabbed[total] = frame.to_image()  # rgb24 conversion -> PIL RGB
            total += 1
    return total, grabbed
