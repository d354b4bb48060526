"""The component registry: kind -> name -> factory, schema, claims and the plugin that supplied it.

Every component is attributed to its plugin and distribution, so a duplicate or unknown name is reported with
what is available and where it came from. ``options`` validates a config node against the registered schema
without building anything (the run validator uses it before any weights are read); ``build`` calls the factory
and checks the result against its kind's contract.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .contracts import missing_members
from .errors import (
    ComponentConfigError,
    ConfigError,
    ContractError,
    DuplicateComponentError,
    UnknownComponentError,
)

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
    claims: Callable[[Any], list[str]] | None = None

    @property
    def origin(self) -> str:
        return f"plugin '{self.plugin}' ({self.package} {self.version})"

    def claimed_prefixes(self, options: Any) -> list[str]:
        """Checkpoint key prefixes this component reads, for its validated ``options``."""
        if self.claims is not None:
            return [str(p) for p in self.claims(options) if p]
        prefix = getattr(options, "weights_prefix", None) if not isinstance(options, dict) \
            else options.get("weights_prefix")
        return [str(prefix)] if prefix else []


@dataclass
class BuildContext:
    """What a factory may need besides its own options.

    ``checkpoint`` is the opened bundle (or None for random init); ``components`` holds the components built so
    far (the LLM first, then encoders, then the projector), so dimensions are derived from built parts rather
    than repeated in YAML. ``claims`` maps each configured kind to the checkpoint prefixes it reads, and
    ``ignored_prefixes`` holds prefixes of registered components that are not configured (their tensors are
    left unread); the LLM takes every other tensor.
    """

    checkpoint: Any = None
    dtype: str = "float32"
    device: str = "cpu"
    components: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, list[str]] = field(default_factory=dict)
    ignored_prefixes: list[str] = field(default_factory=list)
    #: True when the pipeline is built to answer concurrent requests (the server, the demo): a component with a
    #: mode for that (vLLM's async engine, continuous batching) may choose it
    serving: bool = False


class Registry:
    """Components by kind and name; ``contracts`` maps each kind to the Protocols its components satisfy."""

    def __init__(self, contracts: Mapping[str, list[type]]) -> None:
        self.contracts = {kind: list(protos) for kind, protos in contracts.items()}
        self._specs: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in self.contracts}

    # -- filling -------------------------------------------------------------------------------------
    def add(self, spec: ComponentSpec) -> None:
        if spec.kind not in self._specs:
            raise ConfigError(f"{spec.origin} registered a component of unknown kind '{spec.kind}'; kinds are "
                              f"{', '.join(self._specs)} (a modality's encoder kind must be registered first)")
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
        return [spec for k in kinds for spec in self._specs.get(k, {}).values()]

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

    # -- validating and building -----------------------------------------------------------------------
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
        component = spec.factory(options, context)
        self.check(spec, component)
        return component

    def check(self, spec: ComponentSpec, component: Any) -> None:
        """The built ``component`` must have every member of its kind's contracts."""
        missing = missing_members(component, self.contracts.get(spec.kind, []))
        if missing:
            names = ", ".join(p.__name__ for p in self.contracts[spec.kind])
            raise ContractError(
                f"{spec.kind} '{spec.name}' from {spec.origin} built a {type(component).__name__} that lacks "
                f"{', '.join(repr(m) for m in missing)} required by {names} (vita_framework.contracts); "
                "add the member(s) to the component or ask its author to"
            )


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
            f"invalid option '{key}.{sub}' for {spec.kind} '{spec.name}' ({spec.origin}): {exc.msg.splitlines()[0]}. "
            f"Valid keys: {', '.join(sorted(fields))}"
        ) from None
    except ValueError as exc:  # the schema's own checks (__post_init__), e.g. min_tiles <= max_tiles
        raise ComponentConfigError(f"invalid options for {spec.kind} '{spec.name}' ({spec.origin}): {exc}") from None


def _plain(node: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node
