"""Batch requests from JSONL: every malformed line is reported, with its number, before any model work.

The valid keys come from the modality table (``images``, ``videos``, ``video_fps``, a plugin modality's key),
plus ``prompt`` and ``id``, so a new modality needs no change here. JSON's non-standard ``NaN`` and
``Infinity`` (which Python's json accepts) are refused, and so is a prompt that is not valid Unicode text.
"""

from __future__ import annotations

import json
import math
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
    if prompt is not None and (problem := text_problem("'prompt'", prompt)):
        raise ValueError(problem)
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
    for key, value in extra.items():  # the modality's loader checks the rest itself
        if isinstance(value, (dict, list)):
            raise ValueError(f"'{key}' must be a single value, not {type(value).__name__}")
        problem = option_problem(options[key], key, value)
        if problem:
            raise ValueError(problem)
    if prompt is None and not inputs:
        raise ValueError("a request needs a 'prompt' or at least one input file")
    return Request(prompt, inputs=inputs, options=extra, id=obj.get("id"))


def text_problem(name: str, text: str) -> str | None:
    """Why ``text`` cannot be encoded as UTF-8 (a lone surrogate: ``"\\udc80"`` in JSON, or a non-UTF-8 command
    line decoded by Python), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{name} is not valid UTF-8 text: character {exc.start} is a lone surrogate "
                f"{text[exc.start]!r} (a non-UTF-8 byte or a broken \\u escape); pass the text as UTF-8")
    return None


def option_problem(modality: Any, key: str, value: Any) -> str | None:
    """A request option's value (``video_fps``) against its modality: never NaN or infinite, and a finite number
    > 0 where the modality lists it in ``positive_request_options``; None when fine."""
    positive = key in modality.positive_request_options
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if positive and not (number and _finite(value) and value > 0):
        return f"{key} must be a finite number > 0 (for modality '{modality.name}'); got {value!r}"
    if isinstance(value, float) and not _finite(value):
        return f"{key} must be a finite number; got {value!r}"
    return None


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (write a finite number, or null)")


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
            items.append(parse(json.loads(line, parse_constant=_refuse_constant)))
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
