"""``python -m vita_framework.train``: train the tiny bundle on synthetic shapes and write it in the VITA layout.

Why: the embedded default bundle used to have random weights, so the default command answered noise. Training
it on :mod:`vita_training.synthetic` makes the default answer correctly, and makes the tests able to check that
the image really flows through tower, projector and fusion into the LLM.

The run (a pure function of the config; see ``training/conf/config.yaml``):

1. train a byte-level BPE on the prompts and the dataset's text; initialise the modules of ``arch``;
2. write them as a bundle and build the pipeline from it with :func:`vita_framework.build` -- the very
   loader, components and fusion generation uses -- and check that training tokenises a prompt exactly as
   ``pipeline.prepare`` does;
3. warm the tower and projector up on dense region labels (:mod:`vita_training.warmup`), then train
   the selected modules on answer tokens only (:mod:`vita_training.loop`);
4. score held-out questions by generation, pick the shipped sample scene, write the bundle from the components'
   ``checkpoint_state()`` (training config, seed, data version, timings and accuracy in ``bundle_info.json``),
   reload it and check it answers the same.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from vita_framework.weights import default_bundle_path

__all__ = ["run"]

ASSETS = default_bundle_path().parent


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


def run(cfg: Any) -> dict[str, Any]:
    """Train per ``cfg`` (the composed training config); returns the bundle_info written."""
    import torch
    from omegaconf import OmegaConf

    from vita_training import synthetic

    from .bundle import (
        Architecture,
        build_pipeline,
        component_tensors,
        weight_prefixes,
        write_bundle,
        write_random_bundle,
    )
    from .loop import Trainer, fit, generated_accuracy
    from .warmup import replay_initial_rng, warm_up_vision

    torch.set_num_threads(int(cfg.threads))
    out = Path(str(cfg.output_dir)).resolve()
    work = out.with_name(out.name + ".init")
    arch = Architecture(**OmegaConf.to_container(cfg.arch, resolve=True))
    n_tokens, _ = write_random_bundle(work / "bundle", work / "tokenizer", arch, int(cfg.tokenizer_vocab),
                                      int(cfg.seed), info={"weights": "random", "seed": int(cfg.seed)})
    pipe, run_cfg = build_pipeline(work / "bundle", str(cfg.device), int(cfg.seed))
    trainer = Trainer(pipe, train_vision=bool(cfg.train.vision), train_projector=bool(cfg.train.projector),
                      train_llm=bool(cfg.train.llm))
    trainer.check_prompt(synthetic.example("train", 0))
    trainer.check_shared_prefix(trainer.batch([synthetic.scene_examples("train", i, 2) for i in range(3)]))
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in trainer.modules.items()}
    print(f"parameters: {sizes}; tokenizer {n_tokens} tokens; {trainer.tokens_per_tile} image tokens per tile; "
          f"prompt prefix shared over the batch: {trainer.prefix_len} tokens", flush=True)

    replay_initial_rng(trainer, int(cfg.seed))
    t0 = time.perf_counter()
    vision_cfg = cfg.vision_warmup
    history = warm_up_vision(trainer, steps=int(vision_cfg.steps), images_per_step=int(vision_cfg.images_per_step),
                             lr=float(vision_cfg.lr), weight_decay=float(cfg.weight_decay),
                             grad_clip=float(cfg.grad_clip), log_every=int(cfg.log_every),
                             log=lambda line: print(line, flush=True))
    history += fit(trainer, steps=int(cfg.steps), images_per_step=int(cfg.images_per_step),
                  questions_per_image=int(cfg.questions_per_image), lr=float(cfg.lr),
                  warmup_steps=int(cfg.warmup_steps), min_lr_ratio=float(cfg.min_lr_ratio),
                  weight_decay=float(cfg.weight_decay), grad_clip=float(cfg.grad_clip),
                  curriculum=[tuple(c) for c in OmegaConf.to_container(cfg.curriculum, resolve=True)],
                  log_every=int(cfg.log_every), eval_every=int(cfg.eval_every),
                  log=lambda line: print(line, flush=True))
    train_s = time.perf_counter() - t0

    heldout = synthetic.examples("heldout", int(cfg.heldout))
    accuracy, texts = generated_accuracy(pipe, heldout)
    by_kind = {}
    for kind in synthetic.QUESTION_KINDS:
        marks = [synthetic.is_correct(t, e.answer) for t, e in zip(texts, heldout) if e.kind == kind]
        by_kind[kind] = round(sum(marks) / len(marks), 4) if marks else None
    print(f"held-out accuracy (generated, {len(heldout)} questions): {accuracy:.3f} {by_kind}", flush=True)
    sample = pick_sample(pipe, int(cfg.sample_shapes))

    info = {
        "weights": "trained", "data": synthetic.DATA_VERSION, "seed": int(cfg.seed),
        "built_by": "python -m vita_framework.train", "train_seconds": round(train_s, 1),
        "torch_threads": int(cfg.threads), "parameters": sizes,
        "heldout_accuracy": round(accuracy, 4), "heldout_accuracy_by_kind": by_kind, "heldout_questions": len(heldout),
        "final_loss": history[-1]["loss"] if history else None,
        "sample": None if sample is None else {"split": "heldout", "index": sample.index,
                                               "question": synthetic.DESCRIBE, "answer": sample.scene.description()},
        "train_config": OmegaConf.to_container(cfg, resolve=True),
        "note": "trained on synthetic shapes: answers questions about vita_training.synthetic scenes only",
    }
    tensors = component_tensors({"vision": pipe.vision, "projector": pipe.projector, "llm": pipe.llm},
                                weight_prefixes(run_cfg))
    size = write_bundle(out, arch=arch, tensors=tensors, tokenizer_dir=work / "tokenizer", info=info,
                        repetition_penalty=float(cfg.repetition_penalty))
    sample_path = out.parent / "sample.png"
    if sample is not None:
        sample.image().save(sample_path, optimize=True)
    reloaded, _ = build_pipeline(out, str(cfg.device), int(cfg.seed))
    again, _ = generated_accuracy(reloaded, heldout)
    if abs(again - accuracy) > 1e-9:
        raise RuntimeError(f"the written bundle answers {again:.3f} of held-out questions, in memory {accuracy:.3f}")
    shutil.rmtree(work)
    (out.parent / "history.json").write_text(json.dumps(history, indent=1))
    print(f"wrote {out} ({size / 1e6:.2f} MB) and {sample_path}; trained {train_s:.0f}s; "
          f"held-out accuracy {accuracy:.3f}", flush=True)
    if cfg.ship:
        if sample is None:
            raise RuntimeError(f"not shipped: no held-out scene with {cfg.sample_shapes} shapes is described correctly")
        ship(out, sample_path)
    return info


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
    print(f"shipped {bundle} -> {target} and {sample} -> {ASSETS / 'sample.png'}", flush=True)
