"""``perceiver_resampler``: a token-compressing projector (options and factory; no torch at import).

The built-in projectors map every vision token to one LLM token (256 per tile). A perceiver resampler
(Flamingo, Idefics2) instead lets ``num_latents`` learned queries cross-attend over the tile's tokens, so a
tile costs ``num_latents`` LLM positions whatever the encoder produced. The pipeline sizes the placeholders
from the projected features, so nothing else has to know about the compression.

Widths are derived from the built components: ``vision.hidden_size`` in, ``llm.hidden_size`` out. This is an
example: unless the bundle holds tensors under ``weights_prefix`` the weights are random, and it says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PerceiverResamplerOptions:
    """Validated by the framework against the YAML and the command line (typos fail with the full key)."""

    num_latents: int = 64  # tokens per tile after the projector
    num_heads: int = 8  # must divide the LLM width
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * LLM width
    weights_prefix: str = "model.mm_resampler."  # not VITA's mm_projector: those tensors are an MLP's


def build_perceiver_resampler(options: PerceiverResamplerOptions, context: Any) -> Any:
    """The factory: check the options against the built widths, create the module, load or warn."""
    from vita_framework.component_weights import module_from_bundle
    from vita_framework.errors import ConfigError

    from ._perceiver_impl import PerceiverResampler

    vision = context.components.get("vision")
    llm = context.components.get("llm")
    if vision is None or llm is None:
        raise ConfigError("a projector needs a vision encoder and an LLM; add +vision=<option>")
    width_in, width_out = int(vision.hidden_size), int(llm.hidden_size)
    for name in ("num_latents", "num_heads", "mlp_ratio"):
        if getattr(options, name) < 1:
            raise ConfigError(f"projector.{name} must be >= 1; got {getattr(options, name)}")
    if width_out % options.num_heads:
        raise ConfigError(f"projector.num_heads={options.num_heads} must divide the LLM width {width_out}")

    def make() -> Any:
        return PerceiverResampler(width_in, width_out, num_latents=options.num_latents,
                                  num_heads=options.num_heads, mlp_ratio=options.mlp_ratio)

    return module_from_bundle(make, context, options.weights_prefix, name="perceiver_resampler")
