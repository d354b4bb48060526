"""Sweeps: one ``result.json`` per job, collected by a Hydra callback into ``results.jsonl`` + a summary.

The callback reads the files the jobs wrote, so it works the same for every launcher (basic, joblib, ray,
submitit): jobs may run in other processes or on other machines that share the sweep directory. Besides the
table it writes ``summary.csv`` and ``summary.png`` (:mod:`vita_framework.sweep_report`, shared with training
sweeps) and, when ``tracking`` is set, logs each job as it ends (:mod:`vita_framework.tracking`).
Importing this module stays light (no torch): Hydra instantiates the callback on every run.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from . import sweep_report
from . import tracking as trackers


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
    score = (result.get("eval") or {}).get("score")
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
        "score": score,
        "accuracy": score,
        "visual_tokens": visual_tokens(result),
        "answer": first[:40],
        "error": result.get("error"),
    }


def visual_tokens(result: dict[str, Any]) -> float | None:
    """LLM positions per image (or video) over the job's rows: per item when the rows come from an eval dataset
    (its items counted there), else per request that had any."""
    rows = [r for r in result.get("rows") or [] if not r.get("error")]
    per_row = [sum((r.get("tokens_in") or {}).get(k, 0) for k in ("image", "video")) for r in rows]
    items = [1 if n else 0 for n in per_row]
    dataset = (result.get("eval") or {}).get("dataset")
    if dataset:
        counted = _dataset_items(str(dataset), len(result.get("rows") or []))
        if counted is not None:
            items = [c for c, r in zip(counted, result.get("rows") or []) if not r.get("error")]
    total = sum(items)
    return round(sum(per_row) / total, 2) if total else None


@functools.lru_cache(maxsize=8)
def _dataset_items(path: str, n: int) -> tuple[int, ...] | None:
    from .evaluation import visual_items

    try:
        return tuple(visual_items(path, n))
    except Exception:  # moved or unreadable since the job ran: fall back to one item per request
        return None


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


CSV_FIELDS = ("job", "status", "tokens_in", "tokens_out", "ttft_ms", "tokens_per_s", "peak_mb", "score", "accuracy",
              "visual_tokens", "answer", "error")


def csv_rows(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(rows, fields, swept keys) of ``summary.csv``: a column per swept key between ``status`` and ``tokens_in``."""
    columns, _ = swept(entries)
    fields = [*CSV_FIELDS[:2], *columns, *CSV_FIELDS[2:]]
    rows = []
    for i, e in enumerate(entries):
        row = {"job": e["job"], "status": e["status"], "tokens_in": e["tokens_in"],
               "tokens_out": e["tokens_out"], "ttft_ms": _round(_ms(e["time_to_first_token_s"])),
               "tokens_per_s": _round(e["tokens_per_s"]), "peak_mb": _round(e["peak_memory_mb"]),
               "score": e["score"], "accuracy": e.get("accuracy"), "visual_tokens": e.get("visual_tokens"),
               "answer": e["answer"], "error": e["error"]}
        row.update({key: values[i] for key, values in columns.items()})
        rows.append(row)
    return rows, fields, list(columns)


def write_csv(path: Path, entries: list[dict[str, Any]]) -> None:
    """``summary.csv``: one row per job, a column per swept key (between ``status`` and ``tokens_in``)."""
    rows, fields, _ = csv_rows(entries)
    sweep_report.write_csv(path, rows, fields)


def collect(sweep_dir: Path, summarise: Any = None) -> list[dict[str, Any]]:
    """Every job's summary (``summarise(result, job_dir)``; default :func:`job_summary`) from the result.json
    files under ``sweep_dir``, in job order; an unreadable result.json is a failed job."""
    summarise = summarise or (lambda result, _: job_summary(result))
    entries = []
    for path in sorted(sweep_dir.glob("*/result.json"), key=lambda p: _job_key(p.parent.name)):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            result = {"status": "failed", "error": f"unreadable result.json: {exc}"}
        result.setdefault("job_num", _job_key(path.parent.name)[1])
        entries.append(summarise(result, path.parent))
    return entries


def _job_key(name: str) -> tuple[int, Any]:
    return (0, int(name)) if name.isdigit() else (1, name)


class ResultsCollector(Callback):
    """Writes ``results.jsonl``, ``summary.csv`` and ``summary.png`` in the sweep dir and prints the summary table
    at the end of a multirun (a column per swept key; the overrides every job shares once above it). With
    ``tracking`` (mlflow | tensorboard) it also logs every job when it ends, single runs included.

    The training app's collector (``vita_training.results``) is this class with its own job summary.
    """

    def __init__(self, tracking: str | None = None, tracking_uri: str | None = None,
                 experiment: str | None = None) -> None:
        # an unknown tracker or a missing library stops the run here, before any job (Hydra builds its
        # callbacks first, and turns what their hooks raise into warnings)
        self.tracking = trackers.check(tracking)
        self.tracking_uri, self.experiment = tracking_uri, experiment

    # -- what a job reports (the training collector overrides these) -------------------------------------
    def summarise(self, result: dict[str, Any], job_dir: Path) -> dict[str, Any]:
        """One job's summary entry from its ``result.json``."""
        return job_summary(result)

    def tracked(self, entry: dict[str, Any], job_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        """(params, metrics, curves) a tracker logs for one job."""
        params = {**{f"choice.{k}": v for k, v in entry["choices"].items()}, **entry["params"]}
        metrics = {k: entry.get(k) for k in ("score", "accuracy", "visual_tokens", "tokens_in", "tokens_out",
                                             "tokens_per_s", "peak_memory_mb")}
        metrics["ttft_ms"] = _ms(entry.get("time_to_first_token_s"))
        return params, metrics, []

    def report(self, sweep_dir: Path, entries: list[dict[str, Any]]) -> None:
        """Write ``summary.csv`` and ``summary.png``; print the table."""
        rows, fields, keys = csv_rows(entries)
        sweep_report.write_csv(sweep_dir / "summary.csv", rows, fields)
        failed = sum(e["status"] != "ok" for e in entries)
        drawn = sweep_report.plot(sweep_dir / "summary.png", rows, label_keys=keys)
        png = "summary.png" if drawn.startswith("wrote") else drawn
        print(f"\n== sweep summary: {len(entries)} jobs, {failed} failed ({sweep_dir / 'results.jsonl'}, "
              f"summary.csv, {png})")
        print(format_summary(entries))

    # -- Hydra's hooks -----------------------------------------------------------------------------------
    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        tracker = self.tracking
        if tracker is None:
            return
        hydra_cfg = config.hydra
        job_dir = Path(hydra_cfg.runtime.output_dir)
        path = job_dir / "result.json"
        if not path.is_file():
            return
        multirun = str(hydra_cfg.mode) in ("RunMode.MULTIRUN", "MULTIRUN")
        root = Path(hydra_cfg.sweep.dir if multirun else hydra_cfg.run.dir)
        result = json.loads(path.read_text())
        if result.get("job_num") is None:
            result["job_num"] = _job_key(job_dir.name)[1] if multirun else None
        entry = self.summarise(result, job_dir)
        params, metrics, curves = self.tracked(entry, job_dir)
        name = " ".join([f"job {entry['job']}" if multirun else "run", *result.get("overrides", [])])[:240]
        where = trackers.log_job(tracker, uri=self.tracking_uri or trackers.default_uri(tracker, root),
                                 experiment=self.experiment or str(hydra_cfg.job.name), run_name=name,
                                 params=params, metrics=metrics, curves=curves, ok=entry["status"] == "ok")
        print(f"tracking: logged {where}", flush=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        entries = collect(sweep_dir, self.summarise)
        with open(sweep_dir / "results.jsonl", "w", encoding="utf-8") as handle:
            for entry in entries:
                handle.write(json.dumps(entry) + "\n")
        self.report(sweep_dir, entries)
