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


def with_demo_group(args: list[str]) -> list[str]:
    """``args`` with ``+demo=default`` prepended when no ``demo`` group is chosen, and the job named."""
    out = list(args)
    if not any(a.lstrip("+~").split("=", 1)[0] == "demo" for a in out):
        out.insert(0, "+demo=default")
    if not any(a.lstrip("+~").startswith("hydra.job.name=") for a in out):
        out.append("hydra.job.name=vita_demo")
    return out


def main() -> None:
    from .. import overrides
    from ..__main__ import _argv_problem, _output_dir_problem
    from ..config import compose

    problem = _argv_problem(sys.argv[1:])
    if problem is None:
        sys.argv[1:] = with_demo_group(overrides.normalise(sys.argv[1:]))
        problem = overrides.precheck(sys.argv[1:], compose) or _output_dir_problem(sys.argv[1:])
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    app()


if __name__ == "__main__":
    main()
