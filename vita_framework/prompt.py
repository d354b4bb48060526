"""Chat templates and placeholder expansion (spec §2).

The prompt is rendered as text with ``<image>`` / ``<audio>`` markers, split on those markers, each text
chunk tokenised on its own (so BPE merges never cross a placeholder, as in the reference), and each marker
expanded to exactly as many placeholder ids as its item has feature rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import InputError

IMAGE_MARKER = "<image>"
AUDIO_MARKER = "<audio>"
VIDEO_MARKER = "<video>"
IMAGE_PLACEHOLDER = -200
AUDIO_PLACEHOLDER = -500
PLACEHOLDER_IDS = {"image": IMAGE_PLACEHOLDER, "audio": AUDIO_PLACEHOLDER}

_SYSTEM_BASE = (
    "You are an AI robot and your name is VITA. \n"
    "- You are a multimodal large language model developed by the open source community. "
    "Your aim is to be helpful, honest and harmless. \n"
    "- You support the ability to communicate fluently and answer user questions in multiple languages of "
    "the user's choice. \n"
    "- If the user corrects the wrong answer you generated, you will apologize and discuss the correct answer "
    "with the user."
)


def _seeing(what: str, other: str) -> str:
    return (f" \n- You must answer the question strictly according to the content of the {what} given by the "
            f"user, and it is strictly forbidden to answer the question without the content of the {what}. "
            f"Please note that you are seeing the {what}, not the {other}.")


@dataclass(frozen=True)
class ChatTemplate:
    """A Qwen-style template whose system prompt depends on the request's modality."""

    name: str
    system_by_modality: dict[str, str]

    def render(self, user_text: str, modality: str, tokenizer: Any = None) -> str:
        system = self.system_by_modality[modality]
        return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user_text}<|im_end|>\n"
                "<|im_start|>assistant\n")


@dataclass(frozen=True)
class TokenizerChatTemplate:
    """The tokenizer's own chat template (``apply_chat_template``); markers stay plain text in the content."""

    name: str = "tokenizer"

    def render(self, user_text: str, modality: str, tokenizer: Any = None) -> str:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            from .errors import ConfigError

            raise ConfigError("template=tokenizer needs a tokenizer with a chat_template; "
                              "use template=qwen2p5_instruct or a tokenizer that ships one")
        return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)


TEMPLATES: dict[str, ChatTemplate | TokenizerChatTemplate] = {
    "qwen2p5_instruct": ChatTemplate("qwen2p5_instruct", {
        "image": _SYSTEM_BASE + _seeing("image", "video"),
        "video": _SYSTEM_BASE + _seeing("video", "image"),
        "lang": _SYSTEM_BASE,
    }),
    "qwen_plain": ChatTemplate("qwen_plain", dict.fromkeys(("image", "video", "lang"), "You are a helpful assistant.")),
    "tokenizer": TokenizerChatTemplate(),
}


def get_template(name: str) -> ChatTemplate | TokenizerChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        from .errors import ConfigError

        raise ConfigError(f"unknown template '{name}'; available: {', '.join(sorted(TEMPLATES))}") from None


def user_text(question: str, image_tiles: list[int], video_frames: list[int], n_audios: int) -> str:
    """The user turn with one marker per tile / frame / clip, as the reference demo places them.

    Without markers in ``question``: all image tiles, then all video frames, then ``\\n`` + question, then
    one ``<audio>`` per clip. With markers the user placed: one ``<image>`` per image, ``<video>`` per video
    and ``<audio>`` per clip, each checked against the inputs given and expanded in place.
    """
    counts = {IMAGE_MARKER: question.count(IMAGE_MARKER), VIDEO_MARKER: question.count(VIDEO_MARKER),
              AUDIO_MARKER: question.count(AUDIO_MARKER)}
    if not any(counts.values()):
        visual = IMAGE_MARKER * (sum(image_tiles) + sum(video_frames))
        text = (visual + "\n" + question) if visual else question
        return text + AUDIO_MARKER * n_audios
    expected = {IMAGE_MARKER: len(image_tiles), VIDEO_MARKER: len(video_frames), AUDIO_MARKER: n_audios}
    for marker, found in counts.items():
        if found != expected[marker]:
            noun = {IMAGE_MARKER: "images", VIDEO_MARKER: "videos", AUDIO_MARKER: "audios"}[marker]
            raise InputError(
                f"the prompt has {found} {marker} marker(s) but {expected[marker]} {noun} were given; "
                f"use one {marker} per item, or none and let the template place them"
            )
    tiles = iter(image_tiles)
    frames = iter(video_frames)
    text = re.sub(re.escape(IMAGE_MARKER), lambda _: IMAGE_MARKER * next(tiles), question)
    return re.sub(re.escape(VIDEO_MARKER), lambda _: IMAGE_MARKER * next(frames), text)


def modality_of(has_images: bool, has_videos: bool) -> str:
    if has_videos:
        return "video"
    return "image" if has_images else "lang"


def tokenize_with_placeholders(tokenizer, prompt: str, image_tokens: list[int], audio_tokens: list[int]) -> list[int]:
    """Token ids with every marker expanded to N placeholder ids (N from the item's feature rows).

    ``image_tokens`` has one entry per ``<image>`` marker in order (a tile or a frame), ``audio_tokens`` one
    per ``<audio>``.
    """
    ids: list[int] = []
    images, audios = iter(image_tokens), iter(audio_tokens)
    n_img = prompt.count(IMAGE_MARKER)
    n_aud = prompt.count(AUDIO_MARKER)
    if n_img != len(image_tokens) or n_aud != len(audio_tokens):
        raise InputError(
            f"the prompt has {n_img} <image> and {n_aud} <audio> markers but {len(image_tokens)} image tiles "
            f"and {len(audio_tokens)} audio clips were encoded"
        )
    for chunk in re.split(r"(<audio>|<image>)", prompt):
        if chunk == IMAGE_MARKER:
            ids.extend([IMAGE_PLACEHOLDER] * next(images))
        elif chunk == AUDIO_MARKER:
            ids.extend([AUDIO_PLACEHOLDER] * next(audios))
        elif chunk:
            ids.extend(tokenizer(chunk, add_special_tokens=False).input_ids)
    return ids
