"""The plugin manager: built-ins, entry-point plugins, and the modality table and registry they fill.

Built-in modalities and components live in ``vita_plugins`` and are registered through exactly the hooks third
parties use. Third-party packages declare modules in the ``vita_framework`` entry-point group; they are loaded
one at a time, so one broken plugin warns (naming its distribution) and the others still load.
``VITA_STRICT_PLUGINS=1`` turns those warnings into errors. ``VITA_LOAD_PLUGINS=a,b`` loads only the named entry
points; ``VITA_BLOCK_PLUGINS=a,b`` skips them (built-ins may be blocked by module name too).

``python -m vita_framework.plugins`` (``--json``) lists what was loaded.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .contracts import CORE_CONTRACTS, AudioEncoder, Encoder, VisionEncoder
from .errors import DuplicateComponentError, DuplicateModalityError, PluginLoadError
from .modalities import ModalityTable
from .registry import ComponentSpec, Registry

#: contracts of the built-in modalities' encoder kinds; any other kind gets the generic Encoder contract
ENCODER_CONTRACTS: dict[str, type] = {"vision": VisionEncoder, "audio": AudioEncoder}

ENTRY_POINT_GROUP = "vita_framework"
CONF_ENTRY_POINT_GROUP = "vita_framework.conf"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "vita_plugins.modalities",
    "vita_plugins.vision.internvit",
    "vita_plugins.vision.timm",
    "vita_plugins.vision.siglip",
    "vita_plugins.audio.whale",
    "vita_plugins.audio.whisper",
    "vita_plugins.projector.mlp",
    "vita_plugins.fusion.splice",
    "vita_plugins.fusion.slow_fast",
    "vita_plugins.fusion.avgpool",
    "vita_plugins.fusion.visionzip",
    "vita_plugins.fusion.fastv",
    "vita_plugins.llm.qwen2",
    "vita_plugins.llm.hf_causal_lm",
    "vita_plugins.llm.vllm",
)


@dataclass
class PluginInfo:
    name: str
    package: str
    version: str
    source: str  # "builtin" or "entrypoint"
    components: list[tuple[str, str]] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)


@dataclass
class LoadedPlugins:
    manager: pluggy.PluginManager
    registry: Registry
    modalities: ModalityTable
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
    modalities = _fill_modalities(pm, infos, problems)
    contracts: dict[str, list[type]] = {kind: [ENCODER_CONTRACTS.get(kind, Encoder)]
                                        for kind in modalities.encoder_kinds()}
    contracts.update({kind: [proto] for kind, proto in CORE_CONTRACTS.items()})
    registry = Registry(contracts)
    for kind, hook_name in [*hookspecs.HOOKS_BY_KIND.items(), (None, hookspecs.ANY_ENCODER_HOOK)]:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            info = _info(infos, impl.plugin_name)
            _call(impl, _make_register(registry, kind, info), info, hook_name, problems)
    return LoadedPlugins(pm, registry, modalities, infos, problems)


def _info(infos: dict[str, PluginInfo], name: str) -> PluginInfo:
    return infos.setdefault(name, PluginInfo(name, "unknown", "?", "manual"))


def _call(impl: Any, register: Any, info: PluginInfo, hook_name: str, problems: list[str]) -> None:
    """Run one hook implementation; a third party's failure is its own problem, a built-in's is ours."""
    try:
        impl.function(register=register)
    except (DuplicateComponentError, DuplicateModalityError):
        raise
    except Exception as exc:
        if info.source == "builtin":
            raise
        _problem(problems, f"plugin '{info.name}' from distribution '{info.package}' raised in "
                           f"{hook_name}: {type(exc).__name__}: {exc}", exc)


def _fill_modalities(pm: pluggy.PluginManager, infos: dict[str, PluginInfo], problems: list[str]) -> ModalityTable:
    table = ModalityTable()
    for impl in getattr(pm.hook, hookspecs.MODALITY_HOOK).get_hookimpls():
        info = _info(infos, impl.plugin_name)

        def register(modality: Any, _info: PluginInfo = info) -> None:
            table.add(modality, plugin=_info.name, package=_info.package)
            _info.modalities.append(modality.name)

        _call(impl, register, info, hookspecs.MODALITY_HOOK, problems)
    table.check_streams()
    return table


def _make_register(registry: Registry, kind: str | None, info: PluginInfo):
    """The ``register`` callable a hook receives; ``kind=None`` makes one that takes the kind first."""

    def add(kind: str, name: str, factory: Any, schema: Any, description: str, claims: Any) -> None:
        registry.add(ComponentSpec(kind=kind, name=name, factory=factory, schema=schema,
                                   description=description, plugin=info.name, package=info.package,
                                   version=info.version, claims=claims))
        info.components.append((kind, name))

    if kind is None:
        def register_any(kind: str, name: str, factory: Any, *, schema: Any = None, description: str = "",
                         claims: Any = None) -> None:
            add(kind, name, factory, schema, description, claims)

        return register_any

    def register(name: str, factory: Any, *, schema: Any = None, description: str = "", claims: Any = None) -> None:
        add(kind, name, factory, schema, description, claims)

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


def get_modalities() -> ModalityTable:
    return get_plugins().modalities
