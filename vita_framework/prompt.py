"""Chat templates, the user turn's layout, and placeholder expansion (spec §2), for any registered modality.

The user turn is laid out with one *stream marker* per segment (``<image>`` per tile or frame, ``<audio>`` per
clip), the chat template renders it, and the rendered text is split on the stream markers with each text chunk
tokenised on its own, once (so BPE merges never cross a placeholder, as in the reference). After encoding, each
marker becomes exactly as many placeholder ids as its segment has feature rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, InputError
from .modalities import Modality, ModalityTable

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
        system = self.system_by_modality.get(modality, self.system_by_modality["lang"])
        return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user_text}<|im_end|>\n"
                "<|im_start|>assistant\n")


@dataclass(frozen=True)
class TokenizerChatTemplate:
    """The tokenizer's own chat template (``apply_chat_template``); markers stay plain text in the content."""

    name: str = "tokenizer"

    def render(self, user_text: str, modality: str, tokenizer: Any = None) -> str:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
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
        raise ConfigError(f"unknown template '{name}'; available: {', '.join(sorted(TEMPLATES))}") from None


def layout_user_text(question: str, segments: dict[str, list[int]], table: ModalityTable
                     ) -> tuple[str, dict[str, list[tuple[str, int]]]]:
    """The user turn with one stream marker per segment, and each stream's items in prompt order.

    ``segments`` maps each present modality to its segments per item. Without markers in ``question``, as the
    reference demo: the items of "before" modalities (image tiles, then video frames), ``\n``, the question, then
    the items of "after" modalities (audio clips). With markers the user placed (one per item, e.g. ``<image>``,
    ``<video>``, ``<audio>``), each is checked against the items given and expanded in place.
    """
    stream_marker = table.stream_markers()
    order: dict[str, list[tuple[str, int]]] = {}

    def expansion(modality: Modality, index: int) -> str:
        order.setdefault(modality.stream, []).append((modality.name, index))
        return stream_marker[modality.stream] * segments[modality.name][index]

    found = {m.name: question.count(m.marker) for m in table}
    if not any(found.values()):
        def run(position: str) -> str:
            return "".join(expansion(m, i) for m in table if m.position == position
                           for i in range(len(segments.get(m.name, []))))

        before = run("before")
        text = (before + "\n" + question) if before else question
        return text + run("after"), order
    for m in table:
        given = len(segments.get(m.name, []))
        if found[m.name] != given:
            raise InputError(
                f"the prompt has {found[m.name]} {m.marker} marker(s) but {given} {m.request_key} were given; "
                f"use one {m.marker} per item, or none and let the template place them")
    by_marker = {m.marker: m for m in table}
    counters: dict[str, int] = {}

    def expand(match: re.Match) -> str:
        modality = by_marker[match.group(0)]
        index = counters.get(modality.name, 0)
        counters[modality.name] = index + 1
        return expansion(modality, index)

    return re.sub(_alternation(by_marker), expand, question), order


def system_prompt_key(present: list[Modality]) -> str:
    """The template's system prompt for the present modalities: the highest-priority choice, else ``lang``."""
    choosing = [m for m in present if m.system_prompt]
    return max(choosing, key=lambda m: m.system_priority).system_prompt if choosing else "lang"


class PromptTokens:
    """A rendered prompt tokenised once: text chunks as ids, and one slot per stream marker, in order."""

    def __init__(self, tokenizer: Any, text: str, stream_markers: dict[str, str]) -> None:
        stream_of = {marker: stream for stream, marker in stream_markers.items()}
        self.parts: list[list[int] | str] = []
        for chunk in re.split(f"({_alternation(stream_of)})", text):
            if chunk in stream_of:
                self.parts.append(stream_of[chunk])
            elif chunk:
                self.parts.append(list(tokenizer(chunk, add_special_tokens=False).input_ids))

    @property
    def text_tokens(self) -> int:
        return sum(len(p) for p in self.parts if isinstance(p, list))

    def slots(self, stream: str) -> int:
        return sum(1 for p in self.parts if p == stream)

    def ids(self, rows: dict[str, list[int]], placeholder_ids: dict[str, int]) -> list[int]:
        """Ids with the k-th marker of each stream expanded to ``rows[stream][k]`` placeholder ids."""
        for stream in placeholder_ids:
            if self.slots(stream) != len(rows.get(stream, [])):
                raise InputError(f"the prompt has {self.slots(stream)} {stream} marker(s) but "
                                 f"{len(rows.get(stream, []))} {stream} segments were encoded")
        counters = dict.fromkeys(placeholder_ids, 0)
        ids: list[int] = []
        for part in self.parts:
            if isinstance(part, list):
                ids.extend(part)
            else:
                ids.extend([placeholder_ids[part]] * rows[part][counters[part]])
                counters[part] += 1
        return ids


def _alternation(markers: Any) -> str:
    """A regex matching any of ``markers`` (longest first, so no marker shadows a longer one)."""
    return "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
