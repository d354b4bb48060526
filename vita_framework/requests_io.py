"""Batch requests from JSONL: every malformed line is reported, with its number, before any model work.

The valid keys come from the modality table (``images``, ``videos``, ``video_fps``, a plugin modality's key),
plus ``prompt`` and ``id``, so a new modality needs no change here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError
from .modalities import ModalityTable
from .request import Request


def parse_request(obj: Any, table: ModalityTable | None = None) -> Request:
    """One JSON object -> a Request; raises ValueError with what is wrong (the caller adds the line)."""
    if table is None:
        from .plugin_manager import get_modalities

        table = get_modalities()
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    keys, options = table.request_keys(), table.request_options()
    valid = {"prompt", "id", *keys, *options}
    unknown = sorted(set(obj) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; valid keys: {sorted(valid)}")
    prompt = obj.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    inputs: dict[str, list[Any]] = {}
    for key, modality in keys.items():
        value = obj.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"'{key}' must be a list of file paths")
        if value:
            inputs[modality.name] = value
    extra = {key: obj[key] for key in options if obj.get(key) is not None}
    for key, value in extra.items():  # the modality's loader checks the value itself
        if isinstance(value, (dict, list)):
            raise ValueError(f"'{key}' must be a single value, not {type(value).__name__}")
    if prompt is None and not inputs:
        raise ValueError("a request needs a 'prompt' or at least one input file")
    return Request(prompt, inputs=inputs, options=extra, id=obj.get("id"))


def read_jsonl(path: str | Path, parse: Any, *, what: str) -> list[Any]:
    """``parse(obj)`` for every object line of a JSONL file (blank lines skipped); one InputError lists every bad
    line with its number, so a long file is fixed in one pass."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{what} '{path}' does not exist")
    items: list[Any] = []
    problems: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} '{path}' is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append(parse(json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})")
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise InputError(f"{what} '{path}' has {len(problems)} malformed line(s):\n  {shown}{more}")
    if not items:
        raise InputError(f"{what} '{path}' holds no requests")
    return items


def read_requests(path: str | Path) -> list[Request]:
    """All requests of a JSONL file, or one InputError listing every bad line."""
    return read_jsonl(path, parse_request, what="requests file")
