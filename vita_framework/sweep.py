"""Sweeps: one ``result.json`` per job, collected by a Hydra callback into ``results.jsonl`` + a summary.

The callback reads the files the jobs wrote, so it works the same for every launcher (basic, joblib, ray,
submitit): jobs may run in other processes or on other machines that share the sweep directory.
Importing this module stays light (no torch): Hydra instantiates the callback on every run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def summary_choices() -> tuple[str, ...]:
    """The config groups a summary shows: every component group (the modality table's encoders included)."""
    from .schema import component_groups

    return (*component_groups(), "generation")


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``["+vision=internvit", "++generation.top_k=5", "~audio"]`` -> ``{"vision": "internvit", ...}``."""
    parsed = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+")
        if key.startswith("~"):
            key, value = key[1:], "(deleted)"
        parsed[key] = value
    return parsed


def job_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers a sweep compares, from one job's result.json."""
    rows = result.get("rows") or []
    ok_rows = [r for r in rows if not r.get("error")]
    timings = result.get("timings") or {}
    choices = result.get("choices") or {}
    first = ok_rows[0]["text"] if ok_rows else ""
    return {
        "job": result.get("job_num"),
        "status": result.get("status", "ok"),
        "choices": {k: choices.get(k) for k in summary_choices() if k in choices},
        "overrides": result.get("overrides", []),
        "params": parse_overrides(result.get("overrides", [])),
        "tokens_in": sum((r.get("tokens_in") or {}).get("total", 0) for r in ok_rows),
        "tokens_out": sum(r.get("tokens_out", 0) for r in ok_rows),
        "time_to_first_token_s": timings.get("time_to_first_token_s"),
        "tokens_per_s": timings.get("decode_tokens_per_s"),
        "peak_memory_mb": result.get("peak_memory_mb"),
        "peak_memory_method": result.get("peak_memory_method"),
        "score": (result.get("eval") or {}).get("score"),
        "answer": first[:40],
        "error": result.get("error"),
    }


def swept(entries: list[dict[str, Any]]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``(columns, fixed)``: each key whose value differs between jobs with every job's value (an override, or
    a component choice that changed without one, e.g. through an experiment), and the overrides all jobs share.
    """
    columns: dict[str, list[str]] = {}
    fixed: dict[str, str] = {}
    for source in ("params", "choices"):
        keys = dict.fromkeys(k for e in entries for k in (e.get(source) or {}))
        for key in keys:
            values = [_text((e.get(source) or {}).get(key)) for e in entries]
            if len(set(values)) > 1 and key not in columns:
                columns[key] = values
            elif source == "params" and len(set(values)) == 1:
                fixed[key] = values[0]
    return columns, fixed


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _ms(seconds: Any) -> float | None:
    return seconds * 1000 if isinstance(seconds, (int, float)) else None


def _round(value: Any, digits: int = 1) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def format_summary(entries: list[dict[str, Any]]) -> str:
    columns, fixed = swept(entries)
    head = ("#", "status", *columns, "in", "out", "ttft ms", "tok/s", "peak MB", "score", "answer / error")
    lines = [head]

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    for i, e in enumerate(entries):
        lines.append((str(e["job"]), e["status"], *(values[i] for values in columns.values()),
                      str(e["tokens_in"]), str(e["tokens_out"]), num(_ms(e["time_to_first_token_s"]), ".0f"),
                      num(e["tokens_per_s"], ".1f"), num(e["peak_memory_mb"], ".0f"), num(e["score"], ".3f"),
                      (e["error"] or e["answer"]).replace("\n", " ")[:60]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    table = "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines)
    shared = " ".join(f"{k}={v}" for k, v in fixed.items())
    return (f"fixed: {shared}\n" if shared else "") + table


CSV_FIELDS = ("job", "status", "tokens_in", "tokens_out", "ttft_ms", "tokens_per_s", "peak_mb", "score", "answer",
              "error")


def write_csv(path: Path, entries: list[dict[str, Any]]) -> None:
    """``summary.csv``: one row per job, a column per swept key (between ``status`` and ``tokens_in``)."""
    columns, _ = swept(entries)
    fields = [*CSV_FIELDS[:2], *columns, *CSV_FIELDS[2:]]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for i, e in enumerate(entries):
            row = {"job": e["job"], "status": e["status"], "tokens_in": e["tokens_in"],
                   "tokens_out": e["tokens_out"], "ttft_ms": _round(_ms(e["time_to_first_token_s"])),
                   "tokens_per_s": _round(e["tokens_per_s"]), "peak_mb": _round(e["peak_memory_mb"]),
                   "score": e["score"], "answer": e["answer"], "error": e["error"]}
            row.update({key: values[i] for key, values in columns.items()})
            writer.writerow(row)


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's result.json under ``sweep_dir``, in job order; a job that wrote none is 'missing'."""
    entries = []
    for path in sorted(sweep_dir.glob("*/result.json"), key=lambda p: _job_key(p.parent.name)):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            result = {"status": "failed", "error": f"unreadable result.json: {exc}"}
        result.setdefault("job_num", _job_key(path.parent.name)[1])
        entries.append(job_summary(result))
    return entries


def _job_key(name: str) -> tuple[int, Any]:
    return (0, int(name)) if name.isdigit() else (1, name)


class ResultsCollector(Callback):
    """Writes ``results.jsonl`` and ``summary.csv`` in the sweep dir and prints the summary table at the end of a
    multirun (a column per swept key; the overrides every job shares once above it)."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        entries = collect(sweep_dir)
        with open(sweep_dir / "results.jsonl", "w", encoding="utf-8") as handle:
            for entry in entries:
                handle.write(json.dumps(entry) + "\n")
        write_csv(sweep_dir / "summary.csv", entries)
        failed = sum(e["status"] != "ok" for e in entries)
        print(f"\n== sweep summary: {len(entries)} jobs, {failed} failed ({sweep_dir / 'results.jsonl'})")
        print(format_summary(entries))
