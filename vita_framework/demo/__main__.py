"""``python -m vita_framework.demo [the CLI's overrides] [demo.<key>=...]``: the browser demo as a Hydra app.

The same config package as ``python -m vita_framework`` (so every override of the CLI works: ``+vision=internvit
+audio=none``, ``+experiment=vita15 checkpoint=<dir>``, ``generation.top_k=5``), with the ``demo`` group
(``conf/demo/default.yaml``) appended unless the command line names one. Composition mistakes are reported as
the CLI reports them (``error: ...``, status 2), before Gradio or torch is imported.
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

    sys.argv[1:] = app_argv(sys.argv[1:], group="demo", job_name="vita_demo")
    app()


if __name__ == "__main__":
    main()
