"""Video cost: a 16-frame video with ``fusion=splice`` vs. ``fusion=slow_fast``, tokens and time to first token.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/video.py [--reps 5] [--frames 20]

It writes a synthetic clip (``--frames`` 96x72 PNG frames of moving shapes, at 1 frame per second, so a
20-frame clip lasts 20 s and the sampler keeps 16 frames) to a temporary directory, builds the embedded
tiny default bundle twice (``+vision=internvit +audio=none device=cpu dtype=float32`` with ``fusion=splice``
and with ``fusion=slow_fast``) and runs ``pipeline.generate("What happens?", videos=[dir], video_fps=1,
max_new_tokens=8)`` on each, alternately after a warm-up. The table shows the prompt's video and total
tokens, the medians of ``encode_s`` (``prepare``: frame loading, the vision encoder, which does the same
work for both, and slow_fast's pooling), ``time_to_first_token_s`` (that plus fusion and prefill) and the
call's wall time, and splice/slow_fast ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from PIL import Image, ImageDraw

import vita_framework

BASE = ["+vision=internvit", "+audio=none", "device=cpu", "dtype=float32"]
FUSIONS = ("splice", "slow_fast")
PROMPT = "What happens?"


def write_frames(directory: Path, count: int) -> None:
    """``count`` 96x72 frames: a ball crossing left to right and a square falling, on a fading background."""
    for i in range(count):
        t = i / max(count - 1, 1)
        image = Image.new("RGB", (96, 72), (int(40 + 150 * t), 90, int(190 - 150 * t)))
        draw = ImageDraw.Draw(image)
        x = int(4 + 72 * t)
        draw.ellipse((x, 24, x + 20, 44), fill=(240, 210, 40))
        y = int(2 + 50 * t)
        draw.rectangle((60, y, 76, y + 16), fill=(30, 200, 90))
        image.save(directory / f"frame_{i:03d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: the dev machine's cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipes = {}
    for fusion in FUSIONS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipes[fusion] = vita_framework.build([*BASE, f"fusion={fusion}"])
    samples = {f: {"encode s": [], "TTFT s": [], "call s": []} for f in FUSIONS}
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp)
        write_frames(clip, args.frames)
        for rep in range(args.warmup + args.reps):  # alternate, reversing the order every other rep
            for fusion in FUSIONS if rep % 2 == 0 else FUSIONS[::-1]:
                t0 = time.perf_counter()
                result = pipes[fusion].generate(PROMPT, videos=[clip], video_fps=1, max_new_tokens=args.new_tokens)
                elapsed = time.perf_counter() - t0
                counts[fusion] = result.rows[0].tokens_in
                if rep >= args.warmup:
                    got = samples[fusion]
                    got["encode s"].append(result.timings["encode_s"])
                    got["TTFT s"].append(result.timings["time_to_first_token_s"])
                    got["call s"].append(elapsed)
    table = {f: {"video tok": counts[f]["video"], "total tok": counts[f]["total"],
                 **{k: statistics.median(v) for k, v in samples[f].items()}} for f in FUSIONS}
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # wall times are only meaningful on an idle machine
    print(f"torch threads={torch.get_num_threads()} reps={args.reps} frames={args.frames} at 1 fps "
          f"max_new_tokens={args.new_tokens} cpus={os.cpu_count()} load avg={load}")
    columns = list(table[FUSIONS[0]])
    print(f"{'fusion':<11}" + "".join(f"{c:>11}" for c in columns))
    for f in FUSIONS:
        print(f"{f:<11}" + "".join(f"{v:>11}" if isinstance(v, int) else f"{v:>11.3f}" for v in table[f].values()))
    a, b = FUSIONS
    print(f"{'ratio':<11}" + "".join(f"{table[a][c] / table[b][c]:>11.2f}" for c in columns) + f"  ({a}/{b})")

if __name__ == "__main__":
    main()
