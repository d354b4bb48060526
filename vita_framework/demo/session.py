"""One browser tab's conversation: what the model sees (``turns``), what the chat shows (``display``), the
generation running for it, and the figures of its last answer. No Gradio here.

Several tabs talk to one pipeline; a tab is identified by Gradio's session hash. The chat shows more than the
model sees: refusals (an oversized upload, a request while an answer is still coming) are shown as assistant
notes but never sent back to the model as turns.
"""

from __future__ import annotations

import collections
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..preparation import DEFAULT_QUESTION
from ..serve.chat import ChatMessage, MediaPart, TextPart

#: how many tabs' conversations are kept (the least recently used is dropped beyond it)
MAX_SESSIONS = 256


@dataclass
class Stats:
    """The figures of one answer, shown in the side panel."""

    tokens_in: dict[str, int] = field(default_factory=dict)
    tokens_out: int = 0
    ttft_s: float | None = None
    decode_tokens_per_s: float | None = None
    batch: str | None = None  # the rows of its batch, or the LLM engine's continuous batching
    finish: str | None = None


@dataclass
class Session:
    turns: list[ChatMessage] = field(default_factory=list)
    display: list[dict[str, Any]] = field(default_factory=list)
    job: Any = None  # the serve scheduler's Job of the answer being generated, or None
    stats: Stats | None = None
    closed: bool = False  # cleared or dropped: a generation still running for it shows nothing more

    def note(self, text: str) -> None:
        """A message from the app (not the model) in the chat; never part of the conversation sent to the model."""
        self.display.append({"role": "assistant", "content": [text_part(f"⚠️ {text}")]})


class SessionStore:
    """Sessions by Gradio session hash, least recently used dropped beyond ``max_sessions``."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()

    def get(self, key: str | None) -> Session:
        key = key or "-"
        session = self._sessions.pop(key, None) or Session()
        self._sessions[key] = session
        while len(self._sessions) > self.max_sessions:
            _close(self._sessions.popitem(last=False)[1])
        return session

    def forget(self, key: str | None) -> None:
        session = self._sessions.pop(key or "-", None)
        if session is not None:
            _close(session)

    def __len__(self) -> int:
        return len(self._sessions)


def _close(session: Session) -> None:
    session.closed = True
    if session.job is not None:
        session.job.cancel.set()


@dataclass
class Upload:
    path: str
    name: str
    modality: str


def classify(paths: list[str], modalities: Any, max_bytes: int) -> tuple[list[Upload], list[tuple[str, str]]]:
    """Uploaded files -> (the modality of each, (file name, problem) of the refused ones): by MIME type
    (``image/*``, ``audio/*``, ``video/*``) against the pipeline's modality table, each within ``max_bytes``
    (``demo.max_upload_mb``)."""
    known = set(modalities.names())
    uploads, problems = [], []
    for path in paths:
        name = Path(path).name
        try:
            size = Path(path).stat().st_size
        except OSError:
            problems.append((name, f"the upload '{name}' was not received completely; upload it again"))
            continue
        if size > max_bytes:
            problems.append(
                (
                    name,
                    f"'{name}' has {_mb(size)}; this demo accepts files up to {_mb(max_bytes)} "
                    "(start it with demo.max_upload_mb=<MB> to allow more)",
                )
            )
            continue
        mime = mimetypes.guess_type(name)[0] or ""
        kind = mime.split("/", 1)[0]
        if kind not in ("image", "audio", "video") or kind not in known:
            accepted = ", ".join(k for k in ("image", "audio", "video") if k in known)
            problems.append(
                (
                    name,
                    f"'{name}' is not a file type this demo reads ({mime or 'unknown type'}); upload {accepted} files",
                )
            )
            continue
        uploads.append(Upload(path, name, kind))
    return uploads, problems


def user_message(text: str, uploads: list[Upload], modalities: Any) -> ChatMessage:
    """The user's turn laid out as the CLI lays out a request: items placed before the question (images, videos),
    the question, then items placed after it (audio). Without text, images and videos get the CLI's default
    question, and audio alone an empty one (a spoken question), as ``python -m vita_framework`` does."""
    before = [u for u in uploads if modalities.get(u.modality).position != "after"]
    after = [u for u in uploads if modalities.get(u.modality).position == "after"]
    if not text.strip() and uploads:
        spoken = any(modalities.get(u.modality).replaces_question for u in uploads)
        text = "" if spoken else DEFAULT_QUESTION
    parts: list[TextPart | MediaPart] = [MediaPart(u.modality, u.path) for u in before]
    if text or not after:
        parts.append(TextPart(text))
    parts += [MediaPart(u.modality, u.path) for u in after]
    return ChatMessage("user", parts)


def shown(message: ChatMessage, extra: list[str] = ()) -> dict[str, Any]:
    """A user turn as the chat shows it: each file, then the text (``extra``: names of refused files)."""
    content: list[Any] = [{"path": p.source} for p in message.parts if isinstance(p, MediaPart)]
    text = " ".join(p.text for p in message.parts if isinstance(p, TextPart))
    names = " ".join(f"📎 {n}" for n in extra)
    if text or names:
        content.append(text_part("\n".join(s for s in (names, text) if s)))
    return {"role": "user", "content": content}


def text_part(text: str) -> dict[str, str]:
    """Text for the chat exactly as given (a plain string would be dedented by Gradio's ``inspect.cleandoc``)."""
    return {"type": "text", "text": text}


def _mb(size: int) -> str:
    return f"{size / 2**20:.2f} MB" if size < 2**30 else f"{size / 2**30:.2f} GB"
