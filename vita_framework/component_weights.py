"""The usual way a component gets its weights: from the bundle under its prefix, else random with a warning.

Written once for plugins (imports torch: call it from factories). The module is created on the meta device when
the bundle has its tensors, so no random initialisation is computed only to be overwritten.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from .devices import torch_dtype
from .weights import load_into


def module_from_bundle(make: Callable[[], Any], context: Any, prefix: str, *, name: str,
                       random_note: str = "answers are noise") -> Any:
    """``make()`` loaded from ``context.checkpoint`` under ``prefix`` (strictly), or random init with a warning;
    moved to the run's device and dtype, in eval mode."""
    import torch

    bundle = context.checkpoint
    if bundle is not None and bundle.has_prefix(prefix):
        with torch.device("meta"):
            module = make()
        load_into(module, bundle.load(prefix), what=f"{name} from '{bundle.path}' (prefix {prefix})")
    else:
        where = f"checkpoint '{bundle.path}' has no tensors under '{prefix}'" if bundle else "no checkpoint given"
        warnings.warn(f"{name} has RANDOM weights ({where}); {random_note}", stacklevel=3)
        module = make()
    return module.to(device=context.device, dtype=torch_dtype(context.dtype)).eval()
