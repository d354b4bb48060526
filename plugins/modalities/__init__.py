"""The built-in modalities: image, video and audio, registered like any plugin's.

VITA-1.5 places every image tile and video frame before the question and the audio clips after it, picks the
system prompt by what it sees (video over image), splices video frames as image tokens, and asks an empty text
question when a spoken one is given. Those are the entries' fields below; the core reads them, it does not
know them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vita_framework.hookspecs import hookimpl
from vita_framework.modalities import LoadContext, Modality

IMAGE_PLACEHOLDER = -200
AUDIO_PLACEHOLDER = -500
#: pixels of one image or frame above which the file is refused from its header (vita_framework.media.image)
MAX_PIXELS = 50_000_000


def _check_max_pixels(key: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{key}.max_pixels must be >= 1; got {value}")


def check_image(source: Any, options: dict[str, Any]) -> None:
    from vita_framework.media.image import check_image as check

    check(source, max_pixels=int(options.get("max_pixels") or MAX_PIXELS))


def check_video(source: Any, options: dict[str, Any]) -> None:
    from vita_framework.media.video import check_video as check

    check(source, fps=options.get("video_fps"), max_pixels=int(options.get("max_pixels") or MAX_PIXELS))


@dataclass
class ImageLimits:
    """The ``image`` config node: an image whose header claims more than ``max_pixels`` is refused unread."""

    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        _check_max_pixels("image", self.max_pixels)


@dataclass
class VideoSampling:
    """The ``video`` config node: frame sampling as the reference (1 frame/s, at most 16, at least 4), and the
    pixel limit of one frame (a frame directory's images, a video stream), checked from the headers."""

    frames_per_second: float = 1.0
    max_frames: int = 16
    min_frames: int = 4
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"video.min_frames={self.min_frames} and video.max_frames={self.max_frames} must "
                             "satisfy 1 <= min_frames <= max_frames")
        if not (self.frames_per_second > 0 and math.isfinite(self.frames_per_second)):
            raise ValueError(f"video.frames_per_second must be a finite number > 0; got {self.frames_per_second}")
        _check_max_pixels("video", self.max_pixels)


# -- loaders: a path (or an in-memory object) -> the item `prepare` takes ------------------------------------
def load_image(source: Any, context: LoadContext) -> Any:
    from vita_framework.media.image import load_image as read

    return read(source, max_pixels=int(context.options.get("max_pixels") or MAX_PIXELS))


def load_video(source: Any, context: LoadContext) -> Any:
    from vita_framework.errors import InputError
    from vita_framework.media.video import load_video as read

    opts = context.options
    sampling = {k: opts[k] for k in ("frames_per_second", "max_frames", "min_frames") if opts.get(k) is not None}
    if not 1 <= int(sampling.get("min_frames", 1)) <= int(sampling.get("max_frames", 1)):
        raise InputError("video.min_frames and video.max_frames must satisfy 1 <= min_frames <= max_frames")
    return read(source, fps=opts.get("video_fps"), max_pixels=int(opts.get("max_pixels") or MAX_PIXELS), **sampling)


def load_audio(source: Any, context: LoadContext) -> Any:
    from vita_framework.media.audio import load_audio as read

    encoder = context.encoder
    return read(source, target_rate=int(encoder.sample_rate), max_seconds=encoder.max_seconds)


# -- prepare: items -> the encoder's batch and segments per item ----------------------------------------------
def prepare_images(encoder: Any, images: list[Any]) -> Any:
    from vita_framework.contracts import EncoderInput

    batch = encoder.preprocess(images)
    return EncoderInput(batch, list(batch.tiles_per_item))


def prepare_videos(encoder: Any, clips: list[Any]) -> Any:
    from vita_framework.contracts import EncoderInput

    frames = [frame for clip in clips for frame in clip.frames]
    return EncoderInput(encoder.preprocess_frames(frames), [len(clip.frames) for clip in clips])


def prepare_audios(encoder: Any, waves: list[Any]) -> Any:
    from vita_framework.contracts import EncoderInput

    return EncoderInput(encoder.preprocess(waves, int(encoder.sample_rate)), [1] * len(waves))


@hookimpl
def vita_register_modalities(register):
    register(Modality(
        name="image", marker="<image>", request_key="images", encoder="vision", load=load_image,
        prepare=prepare_images, placeholder_id=IMAGE_PLACEHOLDER, projected=True, system_prompt="image",
        system_priority=1, position="before", options_key="image", options_schema=ImageLimits,
        check=check_image,
        budget_hint="fewer tiles (vision.max_tiles=...)",
        description="image files or PIL images; tiled by the vision encoder, one <image> run per tile"))
    register(Modality(
        name="video", marker="<video>", request_key="videos", encoder="vision", load=load_video,
        prepare=prepare_videos, placeholder_id=IMAGE_PLACEHOLDER, placeholder="image", projected=True,
        system_prompt="video", system_priority=2, position="before", grouped=True, options_key="video",
        options_schema=VideoSampling, request_options=("video_fps",), positive_request_options=("video_fps",),
        check=check_video,
        budget_hint="fewer video frames (video.max_frames=...) or fusion=slow_fast",
        description="video files (PyAV) or frame directories (video_fps=); sampled frames as image tokens"))
    register(Modality(
        name="audio", marker="<audio>", request_key="audios", encoder="audio", load=load_audio,
        prepare=prepare_audios, placeholder_id=AUDIO_PLACEHOLDER, position="after", replaces_question=True,
        budget_hint="shorter audio",
        description="audio files or (array, sample_rate) pairs; one <audio> run per clip, after the question"))
