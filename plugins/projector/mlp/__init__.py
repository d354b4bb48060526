"""Projectors from the vision width to the LLM width: ``linear`` and ``mlpNx_gelu`` (VITA-1.5 uses mlp2x_gelu).

Widths are derived from the built vision encoder and LLM. Weights come from the bundle under
``weights_prefix`` with the reference's ``nn.Sequential`` key names (0, 2, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from vita_framework.hookspecs import hookimpl


@dataclass
class ProjectorOptions:
    weights_prefix: str = "model.mm_projector."


def build_projector(options: ProjectorOptions, context: Any, *, depth: int) -> Any:
    import warnings

    import torch
    from torch import nn

    from vita_framework.devices import torch_dtype
    from vita_framework.errors import CheckpointError, ConfigError
    from vita_framework.weights import load_into

    from .model import MLPProjector

    vision = context.components.get("vision")
    llm = context.components.get("llm")
    if vision is None or llm is None:
        raise ConfigError("a projector needs a vision encoder and an LLM; add +vision=<option>")
    width_in, width_out = vision.hidden_size, llm.hidden_size
    def make() -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(width_in, width_out)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(width_out, width_out)]
        return MLPProjector(*layers)

    bundle = context.checkpoint
    if bundle is not None:
        with torch.device("meta"):
            module = make()
        state = bundle.load(options.weights_prefix)
        if not state:
            raise CheckpointError(
                f"checkpoint '{bundle.path}' has no projector tensors under '{options.weights_prefix}'"
            )
        if depth == 0 and set(state) == {"weight", "bias"}:  # a bare Linear's names
            state = {f"0.{k}": v for k, v in state.items()}
        trained_in = state["0.weight"].shape[1] if "0.weight" in state else width_in
        if trained_in != width_in:
            raise CheckpointError(
                f"the projector in '{bundle.path}' (prefix {options.weights_prefix}) was trained for vision "
                f"features of width {trained_in}, but the configured vision encoder ({type(vision).__name__}) gives "
                f"{width_in}: the bundle's projector belongs to another encoder. Either train a projector for this "
                "encoder (python -m vita_framework.train with the same +vision=... overrides), or use "
                "checkpoint=null to run every component with random weights")
        load_into(module, state, what=f"projector from '{bundle.path}' (prefix {options.weights_prefix})")
    else:
        warnings.warn("projector has RANDOM weights (no checkpoint given)", stacklevel=2)
        module = make()
    return module.to(device=context.device, dtype=torch_dtype(context.dtype)).eval()


@hookimpl
def vita_register_projectors(register):
    register("linear", partial(build_projector, depth=0), schema=ProjectorOptions,
             description="one Linear from the vision width to the LLM width")
    for depth in (2, 3, 4):
        register(f"mlp{depth}x_gelu", partial(build_projector, depth=depth), schema=ProjectorOptions,
                 description=f"Linear + {depth - 1} x (GELU, Linear); mlp2x_gelu is VITA-1.5's")
