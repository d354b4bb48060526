"""``python -m vita_framework +vision=internvit +audio=none [key=value ...]``: the Hydra app.

Composition, ``--help`` and ``--cfg job`` import no torch: the job body (``cli.run_job``) is imported only
when a job runs.
"""

from __future__ import annotations

import hydra

from .searchpath import register_search_path

register_search_path()


@hydra.main(version_base="1.3", config_path="pkg://vita_framework.conf", config_name="config")
def app(cfg) -> float | None:
    from .cli import run_job

    return run_job(cfg)


def main() -> None:
    import sys

    from . import overrides
    from .config import compose

    sys.argv[1:] = overrides.normalise(sys.argv[1:])
    problem = overrides.precheck(sys.argv[1:], compose)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    app()


if __name__ == "__main__":
    main()
