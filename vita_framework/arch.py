"""Sizes of randomly initialised towers (``checkpoint=null``): the fields every transformer shares, written once.

Plugins extend these dataclasses with their own fields and defaults; a checkpoint's own config replaces them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TransformerArch:
    """The width, depth, heads and MLP size of a small transformer (tiny defaults: tests and experiments)."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128


@dataclass
class VisionTowerArch(TransformerArch):
    """A ViT: square images cut into square patches."""

    image_size: int = 224
    patch_size: int = 16
    layer_norm_eps: float = 1e-6
