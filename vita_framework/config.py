"""Composing a run config with Hydra's compose API, exactly as the CLI composes it (no torch import)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CONFIG_MODULE = "vita_framework.conf"
CONFIG_NAME = "config"


def compose(overrides: Sequence[str] = (), *, return_hydra_config: bool = False) -> Any:
    """The composed and validated config for ``overrides`` (e.g. ``["+vision=internvit", "+audio=none"]``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from .overrides import normalise
    from .schema import validate_run_config
    from .searchpath import register_search_path

    register_search_path()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = hydra_compose(CONFIG_NAME, overrides=normalise(overrides), return_hydra_config=return_hydra_config)
    validate_run_config(cfg)
    return cfg
