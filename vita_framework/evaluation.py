"""Scoring a run on a question/answer set, so sweeps compare configurations on answers, not only speed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: 'A red circle.' == 'a red circle'."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def read_dataset(path: str | Path, max_items: int | None = None) -> tuple[list[Any], list[str]]:
    """Requests and expected answers from JSONL (request keys plus ``answer``)."""
    from .requests_io import parse_request, read_jsonl

    def parse(obj: Any) -> tuple[Any, str]:
        if not isinstance(obj, dict) or not isinstance(obj.get("answer"), str):
            raise ValueError("needs a string 'answer'")
        answer = obj.pop("answer")
        return parse_request(obj), answer

    pairs = read_jsonl(path, parse, what="eval.dataset")
    if max_items:
        pairs = pairs[:max_items]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def score(predictions: list[str], answers: list[str]) -> dict[str, float]:
    """Exact match and contains, after normalisation; failed rows (None) count as wrong."""
    exact = contains = 0
    for prediction, answer in zip(predictions, answers):
        if prediction is None:
            continue
        p, a = normalise(prediction), normalise(answer)
        exact += p == a
        contains += bool(a) and (a in p)
    n = max(len(answers), 1)
    return {"exact": exact / n, "contains": contains / n, "n": len(answers)}


def visual_items(path: str | Path, max_items: int | None = None) -> list[int]:
    """Per dataset row, how many items a vision encoder serves (images, videos): what a sweep divides the row's
    visual positions by to report visual tokens per image."""
    from .plugin_manager import get_modalities

    visual = {m.name for m in get_modalities() if m.encoder == "vision"}
    requests, _ = read_dataset(path, max_items)
    return [sum(len(request.items(name)) for name in visual) for request in requests]
