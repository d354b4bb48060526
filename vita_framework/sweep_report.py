"""The report a sweep leaves in its directory: ``summary.csv`` (one row per job) and ``summary.png``.

Written once for both apps' sweep callbacks (inference sweeps in :mod:`vita_framework.sweep`, training sweeps in
``vita_training.results``): a design-space study asks the same question of both -- how much accuracy each
configuration buys for its visual tokens and its latency -- so both report ``accuracy``, ``visual_tokens``
(LLM positions per image) and ``ttft_ms`` (time to first token) under those names, and plot accuracy against
visual tokens with the marker's area by time to first token and the Pareto front (no other job is at least as
accurate with fewer visual tokens) drawn through. matplotlib is imported only to draw (the ``plot`` extra); a
sweep without it still gets its CSV.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the columns every sweep report has, whatever the app
REPORT_COLUMNS = ("accuracy", "visual_tokens", "ttft_ms")
PLOT_EXTRA = "pip install -e '.[plot]'"


def number(value: Any) -> float | None:
    """``value`` as a finite float, else None (missing, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def pareto(rows: list[dict[str, Any]]) -> list[bool]:
    """Per row: on the accuracy / visual-token Pareto front (no other row at least as accurate with no more
    visual tokens, and strictly better in one of them). Rows missing either number are not on it."""
    points = [(number(r.get("accuracy")), number(r.get("visual_tokens"))) for r in rows]
    front = []
    for acc, tokens in points:
        if acc is None or tokens is None:
            front.append(False)
            continue
        front.append(
            not any(
                a is not None and t is not None and a >= acc and t <= tokens and (a > acc or t < tokens)
                for a, t in points
            )
        )
    return front


def write_csv(path: Path, rows: list[dict[str, Any]], fields: Sequence[str]) -> Path:
    """One row per job with exactly ``fields`` as columns (missing values empty; floats as given)."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return path


def format_table(rows: list[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """A plain aligned text table of ``columns`` (floats to 3 significant decimals; missing as ``-``)."""

    def cell(value: Any) -> str:
        if value is None or value == "":
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value).replace("\n", " ")

    lines = [list(headers or columns)] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(line)).rstrip() for line in lines)


def label(row: dict[str, Any], keys: Sequence[str]) -> str:
    """A point's label: the swept values that tell it apart (``vision=timm train=quick``), or its job number."""
    parts = [f"{k.rsplit('.', 1)[-1] if len(k) > 24 else k}={row.get(k)}" for k in keys if row.get(k) not in (None, "")]
    return " ".join(parts) if parts else f"job {row.get('job')}"


def plot(path: Path, rows: list[dict[str, Any]], *, label_keys: Sequence[str] = (), title: str = "") -> str:
    """Draw ``summary.png``: accuracy against visual tokens per image, marker area by time to first token,
    the Pareto front as a line; returns what happened (written, or why not) for the sweep's log."""
    points = [(r, number(r.get("accuracy")), number(r.get("visual_tokens")), number(r.get("ttft_ms"))) for r in rows]
    points = [p for p in points if p[1] is not None and p[2] is not None]
    if not points:
        return (
            f"{path.name} not drawn: no job has both accuracy and visual tokens (an inference sweep needs eval.dataset)"
        )
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return f"{path.name} not drawn: matplotlib is not installed ({PLOT_EXTRA})"
    figure = Figure(figsize=(7.0, 4.8), dpi=120)
    FigureCanvasAgg(figure)  # the Agg canvas: no display, no global pyplot state
    axes = figure.add_subplot()
    ttfts = [p[3] for p in points if p[3] is not None]
    largest = max(ttfts) if ttfts else 1.0
    for row, acc, tokens, ttft in points:
        size = 40 + 560 * (ttft / largest if ttft is not None and largest > 0 else 0.0)
        axes.scatter([tokens], [acc], s=size, alpha=0.6, edgecolors="black", linewidths=0.6)
        note = label(row, label_keys) + (f"\n{ttft:.0f} ms to first token" if ttft is not None else "")
        axes.annotate(note, (tokens, acc), textcoords="offset points", xytext=(8, 6), fontsize=7)
    front = sorted((p[2], p[1]) for p, on in zip(points, pareto([p[0] for p in points])) if on)
    if len(front) > 1:
        axes.plot([t for t, _ in front], [a for _, a in front], "--", color="grey", linewidth=1, label="Pareto front")
        axes.legend(loc="lower right", fontsize=8)
    xs = [p[2] for p in points]
    axes.set_xlim(0, max(xs) * 1.35 + 1)
    axes.set_ylim(-0.02, 1.08)
    axes.set_xlabel("visual tokens per image (LLM positions)")
    axes.set_ylabel("accuracy")
    axes.set_title(title or "accuracy vs visual tokens (marker area: time to first token)", fontsize=10)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(str(path))
    return f"wrote {path}"
