"""Sweeps: one ``result.json`` per job, collected by a Hydra callback into ``results.jsonl`` + a summary.

The callback reads the files the jobs wrote, so it works the same for every launcher (basic, joblib, ray,
submitit): jobs may run in other processes or on other machines that share the sweep directory.
Importing this module stays light (no torch): Hydra instantiates the callback on every run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def summary_choices() -> tuple[str, ...]:
    """The config groups a summary shows: every component group (the modality table's encoders included)."""
    from .schema import component_groups

    return (*component_groups(), "generation")


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
        "tokens_in": sum((r.get("tokens_in") or {}).get("total", 0) for r in ok_rows),
        "tokens_out": sum(r.get("tokens_out", 0) for r in ok_rows),
        "time_to_first_token_s": timings.get("time_to_first_token_s"),
        "tokens_per_s": timings.get("decode_tokens_per_s"),
        "peak_memory_mb": result.get("peak_memory_mb"),
        "score": (result.get("eval") or {}).get("score"),
        "answer": first[:40],
        "error": result.get("error"),
    }


def format_summary(entries: list[dict[str, Any]]) -> str:
    head = ("#", "status", "choices", "in", "out", "ttft ms", "tok/s", "peak MB", "score", "answer / error")
    lines = [head]
    for e in entries:
        def num(v: Any, fmt: str) -> str:
            return format(v, fmt) if isinstance(v, (int, float)) else "-"

        choices = " ".join(f"{k}={v}" for k, v in e["choices"].items() if v is not None)
        ttft = e["time_to_first_token_s"]
        lines.append((str(e["job"]), e["status"], choices, str(e["tokens_in"]), str(e["tokens_out"]),
                      num(ttft * 1000 if ttft is not None else None, ".0f"), num(e["tokens_per_s"], ".1f"),
                      num(e["peak_memory_mb"], ".0f"), num(e["score"], ".3f"),
                      (e["error"] or e["answer"]).replace("\n", " ")[:60]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines)


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
    """Writes ``results.jsonl`` in the sweep dir and prints the summary table at the end of a multirun."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        entries = collect(sweep_dir)
        with open(sweep_dir / "results.jsonl", "w", encoding="utf-8") as handle:
            for entry in entries:
                handle.write(json.dumps(entry) + "\n")
        failed = sum(e["status"] != "ok" for e in entries)
        print(f"\n== sweep summary: {len(entries)} jobs, {failed} failed ({sweep_dir / 'results.jsonl'})")
        print(format_summary(entries))
