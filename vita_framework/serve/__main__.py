"""``python -m vita_framework.serve [the CLI's overrides] [serve.<key>=...]``: the server as a Hydra app.

The same config package as ``python -m vita_framework`` (so every override of the CLI works: ``+vision=internvit
+audio=none``, ``+experiment=vita15 checkpoint=<dir>``), with the ``serve`` group (``conf/serve/default.yaml``)
appended unless the command line names one. Composition mistakes are reported as the CLI reports them.
"""

from __future__ import annotations

import sys

import hydra

from ..searchpath import register_search_path

register_search_path()


@hydra.main(version_base="1.3", config_path="pkg://vita_framework.conf", config_name="config")
def app(cfg) -> None:
    from .run import run_job

    run_job(cfg)


def main() -> None:
    from ..app_argv import app_argv

    sys.argv[1:] = app_argv(sys.argv[1:], group="serve", job_name="vita_serve")
    app()


if __name__ == "__main__":
    main()
