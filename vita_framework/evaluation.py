"""Scoring a run on a question/answer set, so sweeps compare configurations on answers, not only speed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import InputError


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: 'A red circle.' == 'a red circle'."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def read_dataset(path: str | Path, max_items: int | None = None) -> tuple[list[Any], list[str]]:
    """Requests and expected answers from JSONL (request keys plus ``answer``)."""
    from .requests_io import parse_request

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"eval.dataset '{path}' does not exist")
    requests, answers, problems = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or not isinstance(obj.get("answer"), str):
                raise ValueError("needs a string 'answer'")
            answers.append(obj.pop("answer"))
            requests.append(parse_request(obj))
        except (ValueError, json.JSONDecodeError) as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise InputError(f"eval.dataset '{path}' has malformed lines: " + "; ".join(problems[:10]))
    if not requests:
        raise InputError(f"eval.dataset '{path}' holds no items")
    if max_items:
        requests, answers = requests[:max_items], answers[:max_items]
    return requests, answers


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
