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
    import sys

    from .cli import run_job
    from .errors import VitaError
    from .schema import validate_run_config

    try:
        validate_run_config(cfg)
    except VitaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    run_job(cfg)
    return None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
