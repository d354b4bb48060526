"""``python -m vita_framework.memory <overrides> [--json] [--budget-gb N]``: will this run fit, before loading it?

Prints, for the run the overrides describe (the same overrides as ``python -m vita_framework``), each component's
parameters and bytes in the chosen dtype and quantization, the KV cache per token and at the context length, an
activation estimate, and whether it fits the device (its free memory: the GPU's, or the host's MemAvailable) or
the given budget. Computed from configs alone on the meta device in seconds, full-size VITA-1.5 included; for a
hub checkpoint only its config files are fetched. ``--json`` prints one object (``components``,
``kv_cache_bytes_per_token``, ``total_bytes``, ``fits``, ...). Exit status 0 when it fits (or nothing is known to
compare with), 1 when it does not, 2 on a configuration error.

The run itself (``python -m vita_framework``) refuses, before fetching or loading any weight, a configuration this
plan says will not fit: when ``memory_budget_gb`` is set, and on CUDA against the GPU's free memory.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from .errors import MemoryPlanError, VitaError
from .memory_plan import GIB, MemoryPlan, compute_plan, plan_device

__all__ = ["MemoryPlan", "check_fits", "compute_plan", "main", "render", "resource_problems"]


def _gib(value: int) -> str:
    return f"{value / GIB:.2f} GiB" if value >= GIB / 10 else f"{value / 2**20:.1f} MiB"


def _count(value: int) -> str:
    return f"{value / 1e9:.2f} B" if value >= 1e8 else f"{value / 1e6:.2f} M" if value >= 1e4 else str(value)


def render(plan: MemoryPlan) -> str:
    """The plan as a table (what the CLI prints)."""
    lines = [f"memory plan: device {plan.device}, dtype {plan.dtype}",
             f"{'component':<11}{'name':<14}{'params':>11}{'bytes':>13}  storage"]
    for kind, c in plan.components.items():
        storage = (c.quantization or plan.dtype) + (" (built on first use)" if c.lazy else "")
        lines.append(f"{kind:<11}{c.component:<14}{_count(c.params):>11}{_gib(c.bytes):>13}  {storage}")
    lines.append(f"{'weights':<25}{'':>11}{_gib(plan.total_bytes):>13}")
    at_max = plan.kv_cache_bytes_per_token * (plan.max_position_embeddings or 0)
    lines.append(f"KV cache: {plan.kv_cache_bytes_per_token / 1024:.1f} KiB/token; {plan.context_length} tokens "
                 f"(the run's context) x {plan.batch_size} row(s) = {_gib(plan.kv_cache_bytes)}"
                 + (f" (at max_position_embeddings {plan.max_position_embeddings}: {_gib(at_max)})" if at_max else ""))
    lines.append(f"activations (estimate, prefill of the whole context): {_gib(plan.activation_bytes)}")
    for device, size in (plan.devices or {}).items():
        limit = plan.device_limits.get(device)
        lines.append(f"  on {device}: {_gib(size)}" + (f" of {_gib(limit)}" if limit else ""))
    needed = f"needed: {_gib(plan.required_bytes)}"
    if plan.fits is None:
        lines.append(f"{needed}; no budget known (give --budget-gb)")
    else:
        spare = (plan.budget_bytes or 0) - plan.required_bytes
        verdict = "fits" if plan.fits else "does NOT fit"
        lines.append(f"{needed} of {_gib(plan.budget_bytes or 0)} ({plan.budget_source}): {verdict}"
                     + (f" ({_gib(spare)} spare)" if plan.fits and spare > 0 else ""))
    return "\n".join(lines)


def refusal(plan: MemoryPlan) -> str:
    parts = ", ".join(f"{k} {_gib(c.bytes)}" for k, c in plan.components.items() if c.bytes)
    over = "; ".join(f"{d} needs {_gib(b)} of its {_gib(limit)}" for d, (b, limit) in plan.over_limit.items())
    return (f"the memory plan says this run does not fit {plan.device}: it needs {_gib(plan.required_bytes)} "
            f"(weights {_gib(plan.total_bytes)}: {parts}; KV cache {_gib(plan.kv_cache_bytes)} for "
            f"{plan.context_length} tokens x {plan.batch_size}; activations ~{_gib(plan.activation_bytes)})"
            + (f" and {over}" if over else f" but {plan.budget_source} is {_gib(plan.budget_bytes or 0)}")
            + ". Quantize (llm.quantization=int8 or int4), use dtype=bfloat16, spread the LLM (llm.device_map=auto), "
              "drop an encoder (+audio=none), or raise memory_budget_gb; `python -m vita_framework.memory <the same "
              "overrides>` shows the plan")


def check_fits(cfg: Any) -> None:
    """Refuse, before any weight is fetched or read, a run the plan says will not fit: when ``memory_budget_gb``
    is set, or on CUDA (against the GPU's free memory). Other runs are not planned (it would cost time)."""
    from .planning import plannable

    explicit = cfg.get("memory_budget_gb") is not None
    if not explicit and (not plan_device(str(cfg.get("device", "auto"))).startswith("cuda") or plannable(cfg)):
        return
    try:
        plan = compute_plan(cfg)
    except VitaError:
        raise  # the build would meet the same problem (a checkpoint that is not there, an unplannable LLM)
    except Exception as exc:  # a third-party component the plan cannot build on meta: not a reason to refuse
        if explicit:
            raise MemoryPlanError(f"memory_budget_gb is set but the memory plan failed ({type(exc).__name__}: "
                                  f"{exc}); drop memory_budget_gb to run without a plan") from None
        import warnings

        warnings.warn(f"memory plan skipped: {type(exc).__name__}: {exc}", stacklevel=2)
        return
    if plan.fits is False:
        raise MemoryPlanError(refusal(plan))


def resource_problems(cfg: Any) -> list[str]:
    """Run-validation checks (cheap): ``memory_budget_gb`` and each component's quantization mode on the device."""
    from .quantization import mode_problems
    from .schema import component_groups

    problems = []
    budget = cfg.get("memory_budget_gb")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        problems.append(f"memory_budget_gb must be a positive number of GiB (or null); got {budget!r}")
    modes = {kind: node.get("quantization") for kind in component_groups()
             if hasattr(node := cfg.get(kind), "keys") and node.get("quantization") is not None}
    if modes:
        device = plan_device(str(cfg.get("device", "auto")))
        dtype = str(cfg.get("dtype", "auto"))
        dtype = ("bfloat16" if device.startswith("cuda") else "float32") if dtype == "auto" else dtype
        for kind, mode in modes.items():
            problems += mode_problems(str(mode), key=f"{kind}.quantization", device=device, dtype=dtype)
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return 0
    as_json = "--json" in args
    budget, overrides, i = None, [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            pass
        elif arg == "--budget-gb" or arg.startswith("--budget-gb="):
            value = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
            i += 0 if "=" in arg else 1
            try:
                budget = float(value)
            except ValueError:
                print(f"error: --budget-gb takes a number of GiB; got {value!r}", file=sys.stderr)
                return 2
        elif arg.startswith("--"):
            print(f"error: unknown option {arg}; use --json, --budget-gb N or config overrides", file=sys.stderr)
            return 2
        else:
            overrides.append(arg)
        i += 1
    try:
        import logging

        from .config import compose

        logging.getLogger("transformers").setLevel(logging.ERROR)
        cfg = compose(overrides)
        from .validation import validate_run

        validate_run(cfg, request_inputs=False)
        plan = compute_plan(cfg, budget_gb=budget)
    except Exception as exc:  # the framework's errors, and Hydra's for a bad override
        if not isinstance(exc, VitaError) and not type(exc).__module__.startswith(("hydra", "omegaconf")):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan.to_dict(), indent=2) if as_json else render(plan))
    return 1 if plan.fits is False else 0


if __name__ == "__main__":
    sys.exit(main())
