"""Batch requests from JSONL: every malformed line is reported, with its number, before any model work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError
from .pipeline import Request

FIELDS = {"prompt", "images", "audios", "videos", "video_fps", "id"}
LIST_FIELDS = ("images", "audios", "videos")


def parse_request(obj: Any) -> Request:
    """One JSON object -> a Request; raises ValueError with what is wrong (the caller adds the line)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; valid keys: {sorted(FIELDS)}")
    prompt = obj.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    lists = {}
    for key in LIST_FIELDS:
        value = obj.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"'{key}' must be a list of file paths")
        lists[key] = value
    fps = obj.get("video_fps")
    if fps is not None and (not isinstance(fps, (int, float)) or fps <= 0):
        raise ValueError("'video_fps' must be a positive number")
    if prompt is None and not any(lists.values()):
        raise ValueError("a request needs a 'prompt' or at least one input file")
    return Request(prompt, lists["images"], lists["audios"], lists["videos"], fps)


def read_requests(path: str | Path) -> list[Request]:
    """All requests of a JSONL file (blank lines skipped), or one InputError listing every bad line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"requests file '{path}' does not exist")
    requests: list[Request] = []
    problems: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                requests.append(parse_request(json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
            except ValueError as exc:
                problems.append(f"line {number}: {exc}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise InputError(f"requests file '{path}' has {len(problems)} malformed line(s):\n  {shown}{more}")
    if not requests:
        raise InputError(f"requests file '{path}' holds no requests")
    return requests
