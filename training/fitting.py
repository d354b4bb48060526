"""The optimisation loop every answer-token stage runs (answers, speech): learning-rate schedule, the scene
curriculum and the logged history. Kept apart from :mod:`vita_training.loop`, which says what one step computes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from vita_training import synthetic
from vita_training.averaging import WeightAverage
from vita_training.loop import Batch, Trainer
from vita_training.prefetch import batches
from vita_training.progress import progress


def schedule(step: int, steps: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up then cosine decay to ``min_ratio`` of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def max_shapes_at(step: int, steps: int, curriculum: list[tuple[float, int]]) -> int:
    """The most shapes a training scene may hold at ``step``: the last curriculum entry already reached."""
    allowed = synthetic.MAX_SHAPES
    for fraction, most in sorted(curriculum):
        if step >= fraction * steps:
            allowed = int(most)
    return allowed


def fit(trainer: Trainer, *, steps: int, images_per_step: int, questions_per_image: int, lr: float,
        warmup_steps: int, min_lr_ratio: float, weight_decay: float, grad_clip: float,
        curriculum: list[tuple[float, int]] = (), log_every: int = 20, eval_every: int = 0,
        log: Callable[[str], None] = print, stage: str = "answers", first_scene: int = 0,
        scene_pool: int = 0, workers: int = 0, average_start: int | None = None) -> list[dict[str, float]]:
    """Optimise the trained modules; scene ``first_scene + step * images_per_step + i`` of the train split is
    image i of step ``step`` (modulo ``scene_pool`` when set: the stage cycles through that many scenes, asking
    fresh questions each time round, and a frozen tower encodes each once), so a run is a pure function of its
    config. Returns the logged history (records tagged ``stage``; log lines start with ``step`` for stage two,
    ``<stage> step`` otherwise). ``workers``: processes preparing the batches ahead (:mod:`vita_training.prefetch`).
    ``average_start``: the stage ends with its weights' mean over the steps from this one on
    (:mod:`vita_training.averaging`; None: the last step's weights)."""
    if not trainer.parameters():
        raise ValueError(f"stage '{stage}' has nothing to train: every module is frozen")
    optimizer = torch.optim.AdamW(trainer.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    probe = trainer.batch([synthetic.scene_examples("heldout", 10_000 + i, 1) for i in range(32)])
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    running, running_acc = 0.0, 0.0
    average = WeightAverage(trainer.parameters(), average_start) if average_start is not None else None

    def make(step: int) -> Batch:
        most = max_shapes_at(step, steps, list(curriculum))
        slots = [step * images_per_step + i for i in range(images_per_step)]
        if scene_pool > 0:
            groups = [synthetic.scene_questions("train", first_scene + j % scene_pool, questions_per_image,
                                                j // scene_pool, most) for j in slots]
        else:
            groups = [synthetic.scene_examples("train", first_scene + j, questions_per_image, most) for j in slots]
        return trainer.batch(groups)

    if scene_pool > 0 and trainer.feature_cache is None:
        trainer.feature_cache = {}
    made = batches(make, steps, workers)
    for step in progress(range(steps), desc=stage):
        trainer.set_mode(True)
        for group in optimizer.param_groups:
            group["lr"] = lr * schedule(step, steps, warmup_steps, min_lr_ratio)
        most = max_shapes_at(step, steps, list(curriculum))
        batch = next(made)
        loss, correct = trainer.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.parameters(), grad_clip)
        optimizer.step()
        if average is not None:
            average.update(step)
        running += loss.item()
        running_acc += correct.float().mean().item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            record = {"stage": stage, "step": step + 1, "max_shapes": most, "loss": running / n,
                      "train_row_acc": running_acc / n,
                      "lr": optimizer.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - t0}
            if eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
                trainer.set_mode(False)
                with torch.no_grad():
                    record["heldout_row_acc"] = trainer.loss(probe)[1].float().mean().item()
            history.append(record)
            line = ("" if stage == "answers" else f"{stage} ") + (
                "step {step:>5}  shapes<={max_shapes}  loss {loss:.4f}  train acc {train_row_acc:.3f}  "
                "lr {lr:.2e}  {elapsed_s:.0f}s").format(**record)
            if "heldout_row_acc" in record:
                line += f"  heldout acc {record['heldout_row_acc']:.3f}"
            log(line)
            running, running_acc = 0.0, 0.0
    trainer.set_mode(False)
    if average is not None and steps > 0:
        averaged = average.apply()
        record = {"stage": stage, "step": steps, "averaged_steps": averaged}
        if eval_every:
            with torch.no_grad():
                record["averaged_heldout_row_acc"] = trainer.loss(probe)[1].float().mean().item()
        history.append(record)
        log(f"{stage}: weights averaged over the last {averaged} steps (from step {average_start + 1})"
            + (f"  heldout acc {record['averaged_heldout_row_acc']:.3f}" if eval_every else ""))
    return history
