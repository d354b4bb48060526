"""``python -m vita_framework.train [key=value ...]``: the Hydra app around :func:`vita_training.run`.

The config is ``training/conf/config.yaml`` in the installed package (``pkg://vita_training.conf``), apart
from the inference app's groups, so each app's ``--help`` lists its own; it composes offline from any directory.
"""

from __future__ import annotations

import hydra

CONFIG_PATH = "pkg://vita_training.conf"
CONFIG_NAME = "config"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def app(cfg) -> None:
    from vita_training import run

    run(cfg)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
