"""Visual-token reduction on the embedded default bundle: accuracy against time to first token, side by side.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/reduction.py [--questions 200] [--size 224] [--max-tiles 1]
        [--methods splice,avgpool,visionzip,fastv] [--keeps 1.0,0.5,0.25] [--ttft-requests 24] [--threads 1]

Writes the held-out eval set (``vita_training.eval_set``: synthetic scenes the bundle never saw, ``--size`` pixels;
``--size 448 --max-tiles 6`` gives 2 x 2 tiles plus a thumbnail per image, where visual tokens dominate the prompt)
and builds one pipeline per (method, keep) in this process (``+vision=internvit +audio=none``, float32, CPU;
``splice`` is the all-tokens baseline). Then, for every configuration:

* accuracy: ``generate_batch`` over the whole set (left-padded batches, greedy), normalised exact match;
* visual tokens: the mean of ``tokens_in.image`` per request, i.e. what the LLM keeps after the reduction;
* time to first token: after a warm-up, the first ``--ttft-requests`` questions one at a time (``generate``, one new
  token), the configurations interleaved request by request so that machine load hits them alike; the median of
  ``time_to_first_token_s`` (image load, tiling, vision tower, projector, reduction, fusion, prefill) and of the
  LLM prefill alone (that minus ``encode_s`` and ``fuse_s``).

Prints the Pareto table (a row is on the front when no other row is at least as accurate and faster) and, for each
method at the smallest keep, the issue's targets: accuracy within 3 points of all tokens, TTFT <= 0.6x.

``--mid`` measures time only, where the LLM's prefill is most of the time to first token: ``checkpoint=null`` with
a random mid-size Qwen2 (8 layers of width 512, as ``batch.py``) and the random tiny InternViT at 448-pixel tiles
(256 visual tokens per tile; use ``--size 448``). Its answers are noise, so no accuracy is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import vita_framework
from vita_framework.evaluation import read_dataset
from vita_training import synthetic
from vita_training.eval_set import write_eval_set

BASE = ["+vision=internvit", "+audio=none", "device=cpu", "dtype=float32"]
MID = [
    "checkpoint=null",
    "llm.arch.hidden_size=512",
    "llm.arch.num_hidden_layers=8",
    "llm.arch.intermediate_size=1376",
    "llm.arch.num_attention_heads=8",
    "llm.arch.num_key_value_heads=4",
]
TARGET_POINTS, TARGET_TTFT = 3.0, 0.6


def configurations(methods: list[str], keeps: list[float]) -> list[tuple[str, float]]:
    """``splice`` once (keep 1.0), every other method at every keep."""
    out = [("splice", 1.0)] if "splice" in methods else []
    return out + [(m, k) for m in methods if m != "splice" for k in keeps]


def build(method: str, keep: float, max_tiles: int, mid: bool) -> object:
    overrides = [*BASE, *(MID if mid else []), f"vision.max_tiles={max_tiles}", f"fusion={method}"]
    if method != "splice":
        overrides.append(f"fusion.keep={keep}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vita_framework.build(overrides)


def accuracy(pipe: object, requests: list, answers: list[str], batch_size: int, new_tokens: int) -> tuple[float, float]:
    """(accuracy %, mean visual tokens per request) over the eval set."""
    rows = pipe.generate_batch(requests, batch_size=batch_size, max_new_tokens=new_tokens).rows
    right = sum(synthetic.is_correct(row.text, answer) for row, answer in zip(rows, answers))
    visual = statistics.mean(row.tokens_in.get("image", 0) for row in rows)
    return 100.0 * right / len(answers), visual


def time_to_first_token(pipes: dict, requests: list, count: int, warmup: int) -> dict:
    """Median TTFT and LLM prefill (ms) per configuration, interleaved request by request."""
    ttft: dict = {key: [] for key in pipes}
    prefill: dict = {key: [] for key in pipes}
    keys = list(pipes)
    for i in range(warmup + count):
        request = requests[i % len(requests)]
        order = keys[i % len(keys) :] + keys[: i % len(keys)]  # rotate who goes first
        for key in order:
            timings = pipes[key].generate(request, max_new_tokens=1).timings
            if i >= warmup:
                ttft[key].append(1000 * timings["time_to_first_token_s"])
                prefill[key].append(1000 * (timings["time_to_first_token_s"] - timings["encode_s"] - timings["fuse_s"]))
    return {key: (statistics.median(ttft[key]), statistics.median(prefill[key])) for key in keys}


def pareto(rows: list[dict]) -> None:
    """Mark each row on the accuracy / TTFT front."""
    for row in rows:
        row["front"] = not any(
            o is not row and not o["accuracy"] < row["accuracy"] and o["ttft"] < row["ttft"] for o in rows
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--size", type=int, default=synthetic.IMAGE_SIZE, help="eval image side in pixels")
    parser.add_argument("--max-tiles", type=int, default=1, help="vision.max_tiles")
    parser.add_argument("--methods", default="splice,avgpool,visionzip,fastv")
    parser.add_argument("--keeps", default="1.0,0.5,0.25")
    parser.add_argument("--ttft-requests", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on the shared 2-core box)")
    parser.add_argument("--mid", action="store_true", help="random mid-size LLM: time to first token only")
    parser.add_argument("--out", type=Path, default=None, help="where the eval set is written (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keeps = [float(k) for k in args.keeps.split(",")]
    configs = configurations(args.methods.split(","), keeps)
    if not configs or configs[0] != ("splice", 1.0):
        parser.error("--methods must include splice (the all-tokens baseline)")
    out = args.out or Path(tempfile.mkdtemp(prefix="vita-reduction-"))
    requests, answers = read_dataset(write_eval_set(out, args.questions, args.size))
    print(
        f"eval set: {out} ({len(answers)} held-out questions, {args.size} px, vision.max_tiles={args.max_tiles}); "
        f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    pipes = {config: build(*config, args.max_tiles, args.mid) for config in configs}
    rows = []
    for (method, keep), pipe in pipes.items():
        if args.mid:  # random weights: only the token count of the first request means something
            acc, visual = float("nan"), float(pipe.prepare(requests[0]).tokens.get("image", 0))
        else:
            acc, visual = accuracy(pipe, requests, answers, args.batch_size, args.new_tokens)
        rows.append({"method": method, "keep": keep, "visual": visual, "accuracy": acc})
        print(f"  {method} keep={keep}: accuracy {acc:.1f} %, {visual:.1f} visual tokens", flush=True)
    times = time_to_first_token(pipes, requests, args.ttft_requests, args.warmup)
    for row, key in zip(rows, pipes):
        row["ttft"], row["prefill"] = times[key]
    base = rows[0]
    pareto(rows)
    print(
        f"\n{'method':<10}{'keep':>6}{'visual tok':>12}{'accuracy %':>12}{'TTFT ms':>10}{'TTFT x':>8}"
        f"{'prefill ms':>12}{'prefill x':>11}  front"
    )
    for row in rows:
        print(
            f"{row['method']:<10}{row['keep']:>6.2f}{row['visual']:>12.1f}{row['accuracy']:>12.1f}{row['ttft']:>10.1f}"
            f"{row['ttft'] / base['ttft']:>8.2f}{row['prefill']:>12.1f}{row['prefill'] / base['prefill']:>11.2f}"
            f"  {'*' if row['front'] else ''}"
        )
    print(
        f"(load average {os.getloadavg()[0]:.2f} at the end; TTFT and prefill are medians of {args.ttft_requests} "
        "single requests)"
    )
    smallest = min(keeps)
    for row in rows:
        if row["method"] == "splice" or row["keep"] != smallest:
            continue
        drop, ratio = base["accuracy"] - row["accuracy"], row["ttft"] / base["ttft"]
        if args.mid:
            print(
                f"{row['method']} keep={smallest}: TTFT {ratio:.2f}x (target <= {TARGET_TTFT}) "
                f"{'PASS' if ratio <= TARGET_TTFT else 'FAIL'} (random mid-size LLM: accuracy not measured)"
            )
            continue
        print(
            f"{row['method']} keep={smallest}: accuracy {row['accuracy']:.1f} vs {base['accuracy']:.1f} (target within "
            f"{TARGET_POINTS:g} points) {'PASS' if drop <= TARGET_POINTS else 'FAIL'}; TTFT {ratio:.2f}x (target <= "
            f"{TARGET_TTFT}) {'PASS' if ratio <= TARGET_TTFT else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
