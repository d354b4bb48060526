"""``python -m vita_framework.train``: train a bundle of any composition on synthetic shapes, in the VITA layout.

Why: the embedded default bundle used to have random weights, so the default command answered noise. Training
it on :mod:`vita_training.synthetic` makes the default answer correctly, and makes the tests able to check that
the image really flows through tower, projector and fusion into the LLM. The same trainer takes the inference
app's component overrides (``+vision=timm``, ``projector=...``, ``fusion=...``), so a swapped component gets the
weights it needs and a design-space sweep compares trained compositions.

The run (a pure function of the config; see ``training/conf/config.yaml`` and the ``train`` presets):

1. plan it from the configs alone (:mod:`vita_training.composition`): which parts start from the starting
   bundle, which start fresh; refuse, before anything is built, what cannot be trained as asked;
2. write the starting bundle (:mod:`vita_training.start`: ``init=random`` trains a byte-level BPE and
   initialises ``arch``; ``init=default`` takes the embedded default's LLM and tokenizer) and build the pipeline
   from it with :func:`vita_framework.build` -- the very loader, components and fusion generation uses -- and
   check that training tokenises a prompt exactly as ``pipeline.prepare`` does;
3. run the stages (:mod:`vita_training.stages`): region-label warm-up, projector alignment, answers;
4. score held-out questions by generation, write the bundle from the components' ``checkpoint_state()``
   (training config, seed, data version, timings and accuracy in ``bundle_info.json``), reload it, check it
   answers the same, measure its time to first token, and write the job's ``result.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from vita_framework.weights import default_bundle_path

__all__ = ["run"]
log = logging.getLogger("vita_training")

ASSETS = default_bundle_path().parent
#: held-out questions the reloaded bundle must answer exactly as the trained pipeline did
RELOAD_CHECKED = 50


def pick_sample(pipeline: Any, n_shapes: int, limit: int = 200) -> Any:
    """The first held-out scene with ``n_shapes`` shapes whose description the pipeline generates exactly
    (None when there is none: the bundle is still written, but not shipped)."""
    from vita_training import synthetic

    for index in range(limit):
        ex = synthetic.scene_examples("heldout", index, 1)[0]
        if len(ex.scene.shapes) != n_shapes:
            continue
        text = pipeline.generate(synthetic.DESCRIBE, images=[ex.image()]).text
        if synthetic.is_correct(text, ex.scene.description()):
            return ex
    return None


def run(cfg: Any, task_overrides: list[str] | None = None) -> dict[str, Any]:
    """Train per ``cfg`` (the composed training config; ``task_overrides``: the command line's overrides, for the
    bundle's load command); returns the job's result (also written to ``result.json`` beside the bundle)."""
    from .composition import check_warmup, plan_run, run_config

    plan = plan_run(cfg, list(task_overrides or []))  # every refusal before anything is built or written
    for note in plan.warnings:
        log.warning(f"warning: {note}")
    import torch
    from omegaconf import OmegaConf

    from vita_training import synthetic

    from . import report
    from .bundle import Architecture, component_tensors, weight_prefixes, write_bundle, write_random_bundle
    from .loop import Trainer
    from .stages import train_stages
    from .start import add_audio_files, derive
    from .warmup import replay_initial_rng

    torch.set_num_threads(int(cfg.threads))
    seed, device = int(cfg.seed), str(cfg.device)
    out = Path(str(cfg.output_dir)).resolve()
    work = out.with_name(out.name + ".init")
    arch = Architecture(**OmegaConf.to_container(cfg.arch, resolve=True))
    if plan.init == "random":
        write_random_bundle(work / "bundle", work / "tokenizer", arch, int(cfg.tokenizer_vocab), seed,
                                          info={"weights": "random", "seed": seed})
        base = work / "bundle"
    else:
        base = default_bundle_path()
    start = derive(base, work / "start", run_config(cfg, "null"), plan.replaced, seed=seed)

    def load(checkpoint: Path) -> tuple[Any, Any]:
        import warnings

        import vita_framework

        run_cfg = run_config(cfg, checkpoint, device=device, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return vita_framework.build(config=run_cfg), run_cfg

    pipe, run_cfg = load(start)
    learn = cfg.learn
    flags = dict(train_vision=bool(learn.vision), train_projector=bool(learn.projector), train_llm=bool(learn.llm))
    bank, cmvn = None, None
    if pipe.audio is not None:  # audio=whale: spoken questions (vita_training.spoken)
        from .speech import HELDOUT_VOICE, SpeechBank
        from .spoken import SpokenTrainer, cmvn_stats, set_cmvn

        bank = SpeechBank()
        trainer = SpokenTrainer(pipe, bank, **flags)
        if "audio" in plan.replaced:  # a fresh encoder normalises its input with the training speech's stats
            cmvn = cmvn_stats(trainer)
            set_cmvn(trainer.audio, cmvn)
    else:
        trainer = Trainer(pipe, **flags)
    trainer.length_buckets = int(cfg.get("length_buckets", 1) or 1)
    trainer.check_prompt(synthetic.example("train", 0))
    if bank is not None:
        trainer.check_spoken_prompt(synthetic.example("train", 0))
    trainer.check_shared_prefix(trainer.batch([synthetic.scene_examples("train", i, 2) for i in range(3)]))
    check_warmup(trainer, int(cfg.vision_warmup.steps))
    sizes = report.parameters(trainer)
    log.info(f"composition: {' '.join(plan.load_overrides)}; init={plan.init}; fresh: {sorted(plan.untrained) or '-'}; "
             f"parameters: {sizes}; {trainer.image_rows} image tokens per tile in the LLM; "
             f"prompt prefix shared over the batch: {trainer.prefix_len} tokens")

    replay_initial_rng(trainer, seed)
    t0 = time.perf_counter()
    history, stage_s = train_stages(trainer, cfg)
    train_s = time.perf_counter() - t0

    heldout = synthetic.examples("heldout", int(cfg.heldout))
    accuracy, by_kind, texts = report.score(pipe, heldout)
    log.info(f"held-out accuracy (generated, {len(heldout)} questions): {accuracy:.3f} {by_kind}")
    canvases = {"typed": report.by_canvas(heldout, texts)}
    log.info(f"held-out accuracy by canvas: {canvases['typed']}")
    spoken = None
    if bank is not None:
        from .spoken import spoken_requests

        spoken = report.score(pipe, heldout, spoken_requests(pipe, heldout, bank), what="spoken held-out")
        log.info(f"held-out accuracy, spoken in the held-out voice: {spoken[0]:.3f} {spoken[1]}")
        canvases["spoken"] = report.by_canvas(heldout, spoken[2])
        log.info(f"spoken held-out accuracy by canvas: {canvases['spoken']}")
    sample = pick_sample(pipe, int(cfg.sample_shapes)) if plan.default_recipe else None

    info = {
        "weights": "trained", "data": synthetic.DATA_VERSION, "seed": seed,
        "built_by": "python -m vita_framework.train", "train_seconds": round(train_s, 1), "stage_seconds": stage_s,
        "torch_threads": int(cfg.threads), "parameters": {k: v for k, v in sizes.items() if k != "total"},
        "heldout_accuracy": round(accuracy, 4), "heldout_accuracy_by_kind": by_kind, "heldout_questions": len(heldout),
        "heldout_accuracy_by_canvas": canvases,
        "final_loss": next((r["loss"] for r in reversed(history) if "loss" in r), None),
        **({} if spoken is None else {"spoken_accuracy": round(spoken[0], 4), "spoken_accuracy_by_kind": spoken[1],
                                      "spoken_voice": HELDOUT_VOICE.key}),
        "sample": None if sample is None else {"split": "heldout", "index": sample.index,
                                               "question": synthetic.DESCRIBE, "answer": sample.scene.description()},
        "init": plan.init,
        "run_overrides": [*([] if bank is not None else ["+audio=none"]), *plan.load_overrides],
        "train_config": OmegaConf.to_container(cfg, resolve=True),
        "note": "trained on synthetic shapes: answers questions about vita_training.synthetic scenes only",
    }
    if plan.default_recipe:  # the shipped layout, byte for byte
        parts = {"vision": pipe.vision, "projector": pipe.projector, "llm": pipe.llm}
        tensors = component_tensors({**parts, **({"audio": pipe.audio} if bank is not None else {})},
                                    weight_prefixes(run_cfg))
        write_bundle(out, arch=arch, tensors=tensors, tokenizer_dir=work / "tokenizer", info=info,
                     repetition_penalty=float(cfg.repetition_penalty),
                     pad_to_square=bool(getattr(pipe.vision, "pad_to_square", False)))
    else:
        save_trained(pipe, out, start, run_cfg, info)
    if bank is not None and (cmvn is not None or plan.default_recipe):
        add_audio_files(out, pipe.audio.cfg, cmvn)
    sample_path = out.parent / "sample.png"
    if sample is not None:
        sample.image().save(sample_path, optimize=True)
        if bank is not None:
            from .spoken import write_questions

            write_questions(sample, bank, out.parent / "questions")
    reloaded, _ = load(out)
    checked = heldout[:RELOAD_CHECKED]
    _, _, again = report.score(reloaded, checked, what="held-out (reloaded bundle)")
    if again != texts[: len(checked)]:
        wrong = next(i for i, (a, b) in enumerate(zip(again, texts)) if a != b)
        raise RuntimeError(f"the written bundle answers held-out question {wrong} with {again[wrong]!r}, the trained "
                           f"pipeline with {texts[wrong]!r}")
    measured = report.latency(reloaded)
    shutil.rmtree(work, ignore_errors=True)
    (out.parent / "history.json").write_text(json.dumps(history, indent=1))
    command = report.load_command(out, plan.load_overrides)
    result = {"status": "ok", "bundle": str(out), "load_command": command, "accuracy": round(accuracy, 4),
              "accuracy_by_kind": by_kind, "heldout_questions": len(heldout), "accuracy_by_canvas": canvases,
              **measured, "parameters": sizes,
              "trained": sorted(({"projector"} if int(cfg.align.steps) > 0 else set())
                                | {k for k in ("vision", "projector", "llm") if learn[k]}
                                | ({"audio"} if bank is not None and int(cfg.speech.steps) > 0 else set())),
              **({} if spoken is None else {"spoken_accuracy": round(spoken[0], 4),
                                            "spoken_accuracy_by_kind": spoken[1]}),
              "train_s": round(train_s, 1), "stage_s": stage_s, "init": plan.init, "fresh": sorted(plan.untrained)}
    report.write_result(out.parent, result)
    log.info(f"wrote {out}; trained {train_s:.0f}s; held-out accuracy {accuracy:.3f}; {measured['visual_tokens']} "
             f"visual tokens per image; time to first token {measured['ttft_ms']:.1f} ms\nload it with: {command}")
    if cfg.ship:
        if sample is None:
            raise RuntimeError(f"not shipped: no held-out scene with {cfg.sample_shapes} shapes is described correctly")
        ship(out, sample_path)
    return result


def save_trained(pipeline: Any, out: Path, start: Path, run_cfg: Any, info: dict[str, Any]) -> None:
    """Any composition's bundle: every component's ``checkpoint_state()`` under the prefix it claims
    (:func:`vita_framework.saving.save_bundle`), configs and tokenizer from the starting bundle."""
    from vita_framework.saving import save_bundle

    from .start import describe

    if out.exists():
        shutil.rmtree(out)
    save_bundle(pipeline, out, source=start)
    describe(out, run_cfg, pipeline.vision)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    (out / "bundle_info.json").write_text(json.dumps({**info, "bytes": size}, indent=2) + "\n")


def ship(bundle: Path, sample: Path) -> None:
    """Replace the embedded default bundle and the sample image with a trained bundle and its sample."""
    target = ASSETS / "default_bundle"
    staging = ASSETS / "default_bundle.new"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(bundle, staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    shutil.copy2(sample, ASSETS / "sample.png")
    questions = sample.parent / "questions"
    if questions.is_dir():  # the sample's questions spoken in the held-out voice (tests and README use them)
        shutil.rmtree(ASSETS / "questions", ignore_errors=True)
        shutil.copytree(questions, ASSETS / "questions")
    log.info(f"shipped {bundle} -> {target} and {sample} -> {ASSETS / 'sample.png'}")
