"""vita_framework: omni-modal LLM generation as swappable plugins (VITA-1.5 reproduced exactly).

``import vita_framework`` stays light (no torch); :func:`build` imports what the configured components need.
"""

from __future__ import annotations

import logging
from typing import Any

# torchao (installed for quantization, imported by transformers) logs a torch._pytree deprecation notice at import
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

__all__ = ["build", "compose"]


def build(overrides=(), *, config: Any = None):
    """Compose a config from Hydra ``overrides`` (or take ``config``) and build the pipeline."""
    from .builder import build as _build

    return _build(overrides, config=config)


def compose(overrides=()):
    """Compose and validate a config exactly as the CLI does."""
    from .config import compose as _compose

    return _compose(overrides)
