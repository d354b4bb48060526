"""The hook module named by the ``vita_framework`` entry point: one ``register`` call per modality or component.

It imports only the light option/factory modules (no torch), so ``python -m vita_framework.plugins`` and
config composition stay fast; the factories import torch when a component is actually built.
"""

from __future__ import annotations

from typing import Any

from vita_framework.hookspecs import hookimpl

from .depth import DEPTH, DepthPatchCNNOptions, build_depth_patch_cnn
from .mean_pool import MeanPoolOptions, build_mean_pool_splice
from .perceiver import PerceiverResamplerOptions, build_perceiver_resampler


@hookimpl
def vita_register_modalities(register: Any) -> None:
    # a new input kind: request key `depths`, marker `<depth>`, and a new encoder kind (config group) `depth`
    register(DEPTH)


@hookimpl
def vita_register_encoders(register: Any) -> None:
    # the generic encoder hook takes the kind first: `depth` exists because DEPTH declared it
    register("depth", "depth_patch_cnn", build_depth_patch_cnn, schema=DepthPatchCNNOptions,
             description="depth maps -> (image_size/patch_size)^2 tokens at the LLM width (patch-embedding CNN)")


@hookimpl
def vita_register_projectors(register: Any) -> None:
    register("perceiver_resampler", build_perceiver_resampler, schema=PerceiverResamplerOptions,
             description="num_latents learned queries cross-attend over each tile's tokens "
                         "(token-compressing: num_latents tokens per tile)")


@hookimpl
def vita_register_fusion_strategies(register: Any) -> None:
    register("mean_pool_splice", build_mean_pool_splice, schema=MeanPoolOptions,
             description="average every `factor` consecutive vision tokens per tile/frame, then splice")
