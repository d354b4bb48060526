"""LLM weight quantization on the embedded default bundle: weight bytes, held-out accuracy, decode tokens/s.

Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quantization.py [--questions 200] [--new-tokens 64] [--reps 3]
        [--threads 2] [--out DIR]

Writes the held-out eval set first (``vita_training.synthetic`` held-out scenes the bundle never saw, rendered at
the 224 px it was trained on, as PNGs plus ``qa.jsonl`` with ``prompt``, ``images`` and ``answer``; ``--out``, default
a temporary directory), reads it back with the framework's own reader, then for ``llm.quantization`` = none
(float32), ``int8`` and ``int4`` (torchao weight-only, CPU kernels) builds the pipeline and measures:

* the LLM's weight bytes as held in memory (packed int4 nibbles, int8 values, their scales and zero points), and
  the ratio to float32 (targets: int8 <= 0.3, int4 <= 0.2);
* accuracy on the eval set (``generate_batch``, greedy, normalised exact match as training reports it; targets:
  int8 within 1 point of float32, int4 within 3);
* decode tokens/s: the median over ``--reps`` of a text prompt generating exactly ``--new-tokens`` tokens.

Each row is followed by PASS/FAIL lines for its targets. Wall times are only meaningful on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import vita_framework
from vita_framework.evaluation import read_dataset
from vita_framework.quantization import weight_bytes
from vita_training import synthetic

BASE = ["+vision=internvit", "+audio=none", "device=cpu", "dtype=float32"]
TARGETS = {"int8": (0.3, 1.0), "int4": (0.2, 3.0)}  # bytes ratio to float32, accuracy points below float32


def write_eval_set(out: Path, n: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "qa.jsonl", "w", encoding="utf-8") as handle:
        for example in synthetic.examples("heldout", n):
            image = out / f"{example.index}.png"
            example.image().save(image)
            handle.write(json.dumps({"id": example.index, "prompt": example.question, "images": [str(image)],
                                     "answer": example.answer}) + "\n")
    return out / "qa.jsonl"


def measure(mode: str | None, requests: list, answers: list[str], new_tokens: int, reps: int) -> dict:
    pipe = vita_framework.build([*BASE, *([f"llm.quantization={mode}"] if mode else [])])
    rows = pipe.generate_batch(requests, batch_size=50, max_new_tokens=24).rows
    right = sum(synthetic.is_correct(row.text, answer) for row, answer in zip(rows, answers))
    speeds = []
    for _ in range(reps + 1):  # the first is a warm-up
        result = pipe.generate("Tell me a story.", max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        speeds.append(result.timings["decode_tokens_per_s"])
    return {"mode": mode or "float32", "bytes": weight_bytes(pipe.llm.model),
            "accuracy": 100.0 * right / len(answers), "tokens_per_s": statistics.median(speeds[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="vita-heldout-"))
    dataset = write_eval_set(out, args.questions)
    requests, answers = read_dataset(dataset)
    print(f"eval set: {dataset} ({len(answers)} held-out questions); torch {torch.__version__}, "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    rows = [measure(mode, requests, answers, args.new_tokens, args.reps) for mode in (None, "int8", "int4")]
    base = rows[0]
    print(f"{'llm.quantization':<18}{'weight bytes':>14}{'x float32':>11}{'accuracy %':>12}{'decode tok/s':>14}")
    for row in rows:
        print(f"{row['mode']:<18}{row['bytes']:>14}{row['bytes'] / base['bytes']:>11.3f}{row['accuracy']:>12.1f}"
              f"{row['tokens_per_s']:>14.1f}")
    for row in rows[1:]:
        ratio, points = TARGETS[row["mode"]]
        got = row["bytes"] / base["bytes"]
        drop = base["accuracy"] - row["accuracy"]
        print(f"{row['mode']}: bytes {got:.3f}x (target <= {ratio}) {'PASS' if got <= ratio else 'FAIL'}; "
              f"accuracy {row['accuracy']:.1f} vs {base['accuracy']:.1f} (target within {points:g} points) "
              f"{'PASS' if drop <= points else 'FAIL'}")


if __name__ == "__main__":
    main()
