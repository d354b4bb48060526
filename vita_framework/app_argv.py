"""The command line of an app that runs the pipeline with a config group of its own (``python -m
vita_framework.serve``, ``python -m vita_framework.demo``): the CLI's overrides, checked as the CLI checks them.
"""

from __future__ import annotations

import sys


def with_group(args: list[str], group: str, job_name: str) -> list[str]:
    """``args`` with ``+<group>=default`` first when no ``group`` option is chosen, and the Hydra job named."""
    out = list(args)
    if not any(a.lstrip("+~").split("=", 1)[0] == group for a in out):
        out.insert(0, f"+{group}=default")
    if not any(a.lstrip("+~").startswith("hydra.job.name=") for a in out):
        out.append(f"hydra.job.name={job_name}")
    return out


def app_argv(args: list[str], *, group: str, job_name: str) -> list[str]:
    """``args`` normalised (``generation.x=`` shorthands), with the app's group, and prechecked: a composition
    mistake prints the CLI's ``error: ...`` line and exits with status 2 before anything heavy is imported."""
    from . import overrides
    from .__main__ import _argv_problem, _output_dir_problem
    from .config import compose

    problem = _argv_problem(args)
    if problem is None:
        args = with_group(overrides.normalise(args), group, job_name)
        problem = overrides.precheck(args, compose) or _output_dir_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    return args
