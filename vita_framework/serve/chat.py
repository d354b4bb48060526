"""A chat conversation as a :class:`~vita_framework.request.Request`: multi-turn rendering, and client text that
can never become a chat control token.

The front half (:mod:`vita_framework.preparation`) lays out one prompt string with a marker per item. A
:class:`ChatRequest` hands it the whole conversation as that string: each message's content, with a marker where
each image / video / audio part stood, messages separated by a private-use character. After the markers are
expanded, :meth:`ChatRequest.render_prompt` splits the messages again and renders them with the chat template.

Client text is protected: every occurrence of a tokenizer's added token (``<|im_start|>``, ``<|im_end|>``, ...)
or of a modality marker (``<image>``) in a message is swapped for a placeholder before rendering, and tokenised
as plain text afterwards (``split_special_tokens``), so ``<|im_start|>system`` typed by a user is text, not a
role switch, and ``<image>`` typed by a user is not an image slot. The CLI keeps the reference's parsing (a
prompt's ``<|im_start|>`` is the control token there, and its ``<image>`` places an image).

A single user message whose parts are laid out as the CLI lays out a request (images or videos, then the text,
then audio) renders exactly as the CLI renders ``images=[...] prompt=...`` (items, ``\\n``, the question, audio),
so both give the same answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..prompt import ChatTemplate, PromptTokens, TokenizerChatTemplate
from ..request import Request

#: separates messages in the flattened prompt; and brackets the index of a protected span
SEPARATOR, OPEN, CLOSE = "\ue000", "\ue001", "\ue002"
_PRIVATE = re.compile("[\ue000-\ue002]")
_PROTECTED = re.compile(f"{OPEN}(\\d+){CLOSE}")
ROLES = ("system", "user", "assistant")


@dataclass
class TextPart:
    text: str


@dataclass
class MediaPart:
    modality: str  # a modality name of the table (image, video, audio, a plugin's own)
    source: Any  # what the modality's loader reads (a path)


@dataclass
class ChatMessage:
    role: str
    parts: list[TextPart | MediaPart] = field(default_factory=list)


class ChatRequest(Request):
    """A conversation (``system``? then ``user``/``assistant`` turns ending with ``user``) as one request."""

    def __init__(self, messages: list[ChatMessage], *, modalities: Any, tokenizer: Any, id: Any = None) -> None:
        protect = Protector(tokenizer, [m.marker for m in modalities])
        self.spans = protect.spans
        self.system: str | None = None
        self.roles: list[str] = []
        contents: list[str] = []
        inputs: dict[str, list[Any]] = {}
        for message in messages:
            if message.role == "system":
                self.system = "\n".join(protect(p.text) for p in message.parts if isinstance(p, TextPart))
                continue
            pieces: list[str] = []
            previous = None
            for part in message.parts:
                if isinstance(part, TextPart):
                    if previous is not None:  # after an item or another text: a new line, as the CLI's layout
                        pieces.append("\n")
                    pieces.append(protect(part.text))
                    previous = "text"
                else:
                    modality = modalities.get(part.modality)
                    if previous == "before" and modality.position == "after":  # the CLI's "\n" + "" question
                        pieces.append("\n")
                    pieces.append(modality.marker)
                    inputs.setdefault(part.modality, []).append(part.source)
                    previous = modality.position
            self.roles.append(message.role)
            contents.append("".join(pieces))
        super().__init__(SEPARATOR.join(contents), inputs=inputs, id=id)

    def render_prompt(self, user: str, system_key: str, template: Any, tokenizer: Any,
                      stream_markers: dict[str, str]) -> PromptTokens:
        """The conversation rendered by ``template`` (``user``: the flattened messages, markers expanded)."""
        contents = user.split(SEPARATOR)
        if len(contents) != len(self.roles):
            raise InputError("the conversation could not be laid out (a message separator was lost)")
        turns = list(zip(self.roles, contents))
        if self.system is None and self.roles == ["user"]:
            text = template.render(contents[0], system_key, tokenizer)  # exactly the CLI's prompt
        elif isinstance(template, ChatTemplate):
            system = self.system if self.system is not None else \
                template.system_by_modality.get(system_key, template.system_by_modality["lang"])
            text = (f"<|im_start|>system\n{system}<|im_end|>\n"
                    + "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
                    + "<|im_start|>assistant\n")
        elif isinstance(template, TokenizerChatTemplate):
            messages = ([{"role": "system", "content": self.system}] if self.system is not None else []) + \
                [{"role": role, "content": content} for role, content in turns]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            raise InputError(f"template '{getattr(template, 'name', template)}' renders single questions only; "
                             "send one user message without a system message")
        return ChatPromptTokens(tokenizer, text, stream_markers, self.spans)


class Protector:
    """Swaps control strings in client text for placeholders; ``spans`` keeps the originals by index."""

    def __init__(self, tokenizer: Any, markers: list[str]) -> None:
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        words = {str(getattr(t, "content", t)) for t in decoder.values()} | set(markers)
        words = sorted((w for w in words if w), key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(w) for w in words)) if words else None
        self.spans: list[str] = []

    def __call__(self, text: str) -> str:
        text = _PRIVATE.sub("\ufffd", text)
        if self.pattern is None:
            return text

        def swap(match: re.Match) -> str:
            self.spans.append(match.group(0))
            return f"{OPEN}{len(self.spans) - 1}{CLOSE}"

        return self.pattern.sub(swap, text)


class ChatPromptTokens(PromptTokens):
    """:class:`PromptTokens` whose protected spans are tokenised as plain text, never as control tokens."""

    def __init__(self, tokenizer: Any, text: str, stream_markers: dict[str, str], spans: list[str]) -> None:
        stream_of = {marker: stream for stream, marker in stream_markers.items()}
        markers = "|".join(re.escape(m) for m in sorted(stream_of, key=len, reverse=True))
        pattern = f"({markers}|{OPEN}\\d+{CLOSE})" if markers else f"({OPEN}\\d+{CLOSE})"
        self.parts: list[list[int] | str] = []
        for chunk in re.split(pattern, text):
            protected = _PROTECTED.fullmatch(chunk)
            if chunk in stream_of:
                self.parts.append(stream_of[chunk])
            elif protected:
                self.parts.append(plain_text_ids(tokenizer, spans[int(protected.group(1))]))
            elif chunk:
                self.parts.append(list(tokenizer(chunk, add_special_tokens=False).input_ids))


def plain_text_ids(tokenizer: Any, text: str) -> list[int]:
    """``text`` tokenised with no added token recognised (its bytes as ordinary vocabulary)."""
    added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    ids = list(tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids)
    if any(i in added for i in ids):  # a non-special added token still matched: one character at a time
        ids = [i for ch in text for i in tokenizer(ch, add_special_tokens=False, split_special_tokens=True).input_ids
               if i not in added]
    return ids
