"""Framework overhead: ``Pipeline.generate`` vs. the same component calls made by hand.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/overhead.py [--reps 5] [--new-tokens 32]

For each config (the embedded tiny default bundle, and a random mid-size LLM with 8 layers of width 512)
and each request (text only; one image, ``vita_framework/assets/sample.png``) it times, after a warm-up,
``pipeline.generate(...)`` against a direct baseline with the same GenerationConfig and a fixed number of
new tokens (``min_new_tokens == max_new_tokens``), so both do identical work:

* text: ``model.generate`` on the precomputed ``inputs_embeds`` / ``attention_mask``;
* image: load + ``vision.preprocess`` + ``vision.encode`` + ``projector`` + ``fusion.fuse`` +
  ``model.generate`` (the token ids, which only depend on the prompt, are precomputed).

Framework and direct runs alternate; the table shows medians and framework/direct (target <= 1.05).
"""

from __future__ import annotations

import argparse
import os
import warnings
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from timing import median_times

import vita_framework
from vita_framework.media.image import load_image
from vita_framework.request import Request

IMAGE = Path(vita_framework.__file__).parent / "assets" / "sample.png"
PROMPT = "What is in this picture? Answer in detail."
BASE = ["+vision=internvit", "+audio=none", "device=cpu", "dtype=float32"]
CONFIGS = {
    "default": BASE,
    "mid-512x8": [*BASE, "checkpoint=null", "llm.arch.hidden_size=512", "llm.arch.num_hidden_layers=8",
                  "llm.arch.intermediate_size=1376", "llm.arch.num_attention_heads=8",
                  "llm.arch.num_key_value_heads=4"],
}


def direct_runner(p, images, new_tokens):
    """A closure doing the framework's work with plain component calls (no pipeline glue)."""
    prepared = p.prepare(Request(PROMPT, images=list(images)))
    ids, features, placeholder_ids = prepared.input_ids, prepared.features, p.placeholder_ids
    ids_t = torch.tensor([ids], device=p.llm.device)
    mask = torch.ones_like(ids_t)
    options = {**p.generation_options, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    config = p.llm.generation_config(options)
    config.return_dict_in_generate = True  # as the framework's backbone sets it
    model, vision, projector, fusion, embed = p.llm.model, p.vision, p.projector, p.fusion, p.llm.embed
    with torch.inference_mode():
        text_embeds = fusion.fuse(ids_t, mask, embed, features, placeholder_ids).inputs_embeds

    def run():
        with torch.inference_mode():
            if images:
                batch = vision.preprocess([load_image(i) for i in images])
                feats = list(projector(torch.stack(vision.encode(batch))).unbind(0))
                embeds = fusion.fuse(ids_t, mask, embed, {"image": feats, "audio": []},
                                     placeholder_ids).inputs_embeds
            else:
                embeds = text_embeds
            return model.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    # the framework silences this per call; the direct baseline would print it on every call otherwise
    warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds.*")
    n = args.new_tokens
    rows = []
    for name, overrides in CONFIGS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # checkpoint=null warns loudly about random weights
            p = vita_framework.build(overrides)
        for label, images in (("text", []), ("image", [IMAGE])):
            direct = direct_runner(p, images, n)
            out_f = p.generate(PROMPT, images=images, max_new_tokens=n, min_new_tokens=n)
            out_d = direct()
            same = out_f.rows[0].generated_ids == out_d.sequences[0].tolist()
            assert out_f.rows[0].tokens_out == n, "framework did not generate the fixed number of tokens"
            framework = partial(p.generate, PROMPT, images=images, max_new_tokens=n, min_new_tokens=n)
            t_f, t_d = median_times([framework, direct], args.reps, args.warmup)
            rows.append((f"{name}/{label}", t_f, t_d, t_f / t_d, same))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # wall times are only meaningful on an idle machine
    print(f"torch threads={torch.get_num_threads()} reps={args.reps} new_tokens={n} "
          f"cpus={os.cpu_count()} load avg={load}")
    print(f"{'case':<18}{'framework s':>13}{'direct s':>11}{'ratio':>8}  same tokens")
    for case, t_f, t_d, ratio, same in rows:
        flag = "" if ratio <= 1.05 else "  > 1.05"
        print(f"{case:<18}{t_f:>13.4f}{t_d:>11.4f}{ratio:>8.3f}  {same}{flag}")


if __name__ == "__main__":
    main()
