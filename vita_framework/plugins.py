"""The plugin manager: built-ins, entry-point plugins, and the registry they fill.

Built-in components live in ``vita_plugins`` and are registered through exactly the hooks third parties
use. Third-party packages declare modules in the ``vita_framework`` entry-point group; they are loaded one
at a time, so one broken plugin warns (naming its distribution) and the others still load.
``VITA_STRICT_PLUGINS=1`` turns those warnings into errors. ``VITA_LOAD_PLUGINS=a,b`` loads only the named
entry points; ``VITA_BLOCK_PLUGINS=a,b`` skips them (built-ins may be blocked by module name too).

Run ``python -m vita_framework.plugins`` (``--json``) to list plugins, versions and components.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from . import hookspecs
from .errors import DuplicateComponentError, PluginLoadError, VitaError
from .registry import ComponentSpec, Registry

ENTRY_POINT_GROUP = "vita_framework"
CONF_ENTRY_POINT_GROUP = "vita_framework.conf"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "vita_plugins.internvit",
    "vita_plugins.whale",
    "vita_plugins.projectors",
    "vita_plugins.splice",
    "vita_plugins.slow_fast",
    "vita_plugins.qwen2",
    "vita_plugins.hf_causal_lm",
    "vita_plugins.whisper",
    "vita_plugins.timm_vision",
    "vita_plugins.siglip",
)


@dataclass
class PluginInfo:
    name: str
    package: str
    version: str
    source: str  # "builtin" or "entrypoint"
    components: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class LoadedPlugins:
    manager: pluggy.PluginManager
    registry: Registry
    plugins: dict[str, PluginInfo]
    problems: list[str]


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _strict() -> bool:
    return os.environ.get("VITA_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


def _framework_version() -> str:
    try:
        return metadata.version("vita-framework")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _problem(problems: list[str], message: str, cause: BaseException | None = None) -> None:
    if _strict():
        raise PluginLoadError(message + " (VITA_STRICT_PLUGINS=1 makes this an error)") from cause
    problems.append(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def load_plugins() -> LoadedPlugins:
    """Create a plugin manager, load built-ins and entry points, and fill a registry."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    problems: list[str] = []
    blocked = _env_list("VITA_BLOCK_PLUGINS") or set()
    only = _env_list("VITA_LOAD_PLUGINS")

    version = _framework_version()
    for modname in DEFAULT_PLUGINS:
        if modname in blocked or modname.rsplit(".", 1)[-1] in blocked:
            continue
        module = importlib.import_module(modname)
        pm.register(module, name=modname)
        infos[modname] = PluginInfo(modname, "vita-framework", version, "builtin")

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in blocked or (only is not None and ep.name not in only):
            continue
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        dist_version = ep.dist.version if ep.dist is not None else "?"
        if pm.has_plugin(ep.name) or ep.name in infos:
            first = infos[ep.name].package if ep.name in infos else "another plugin"
            _problem(problems, f"plugin name '{ep.name}' from distribution '{dist}' is already taken by "
                               f"'{first}'; it was skipped. Rename its entry point")
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
            pm.check_pending()  # an unknown (misspelled) hook name is this plugin's problem only
        except Exception as exc:  # a third party's import error must not take the others down
            if pm.has_plugin(ep.name):
                pm.unregister(name=ep.name)
            _problem(problems, f"plugin '{ep.name}' from distribution '{dist}' failed to load: "
                               f"{type(exc).__name__}: {exc}", exc)
            continue
        infos[ep.name] = PluginInfo(ep.name, dist, dist_version, "entrypoint")

    pm.check_pending()
    registry = Registry()
    for kind, hook_name in hookspecs.HOOKS_BY_KIND.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            info = infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "unknown", "?", "manual")
            infos.setdefault(impl.plugin_name, info)
            register = _make_register(registry, kind, info)
            try:
                impl.function(register=register)
            except DuplicateComponentError:
                raise
            except Exception as exc:
                if info.source == "builtin":
                    raise
                _problem(problems, f"plugin '{info.name}' from distribution '{info.package}' raised in "
                                   f"{hook_name}: {type(exc).__name__}: {exc}", exc)
    return LoadedPlugins(pm, registry, infos, problems)


def _make_register(registry: Registry, kind: str, info: PluginInfo):
    def register(name, factory, *, schema=None, description: str = "") -> None:
        registry.add(ComponentSpec(kind=kind, name=name, factory=factory, schema=schema,
                                   description=description, plugin=info.name, package=info.package,
                                   version=info.version))
        info.components.append((kind, name))

    return register


_CACHE: LoadedPlugins | None = None


def get_plugins(refresh: bool = False) -> LoadedPlugins:
    """The process-wide loaded plugins (loaded once; ``refresh=True`` reloads, e.g. after pip install)."""
    global _CACHE
    if _CACHE is None or refresh:
        _CACHE = load_plugins()
    return _CACHE


def get_registry() -> Registry:
    return get_plugins().registry


def conf_packages() -> list[tuple[str, str]]:
    """(distribution, package) pairs from the ``vita_framework.conf`` entry-point group."""
    found = []
    blocked = _env_list("VITA_BLOCK_PLUGINS") or set()
    for ep in metadata.entry_points(group=CONF_ENTRY_POINT_GROUP):
        if ep.name in blocked:
            continue
        dist = ep.dist.name if ep.dist is not None else "unknown"
        found.append((dist, ep.value.strip()))
    return found


# -- listing ----------------------------------------------------------------------------------------
def listing() -> list[dict]:
    loaded = get_plugins()
    rows = []
    for info in loaded.plugins.values():
        rows.append({
            "plugin": info.name, "package": info.package, "version": info.version, "source": info.source,
            "components": [
                {"kind": kind, "name": name, "description": loaded.registry.get(kind, name).description}
                for kind, name in info.components
            ],
        })
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [("PLUGIN", "PACKAGE", "VERSION", "KIND", "COMPONENT", "DESCRIPTION")]
    for row in rows:
        comps = row["components"] or [{"kind": "-", "name": "-", "description": ""}]
        for i, comp in enumerate(comps):
            head = (row["plugin"], row["package"], row["version"]) if i == 0 else ("", "", "")
            lines.append((*head, comp["kind"], comp["name"], comp["description"]))
    widths = [max(len(line[c]) for line in lines) for c in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(line[:5])) + "  " + line[5]
        for line in lines
    ).rstrip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        rows = listing()
    except VitaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "--json" in argv:
        print(json.dumps({"plugins": rows, "problems": get_plugins().problems}, indent=2))
    else:
        print(format_table(rows))
        for problem in get_plugins().problems:
            print(f"warning: {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
