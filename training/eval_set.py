"""A held-out eval set for ``eval.dataset=``: synthetic scenes the embedded bundle never saw, as PNGs + JSONL.

    python -m vita_training.eval_set --out eval/heldout [--n 200] [--size 224]

writes ``<out>/<index>.png`` and ``<out>/qa.jsonl`` (one request a line: ``id`` (the held-out index),
``prompt``, ``images``, ``answer``), the format :func:`vita_framework.evaluation.read_dataset` reads. The questions
are the first ``n`` of :mod:`vita_training.synthetic`'s ``heldout`` split, so two runs write the same set. ``--size``
renders the scenes at another size (the bundle's tower takes 112-pixel tiles; by default its preprocessor asks
for one tile, the whole image resized): with ``vision.max_tiles`` above 1 a 224-pixel scene becomes 2 x 2 tiles
plus a thumbnail (5 x 49 visual tokens instead of 49), the setting where visual tokens dominate the prompt
(token-reduction studies, docs/token-reduction.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import synthetic


def write_eval_set(out: str | Path, n: int = 200, size: int = synthetic.IMAGE_SIZE) -> Path:
    """Write ``n`` held-out questions with their images under ``out``; returns the JSONL path."""
    if n < 1 or size < 16:
        raise ValueError(f"--n must be >= 1 and --size >= 16; got n={n}, size={size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "qa.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for example in synthetic.examples("heldout", n):
            image = out / f"{example.index}.png"
            example.image(size).save(image)
            handle.write(
                json.dumps(
                    {
                        "id": example.index,
                        "prompt": example.question,
                        "images": [str(image.resolve())],
                        "answer": example.answer,
                    }
                )
                + "\n"
            )
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic held-out eval set (PNGs + qa.jsonl).")
    parser.add_argument("--out", type=Path, required=True, help="directory to write (created)")
    parser.add_argument("--n", type=int, default=200, help="questions (default 200)")
    parser.add_argument("--size", type=int, default=synthetic.IMAGE_SIZE, help="image side in pixels (default 224)")
    args = parser.parse_args(argv)
    path = write_eval_set(args.out, args.n, args.size)
    print(f"{path} ({args.n} held-out questions, {args.size} px images)")


if __name__ == "__main__":
    main()
