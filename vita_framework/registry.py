"""The component registry: kind -> name -> factory, schema and the plugin that supplied it.

Every component is attributed to its plugin and distribution, so a duplicate or unknown name is reported
with what is available and where it came from. ``build`` validates a config node against the registered
schema before calling the factory, so option typos fail with the full key before any model work.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ComponentConfigError, ConfigError, DuplicateComponentError, UnknownComponentError
from .hookspecs import HOOKS_BY_KIND

Factory = Callable[[Any, "BuildContext"], Any]


@dataclass(frozen=True)
class ComponentSpec:
    """One registered component."""

    kind: str
    name: str
    factory: Factory
    schema: type | None
    description: str
    plugin: str
    package: str
    version: str

    @property
    def origin(self) -> str:
        return f"plugin '{self.plugin}' ({self.package} {self.version})"


@dataclass
class BuildContext:
    """What a factory may need besides its own options.

    ``checkpoint`` is the opened bundle (or None for random init), ``components`` holds the components
    built so far (the LLM is built first, then vision and audio, then the projector), so dimensions are
    derived from built parts rather than repeated in YAML.
    """

    checkpoint: Any = None
    dtype: str = "float32"
    device: str = "cpu"
    init: str = "checkpoint"
    components: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Components by kind and name."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in HOOKS_BY_KIND}

    # -- filling -------------------------------------------------------------------------------------
    def add(self, spec: ComponentSpec) -> None:
        if spec.kind not in self._specs:
            raise ConfigError(f"unknown component kind '{spec.kind}'; kinds are {sorted(self._specs)}")
        if not spec.name or not isinstance(spec.name, str):
            raise ConfigError(f"{spec.origin} registered a {spec.kind} with an empty or non-string name")
        if spec.schema is not None and not dataclasses.is_dataclass(spec.schema):
            raise ConfigError(
                f"{spec.origin} registered {spec.kind} '{spec.name}' with schema {spec.schema!r}; "
                "a schema must be a dataclass type"
            )
        existing = self._specs[spec.kind].get(spec.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{spec.kind} '{spec.name}' is registered twice: by {existing.origin} and by {spec.origin}. "
                f"Rename one, or block a plugin with VITA_BLOCK_PLUGINS={spec.plugin}"
            )
        self._specs[spec.kind][spec.name] = spec

    # -- reading -------------------------------------------------------------------------------------
    def kinds(self) -> list[str]:
        return list(self._specs)

    def specs(self, kind: str | None = None) -> list[ComponentSpec]:
        kinds = [kind] if kind else list(self._specs)
        return [spec for k in kinds for spec in self._specs[k].values()]

    def get(self, kind: str, name: str) -> ComponentSpec:
        try:
            return self._specs[kind][name]
        except KeyError:
            pass
        available = ", ".join(f"'{s.name}' ({s.package})" for s in self._specs.get(kind, {}).values())
        close = difflib.get_close_matches(str(name), list(self._specs.get(kind, {})), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UnknownComponentError(
            f"unknown {kind} component '{name}'.{hint} Available: {available or 'none'}. "
            "A plugin package may provide it: see `python -m vita_framework.plugins`."
        )

    # -- building ------------------------------------------------------------------------------------
    def options(self, kind: str, node: Mapping[str, Any], key: str | None = None) -> tuple[ComponentSpec, Any]:
        """Validate ``node`` (``{component: name, ...kwargs}``) and return the spec and typed options."""
        key = key or kind
        node = _plain(node)
        if not isinstance(node, dict) or "component" not in node:
            raise ComponentConfigError(
                f"'{key}' must be a mapping with a 'component' key (e.g. {key}: {{component: <name>}}); "
                f"got {node!r}"
            )
        kwargs = dict(node)
        spec = self.get(kind, kwargs.pop("component"))
        return spec, validate_options(spec, kwargs, key)

    def build(self, kind: str, node: Mapping[str, Any], context: BuildContext, key: str | None = None) -> Any:
        spec, options = self.options(kind, node, key)
        return spec.factory(options, context)


def validate_options(spec: ComponentSpec, kwargs: dict[str, Any], key: str) -> Any:
    """Check ``kwargs`` against ``spec.schema``; errors carry the full key and the valid keys."""
    if spec.schema is None:
        return kwargs
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

    fields = {f.name for f in dataclasses.fields(spec.schema)}
    for name in kwargs:
        if name not in fields:
            close = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f" Did you mean '{key}.{close[0]}'?" if close else ""
            raise ComponentConfigError(
                f"unknown option '{key}.{name}' for {spec.kind} '{spec.name}' ({spec.origin}).{hint} "
                f"Valid keys: {', '.join(sorted(fields))}"
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(spec.schema), kwargs)
        return OmegaConf.to_object(merged)
    except (ValidationError, ConfigKeyError, MissingMandatoryValue) as exc:
        sub = getattr(exc, "full_key", "") or ""
        raise ComponentConfigError(
            f"invalid option '{key}.{sub}' for {spec.kind} '{spec.name}' ({spec.origin}): {exc.msg}. "
            f"Valid keys: {', '.join(sorted(fields))}"
        ) from None


def _plain(node: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return node
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node
