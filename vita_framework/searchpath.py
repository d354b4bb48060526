"""Hydra search path for config groups shipped by third-party plugin packages.

A package declares ``[project.entry-points."vita_framework.conf"] name = "pkg.conf"`` and ships
``pkg/conf/<group>/<option>.yaml``; those options then appear beside the built-in ones. Hydra's own plugin
discovery (the ``hydra_plugins`` namespace) misses editable installs, so we register explicitly.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin


class VitaSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from .plugin_manager import conf_packages

        for dist, package in conf_packages():
            search_path.append(provider=f"vita-plugin:{dist}", path=f"pkg://{package}")


_registered = False


def register_search_path() -> None:
    """Make Hydra use :class:`VitaSearchPathPlugin` (idempotent)."""
    global _registered
    if not _registered:
        Plugins.instance().register(VitaSearchPathPlugin)
        _registered = True


def option_origin(group: str, option: str) -> str | None:
    """The distribution whose config package ships ``<group>/<option>.yaml`` (None: a built-in option)."""
    from importlib import resources

    from .plugin_manager import conf_packages

    for dist, package in conf_packages():
        try:
            if (resources.files(package) / group / f"{option}.yaml").is_file():
                return dist
        except (ModuleNotFoundError, TypeError):
            continue
    return None
