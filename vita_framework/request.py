"""The records a request passes through: :class:`Request` in, :class:`PreparedRequest` between encoding and
generation, :class:`RowResult` / :class:`GenerationResult` out. No torch here, so readers of requests stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Request:
    """One question with its inputs, by modality.

    ``Request("What is this?", images=["a.png"])`` or ``Request(prompt, inputs={"image": [...]})``: keyword fields
    are request keys (``images``), modality names (``image``) or per-request modality options (``video_fps``),
    all looked up in the modality table, so a plugin's modality (``depths=[...]``) works the same way.
    """

    def __init__(self, prompt: str | None = None, *, inputs: dict[str, list[Any]] | None = None,
                 options: dict[str, Any] | None = None, id: Any = None, **fields: Any) -> None:
        self.prompt = prompt
        self.id = id
        self.inputs: dict[str, list[Any]] = {k: list(v) for k, v in (inputs or {}).items() if v}
        self.options: dict[str, Any] = dict(options or {})
        if fields:
            from .plugin_manager import get_modalities

            more, extra = get_modalities().split_fields(fields)
            self.inputs.update(more)
            self.options.update(extra)

    def items(self, modality: str) -> list[Any]:
        return self.inputs.get(modality, [])

    def __repr__(self) -> str:
        return f"Request(prompt={self.prompt!r}, inputs={self.inputs!r}, options={self.options!r}, id={self.id!r})"


@dataclass
class PreparedRequest:
    """A request encoded and tokenised, ready to be padded into a batch and fused."""

    #: the question as asked ("" for a spoken question)
    question: str
    #: prompt ids, each placeholder run expanded to its segment's feature rows
    input_ids: list[int]
    #: placeholder stream -> feature tensors in prompt order (after projection and fusion.reduce)
    features: dict[str, list[Any]]
    #: positions per modality, plus ``text`` and ``total``
    tokens: dict[str, int]
    id: Any = None


@dataclass
class RowResult:
    prompt: str
    text: str
    generated_ids: list[int]
    tokens_in: dict[str, int]
    tokens_out: int
    error: str | None = None  # set when this row's inputs failed; the other rows still ran
    expected: str | None = None  # the reference answer, when scored against an eval dataset
    id: Any = None  # the request's id, echoed

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "text": self.text, "generated_ids": self.generated_ids,
                               "tokens_in": self.tokens_in, "tokens_out": self.tokens_out}
        if self.id is not None:
            out["id"] = self.id
        if self.error is not None:
            out["error"] = self.error
        if self.expected is not None:
            out["expected"] = self.expected
        return out


@dataclass
class GenerationResult:
    rows: list[RowResult]
    timings: dict[str, float]
    scores: Any = None  # [B, steps, V] processed scores when asked for

    @property
    def text(self) -> str:
        return self.rows[0].text

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows], "timings": self.timings}
