"""The training app's sweep callback: one bundle and one score per job, compared in a table, a CSV and a plot.

``python -m vita_framework.train -m +vision=internvit,timm train=quick`` trains one bundle per job; each job
writes ``result.json`` (:mod:`vita_training.report`). At the end of the sweep this callback prints the table
and writes ``results.jsonl``, ``summary.csv`` and ``summary.png`` in the sweep directory with the inference
sweeps' writer (:mod:`vita_framework.sweep_report`): the same ``accuracy``, ``visual_tokens`` and ``ttft_ms``
columns, plus accuracy by question kind and by canvas shape (square, tall, wide), parameters and training time.
With ``tracking`` set, each job is also logged to MLflow or TensorBoard when it ends, with its loss curves
(``history.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vita_framework import sweep_report
from vita_framework.sweep import ResultsCollector, parse_overrides, swept
from vita_training.report import CANVASES
from vita_training.synthetic import QUESTION_KINDS

#: per job, after the swept keys
FIELDS = (
    "accuracy",
    *(f"accuracy_{k}" for k in QUESTION_KINDS),
    *(f"accuracy_{c}" for c in CANVASES),
    "visual_tokens",
    "ttft_ms",
    "params",
    "trained_params",
    "train_s",
    "bundle",
    "error",
)


def training_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers a training sweep compares, from one job's result.json."""
    parameters = result.get("parameters") or {}
    trained = result.get("trained") or []
    entry = {
        "job": result.get("job_num"),
        "status": result.get("status", "ok"),
        "choices": {
            k: v
            for k, v in (result.get("choices") or {}).items()
            if k in ("vision", "projector", "fusion", "llm", "train")
        },
        "overrides": result.get("overrides", []),
        "params": parse_overrides(result.get("overrides", [])),
        "accuracy": result.get("accuracy"),
        "visual_tokens": result.get("visual_tokens"),
        "ttft_ms": result.get("ttft_ms"),
        "params_total": parameters.get("total"),
        "trained_params": sum(parameters.get(k, 0) for k in trained) if parameters else None,
        "train_s": result.get("train_s"),
        "bundle": result.get("bundle"),
        "error": result.get("error"),
    }
    entry.update({f"accuracy_{k}": (result.get("accuracy_by_kind") or {}).get(k) for k in QUESTION_KINDS})
    typed_by_canvas = (result.get("accuracy_by_canvas") or {}).get("typed") or {}
    entry.update({f"accuracy_{c}": (typed_by_canvas.get(c) or {}).get("all") for c in CANVASES})
    return entry


class TrainingResults(ResultsCollector):
    """:class:`vita_framework.sweep.ResultsCollector` with training jobs' numbers."""

    def summarise(self, result: dict[str, Any], job_dir: Path) -> dict[str, Any]:
        return training_summary(result)

    def tracked(self, entry: dict[str, Any], job_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        params = {**{f"choice.{k}": v for k, v in entry["choices"].items()}, **entry["params"]}
        metrics = {k: entry.get(k) for k in (*FIELDS[:FIELDS.index("ttft_ms") + 1], "params_total", "trained_params",
                                              "train_s")}
        history = job_dir / "history.json"
        curves = json.loads(history.read_text()) if history.is_file() else []
        return params, metrics, curves

    def report(self, sweep_dir: Path, entries: list[dict[str, Any]]) -> None:
        columns, fixed = swept(entries)
        rows = []
        for i, entry in enumerate(entries):
            row = {**entry, "params": entry["params_total"], **{k: values[i] for k, values in columns.items()}}
            rows.append(row)
        fields = ["job", "status", *columns, *FIELDS]
        sweep_report.write_csv(sweep_dir / "summary.csv", rows, fields)
        failed = sum(e["status"] != "ok" for e in entries)
        print(f"\n== training sweep: {len(entries)} jobs, {failed} failed ({sweep_dir / 'summary.csv'})")
        if fixed:
            print("fixed: " + " ".join(f"{k}={v}" for k, v in fixed.items()))
        shown = [
            "job",
            "status",
            *columns,
            "accuracy",
            *(f"accuracy_{k}" for k in QUESTION_KINDS),
            "visual_tokens",
            "ttft_ms",
            "params",
            "train_s",
        ]
        headers = ["#", "status", *columns, "acc", *QUESTION_KINDS, "vis tok", "ttft ms", "params", "train s"]
        print(sweep_report.format_table(rows, shown, headers))
        for row in rows:
            if row.get("error"):
                print(f"job {row['job']}: {row['error']}")
        print(
            sweep_report.plot(
                sweep_dir / "summary.png",
                rows,
                label_keys=list(columns),
                title="trained compositions: accuracy vs visual tokens (area: time to first token)",
            )
        )
