"""Build the embedded default bundle and sample image (trained), or an untrained bundle of the same layout.

    python scripts/build_default_bundle.py [train overrides ...]     # = python -m vita_framework.train ship=true ...
    python scripts/build_default_bundle.py --random --out DIR [--seed 0] [train overrides ...]

Without ``--random`` this delegates to the trainer (``vita_framework.train``, config ``training/conf/config.yaml``):
it trains the tiny bundle on synthetic shapes and replaces ``vita_framework/assets/default_bundle`` and
``vita_framework/assets/sample.png`` (training takes minutes on two CPU cores). With ``--random`` it writes,
in seconds, an untrained bundle of the trainer's architecture and tokenizer to ``--out`` (never over the
embedded bundle unless asked explicitly), e.g. for loader experiments. Both use the VITA-1.5 layout exactly
(``vita_training.bundle.write_bundle``), so the loader that reads a real VITA-1.5 checkpoint reads them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def build_random(out: Path, seed: int, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from vita_training import bundle

    with initialize_config_module(config_module="vita_training.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    tok_dir = out.with_name(out.name + ".tokenizer")
    arch = bundle.Architecture(**OmegaConf.to_container(cfg.arch, resolve=True))
    info = {"weights": "random", "seed": seed, "built_by": "scripts/build_default_bundle.py --random",
            "note": "untrained: answers are noise"}
    try:
        n_tokens, size = bundle.write_random_bundle(out, tok_dir, arch, int(cfg.tokenizer_vocab), seed, info)
    finally:
        shutil.rmtree(tok_dir, ignore_errors=True)
    print(f"wrote {out} ({size / 1e6:.2f} MB, {n_tokens} tokens, random weights)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", action="store_true", help="write an untrained bundle to --out")
    parser.add_argument("--out", type=Path, help="output directory (required with --random)")
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args()
    if args.random:
        if args.out is None:
            parser.error("--random needs --out DIR")
        build_random(args.out, args.seed, overrides)
        return
    if args.out is not None:
        overrides = [f"output_dir={args.out.resolve()}", *overrides]
    else:
        overrides = ["ship=true", *overrides]
    sys.exit(subprocess.call([sys.executable, "-m", "vita_framework.train", f"seed={args.seed}", *overrides]))


if __name__ == "__main__":
    main()
