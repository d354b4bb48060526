"""The training schedule: up to four stages, each training a chosen set of modules, run in order.

1. ``vision_warmup`` -- tower and projector (those in ``learn``) label each image token's region
   (:mod:`vita_training.warmup`); how the shipped bundle's tower learnt to see.
2. ``align`` -- the projector alone, everything else frozen, on answer tokens through the frozen LLM: it learns
   to speak the LLM's embedding language (LLaVA's stage one). What a swapped encoder needs first.
3. ``steps`` -- every module in ``learn`` (the LLM, usually with the projector) on answer tokens.
4. ``speech`` -- with an audio encoder (``audio=whale``): a share of the questions asked aloud, the encoder (and
   the LLM, ``speech.learn_llm``) trained on the same answers (:mod:`vita_training.spoken`); with
   ``speech.learn_encoder: false`` only the encoder's adapter, its body kept as the speech warm-up left it.

A stage with 0 steps is skipped. Every stage draws its scenes from its own range of the train split, or, with
``scene_pool``, both answer stages cycle through one pool of that many scenes (new questions each time round;
a frozen tower encodes each scene once). A run is a pure function of its config.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from omegaconf import OmegaConf

from .averaging import average_start
from .fitting import fit
from .loop import Trainer
from .warmup import warm_up_vision

log = logging.getLogger("vita_training")
# the align stage's scenes come from their own range of the train split, apart from the other stages'
ALIGN_FIRST_SCENE = 20_000_000
SPEECH_FIRST_SCENE = 30_000_000


def _log(line: str) -> None:
    log.info(line)


def train_stages(trainer: Trainer, cfg: Any) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Run the configured stages on ``trainer`` (whose ``trained`` modules are ``learn``'s); returns the logged
    history and the seconds each stage took (``warmup_s``, ``align_s``, ``answers_s``)."""
    learned = list(trainer.trained)
    seconds: dict[str, float] = {}
    pool = int(cfg.get("scene_pool", 0) or 0)
    workers = int(cfg.get("workers", 0) or 0)
    shared = dict(
        min_lr_ratio=float(cfg.min_lr_ratio),
        weight_decay=float(cfg.weight_decay),
        grad_clip=float(cfg.grad_clip),
        log_every=int(cfg.log_every),
        eval_every=int(cfg.eval_every),
        log=_log,
        scene_pool=pool,
        workers=workers,
    )

    t0 = time.perf_counter()
    warmup = cfg.vision_warmup
    threads = torch.get_num_threads()
    if workers > 0:  # a tower step this small gains little from a second thread: that core renders instead
        torch.set_num_threads(max(1, threads - workers))
    history = warm_up_vision(
        trainer,
        steps=int(warmup.steps),
        images_per_step=int(warmup.images_per_step),
        lr=float(warmup.lr),
        weight_decay=float(cfg.weight_decay),
        grad_clip=float(cfg.grad_clip),
        log_every=int(cfg.log_every),
        log=_log,
        scene_pool=pool,
        interior_kind=bool(warmup.get("interior_kind", False)),
        workers=workers,
    )
    torch.set_num_threads(threads)
    seconds["warmup_s"] = time.perf_counter() - t0

    align = cfg.align
    if int(align.steps) > 0:
        t0 = time.perf_counter()
        trainer.learn(["projector"])
        history += fit(
            trainer,
            steps=int(align.steps),
            images_per_step=int(align.images_per_step),
            questions_per_image=int(align.questions_per_image),
            lr=float(align.lr),
            warmup_steps=int(align.warmup_steps),
            stage="align",
            first_scene=0 if pool else ALIGN_FIRST_SCENE,  # a pool is shared: encoded once
            **shared,
        )
        trainer.learn(learned)
        seconds["align_s"] = time.perf_counter() - t0

    if int(cfg.steps) > 0 and learned:
        t0 = time.perf_counter()
        history += fit(
            trainer,
            steps=int(cfg.steps),
            images_per_step=int(cfg.images_per_step),
            questions_per_image=int(cfg.questions_per_image),
            lr=float(cfg.lr),
            warmup_steps=int(cfg.warmup_steps),
            curriculum=[tuple(c) for c in OmegaConf.to_container(cfg.curriculum, resolve=True)],
            average_start=average_start(cfg.get("average_from"), int(cfg.steps), "average_from"),
            **shared,
        )
        seconds["answers_s"] = time.perf_counter() - t0
    spoken = cfg.get("speech")
    if spoken is not None and int(spoken.steps) > 0 and "audio" in trainer.modules:
        from .specmask import feature_masks
        from .speech import perturbation
        from .spoken import freeze_encoder_body, warm_up_speech

        t0 = time.perf_counter()
        # speech.threads: this stage's torch threads (null: `threads`), so a run can give its speech stage another
        # setting than the answer stage's (each setting sums floats in its own order: other bytes)
        speech_threads = spoken.get("threads")
        if speech_threads is not None:
            torch.set_num_threads(int(speech_threads))
            log.info(f"speech: {torch.get_num_threads()} torch threads (speech.threads)")
        # speech.channels_last: the whale's two subsampling convolutions are most of a speech step on a CPU;
        # their weights in channels-last layout let oneDNN run them (forward and backward) in ~60 % of the time,
        # the same sums in another order (~1e-6 apart); the bundle is written in the usual layout
        channels_last = bool(spoken.get("channels_last", False))
        if channels_last:
            trainer.audio.to(memory_format=torch.channels_last)
        trainer.perturb = perturbation(spoken.get("augment"))
        trainer.masks = feature_masks(spoken.get("specaugment"))
        history += warm_up_speech(trainer, steps=int(spoken.warmup.steps), clips_per_step=int(spoken.warmup.clips),
                                  lr=float(spoken.warmup.lr), weight_decay=float(cfg.weight_decay),
                                  grad_clip=float(cfg.grad_clip), log_every=int(cfg.log_every), log=_log)
        trainer.learn(["audio", *(["llm"] if bool(spoken.learn_llm) else [])])
        if not bool(spoken.get("learn_encoder", True)):  # the body keeps what the warm-up taught it
            log.info(f"speech: the whale's encoder body stays as the warm-up left it "
                     f"({freeze_encoder_body(trainer.audio)} tensors); its adapter learns")
        trainer.spoken_share = float(spoken.spoken_share)
        trainer.distill = float(spoken.get("distill") or 0.0)
        history += fit(
            trainer,
            steps=int(spoken.steps),
            images_per_step=int(spoken.images_per_step),
            questions_per_image=int(spoken.questions_per_image),
            lr=float(spoken.lr),
            warmup_steps=int(spoken.warmup_steps),
            stage="speech",
            first_scene=0 if pool else SPEECH_FIRST_SCENE,
            average_start=average_start(spoken.get("average_from"), int(spoken.steps), "speech.average_from"),
            **{**shared, "workers": int(spoken.get("workers", 0) or 0)},
        )
        trainer.spoken_share = 0.0
        trainer.distill = 0.0
        trainer.perturb = None
        trainer.masks = None
        if channels_last:
            trainer.audio.to(memory_format=torch.contiguous_format)
        trainer.learn(learned)
        torch.set_num_threads(threads)
        seconds["speech_s"] = time.perf_counter() - t0
    trainer.set_mode(False)
    return history, {k: round(v, 1) for k, v in seconds.items()}
