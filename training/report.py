"""What a training job reports: held-out accuracy by question kind, visual tokens, time to first token, sizes.

Every number is measured through the public pipeline of the bundle as written and loaded back, so a sweep
compares what users would run. ``result.json`` in the job's directory holds them; the sweep callback
(:mod:`vita_training.results`) reads those files, so it works for any Hydra launcher.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from vita_training import synthetic


def generated_accuracy(
    pipeline: Any, examples: list[synthetic.Example], *, batch_size: int = 50, max_new_tokens: int = 24,
    requests: list[Any] | None = None, what: str = "held-out",
) -> tuple[float, list[str]]:
    """Fraction of ``examples`` whose generated answer (the public ``generate_batch``) is exactly right; each
    asked as typed, or as in ``requests`` (the same questions spoken, :func:`vita_training.spoken.spoken_requests`)."""
    from vita_framework.request import Request
    from vita_training.progress import progress

    requests = requests or [Request(e.question, images=[e.image()]) for e in examples]
    texts: list[str] = []
    chunks = range(0, len(requests), batch_size)
    for start in progress(chunks, total=len(chunks), desc=f"scoring {len(requests)} {what}", unit="batch"):
        result = pipeline.generate_batch(requests[start: start + batch_size], batch_size=batch_size,
                                         max_new_tokens=max_new_tokens)
        texts += [row.text for row in result.rows]
    right = sum(synthetic.is_correct(t, e.answer) for t, e in zip(texts, examples))
    return right / max(1, len(examples)), texts


def score(pipeline: Any, heldout: list[synthetic.Example], requests: list[Any] | None = None,
          what: str = "held-out") -> tuple[float, dict[str, float | None], list[str]]:
    """Exact-answer accuracy of generated answers, overall and by question kind, and the answers."""
    accuracy, texts = generated_accuracy(pipeline, heldout, requests=requests, what=what)
    return accuracy, accuracy_by_kind(heldout, texts), texts


def accuracy_by_kind(examples: list[synthetic.Example], texts: list[str]) -> dict[str, float | None]:
    """Exact-answer rate of ``texts`` (answers to ``examples``) per question kind (None: no question of it)."""
    by_kind: dict[str, float | None] = {}
    for kind in synthetic.QUESTION_KINDS:
        marks = [synthetic.is_correct(t, e.answer) for t, e in zip(texts, examples) if e.kind == kind]
        by_kind[kind] = round(sum(marks) / len(marks), 4) if marks else None
    return by_kind


#: the canvas shapes held-out accuracy is reported by
CANVASES = ("square", "tall", "wide")


def canvas_of(scene: synthetic.Scene) -> str:
    """``square``, ``tall`` or ``wide``: which way the tower's square tile squashes the scene's canvas."""
    return "square" if scene.aspect == 1.0 else "tall" if scene.aspect < 1.0 else "wide"


def by_canvas(examples: list[synthetic.Example], texts: list[str]) -> dict[str, dict[str, float | int | None]]:
    """Accuracy of ``texts`` (answers to ``examples``) per canvas shape, overall and by question kind.

    Squashed canvases are where the shipped bundle misses most, so every run reports them apart from the square
    ones rather than leaving each experiment to recompute it."""
    if len(texts) != len(examples):
        raise ValueError(f"{len(texts)} answers for {len(examples)} questions; score every question once")
    out: dict[str, dict[str, float | int | None]] = {}
    for canvas in CANVASES:
        rows = [(e, t) for e, t in zip(examples, texts) if canvas_of(e.scene) == canvas]
        marks = [synthetic.is_correct(t, e.answer) for e, t in rows]
        out[canvas] = {"questions": len(rows), "all": round(sum(marks) / len(marks), 4) if marks else None,
                       **accuracy_by_kind([e for e, _ in rows], [t for _, t in rows])}
    return out


def latency(pipeline: Any, repeats: int = 5) -> dict[str, float]:
    """Median time to first token (encode, prefill, first token) of one held-out image question, alone, after a
    warm-up call; and the LLM positions one image takes (tower tokens after projector and fusion)."""
    from vita_framework.request import Request

    example = synthetic.example("heldout", 0)
    image = example.image()
    visual = pipeline.prepare(Request(example.question, images=[image])).tokens.get("image", 0)
    times = []
    for _ in range(repeats + 1):
        result = pipeline.generate(example.question, images=[image], max_new_tokens=1)
        times.append(result.timings["time_to_first_token_s"])
    return {"ttft_ms": round(statistics.median(times[1:]) * 1000, 2), "visual_tokens": int(visual)}


def parameters(trainer: Any) -> dict[str, int]:
    """Parameters per module, and the total."""
    sizes = {name: sum(p.numel() for p in module.parameters()) for name, module in trainer.modules.items()}
    return {**sizes, "total": sum(sizes.values())}


def hydra_meta() -> dict[str, Any]:
    """The job's number, overrides and group choices (empty outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        hc = HydraConfig.get()
        return {
            "job_num": hc.job.get("num"),
            "overrides": list(hc.overrides.task),
            "choices": {
                k: v for k, v in OmegaConf.to_container(hc.runtime.choices).items() if not k.startswith("hydra")
            },
        }
    except ValueError:
        return {"job_num": None, "overrides": [], "choices": {}}


def load_command(bundle: Path, overrides: list[str]) -> str:
    """The inference command that loads ``bundle`` with this run's components."""
    import shlex

    return " ".join(
        [
            "python -m vita_framework",
            shlex.quote(f"checkpoint={bundle}"),
            *([] if any(o.lstrip("+").startswith("audio=") for o in overrides) else ["+audio=none"]),
            *(shlex.quote(o) for o in overrides),
        ]
    )


def write_result(job_dir: Path, payload: dict[str, Any]) -> Path:
    """``result.json``, complete or absent (a sweep collector may read it at any time)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps({**hydra_meta(), **payload}, indent=2))
    return tmp.replace(job_dir / "result.json")
