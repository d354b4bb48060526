"""``python -m vita_framework.train [+vision=...] [train=quick] [key=value ...]``: the Hydra app around
:func:`vita_training.run`.

The config is ``training/conf/config.yaml`` in the installed package (``pkg://vita_training.conf``), with the
inference app's component groups on its search path (and plugin packages' ``conf``, as the inference app
registers them), so components are chosen with the same overrides; it composes offline from any directory.
A bad configuration prints ``error: ...`` and exits with status 2, as the inference CLI does; in a multirun the
failed job is recorded in its ``result.json`` and the sweep goes on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra

CONFIG_PATH = "pkg://vita_training.conf"
CONFIG_NAME = "config"
#: ``train.vision=false`` (before ``train`` became the preset group) means ``learn.vision=false`` now
LEGACY = re.compile(r"^(\+{0,2})train\.(vision|projector|llm)=")
log = logging.getLogger("vita_training")


def rewrite_legacy(argv: list[str]) -> list[str]:
    """Old learn flags, ``train.<module>=...``, become ``learn.<module>=...`` (with a note on stderr)."""
    out = []
    for arg in argv:
        new = LEGACY.sub(lambda m: f"{m.group(1)}learn.{m.group(2)}=", arg)
        if new != arg:
            print(f"note: '{arg}' is now '{new}' (`train` is the schedule preset group: train=full|quick)",
                  file=sys.stderr)
        out.append(new)
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def app(cfg: Any) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vita_framework.errors import VitaError
    from vita_training import run

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        return float(run(cfg, list(hc.overrides.task))["accuracy"])
    except Exception as exc:
        if os.environ.get("VITA_DEBUG") or not (multirun or isinstance(exc, VitaError)):
            raise
        if not isinstance(exc, VitaError):
            log.exception("job failed with an unexpected error")
        print(f"error: {exc}", file=sys.stderr, flush=True)
        if not multirun:
            sys.exit(2)
        from .report import write_result

        write_result(Path(hc.runtime.output_dir), {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        return float("nan")


def main() -> None:
    from vita_framework.searchpath import register_search_path

    register_search_path()  # plugin packages' conf (e.g. the example's projector=perceiver_resampler)
    sys.argv[1:] = rewrite_legacy(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
