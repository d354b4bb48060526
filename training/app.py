"""``python -m vita_framework.train [key=value ...]``: the Hydra app around :func:`vita_training.run`.

The config is ``conf/train/config.yaml`` in the installed config package (``pkg://vita_framework.conf``,
config name ``train/config``), so it composes offline from any working directory.
"""

from __future__ import annotations

import hydra

CONFIG_PATH = "pkg://vita_framework.conf"
CONFIG_NAME = "train/config"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def app(cfg) -> None:
    from vita_training import run

    run(cfg)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
