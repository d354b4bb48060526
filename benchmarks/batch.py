"""Batching throughput: ``Pipeline.generate_batch`` of 8 requests vs. the same 8 run one by one.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/batch.py [--reps 3] [--new-tokens 32]

For each config (the embedded tiny default bundle, and a random mid-size LLM with 8 layers of width 512)
it builds 8 different requests (5 text only, 3 with one image: ``vita_framework/assets/sample.png`` or a
synthesized picture), then times, after a warm-up, ``pipeline.generate_batch(requests, batch_size=8)``
against a loop of ``pipeline.generate(...)``. Every row generates exactly ``--new-tokens`` tokens
(``min_new_tokens == max_new_tokens``, no eos, no stop tokens), so both do the same work.

Batched and sequential runs alternate (the first pair, the id check below, is the warm-up); the table
shows new tokens per second from the median wall times and batched/sequential (target >= 3). As a
correctness guard, the batched rows' greedy ids must equal the sequential ones.

Wall times are only meaningful on an idle machine: with more busy processes than cores, 2 torch threads
wait on each other at every op and batched steps suffer most (compare ``--threads 1``).
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from PIL import Image, ImageDraw
from timing import median_times

import vita_framework
from vita_framework.request import Request

IMAGE = Path(vita_framework.__file__).parent / "assets" / "sample.png"
BASE = ["+vision=internvit", "+audio=none", "device=cpu", "dtype=float32"]
CONFIGS = {
    "default": BASE,
    "mid-512x8": [*BASE, "checkpoint=null", "llm.arch.hidden_size=512", "llm.arch.num_hidden_layers=8",
                  "llm.arch.intermediate_size=1376", "llm.arch.num_attention_heads=8",
                  "llm.arch.num_key_value_heads=4"],
}


def synthetic_image() -> Image.Image:
    image = Image.new("RGB", (448, 448), (30, 60, 90))
    draw = ImageDraw.Draw(image)
    draw.ellipse((60, 80, 260, 280), fill=(220, 180, 40))
    draw.rectangle((250, 200, 420, 400), fill=(40, 200, 120))
    return image


def make_requests() -> list[Request]:
    """8 different requests of different lengths; 3 of them carry an image."""
    return [
        Request("What is the capital of France?"),
        Request("Describe this image.", images=[IMAGE]),
        Request("Write a short poem about the sea, the wind and the light on the water at dusk."),
        Request("List three colours."),
        Request("What shapes do you see, and where are they?", images=[synthetic_image()]),
        Request("Explain in simple words why the sky is blue during the day and red at sunset."),
        Request("Is there a person in this picture?", images=[IMAGE]),
        Request("Count from one to ten."),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=0, help="extra warm-up; the id check warms up")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: the dev machine's cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.new_tokens
    gen = {"max_new_tokens": n, "min_new_tokens": n, "eos_token_id": [], "stop_tokens": []}
    requests = make_requests()
    rows = []
    for name, overrides in CONFIGS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # checkpoint=null warns loudly about random weights
            p = vita_framework.build(overrides)

        def batched(p=p):
            return p.generate_batch(requests, batch_size=8, **gen)

        def sequential(p=p):
            return [p.generate(r.prompt, images=r.items("image"), **gen).rows[0] for r in requests]

        got_b, got_s = batched().rows, sequential()
        assert all(r.error is None and r.tokens_out == n for r in got_b + got_s), "a row missed the fixed count"
        diff = [i for i, (b, s) in enumerate(zip(got_b, got_s)) if b.generated_ids != s.generated_ids]
        assert not diff, f"{name}: batched greedy ids differ from sequential ones in rows {diff}"
        t_b, t_s = median_times([batched, sequential], args.reps, args.warmup)
        total = len(requests) * n
        rows.append((name, total / t_b, total / t_s, t_s / t_b))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # wall times are only meaningful on an idle machine
    print(f"torch threads={torch.get_num_threads()} reps={args.reps} requests={len(requests)} new_tokens={n} "
          f"cpus={os.cpu_count()} load avg={load}")
    print(f"{'config':<12}{'batched tok/s':>15}{'sequential tok/s':>18}{'ratio':>8}  same ids")
    for name, tps_b, tps_s, ratio in rows:
        flag = "" if ratio >= 3 else "  < 3"
        print(f"{name:<12}{tps_b:>15.1f}{tps_s:>18.1f}{ratio:>8.2f}  True{flag}")


if __name__ == "__main__":
    main()
