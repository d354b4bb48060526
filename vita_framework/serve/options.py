"""The ``serve`` config node (``conf/serve/default.yaml``), checked like every other node: unknown keys with a
did-you-mean, wrong types and values reported at once, before any model is built."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationErrors

ENGINES = ("local", "ray")


@dataclass
class ReplicaResources:
    """Ray's ``ray_actor_options`` of one replica."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str | None = None
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    max_queue: int = 64
    max_request_bytes: int = 50 * 2**20
    api_key: str | None = None
    allow_local_files: bool = False
    encoder_cache_mb: float = 256.0
    prefix_cache_mb: float = 64.0
    engine: str = "local"
    replicas: int = 1
    replica_resources: ReplicaResources = field(default_factory=ReplicaResources)
    ray_address: str | None = None

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.port <= 65535:
            out.append(f"serve.port must be in 0..65535 (0: a free port); got {self.port}")
        for name in ("max_batch_size", "max_queue", "max_request_bytes", "replicas"):
            if getattr(self, name) < 1:
                out.append(f"serve.{name} must be >= 1; got {getattr(self, name)}")
        for name in ("batch_wait_ms", "encoder_cache_mb", "prefix_cache_mb"):
            if getattr(self, name) < 0:
                out.append(f"serve.{name} must be >= 0; got {getattr(self, name)}")
        if self.engine not in ENGINES:
            out.append(f"serve.engine={self.engine} is not supported; use one of {', '.join(ENGINES)}")
        if self.replica_resources.num_cpus < 0 or self.replica_resources.num_gpus < 0:
            out.append("serve.replica_resources.num_cpus and num_gpus must be >= 0")
        if self.api_key is not None and not str(self.api_key).strip():
            out.append("serve.api_key is empty; unset it (null) or give a key")
        return out


def serve_options(node: Any) -> ServeOptions:
    """The checked :class:`ServeOptions` of a config's ``serve`` node (None: the defaults)."""
    return checked_options(node, ServeOptions, "serve", nested={"replica_resources": ReplicaResources})


def checked_options(node: Any, schema: type, prefix: str, *, nested: dict[str, type] | None = None) -> Any:
    """A config node (``serve``, ``demo``) as its ``schema`` dataclass: unknown keys (with a did-you-mean, in
    ``nested`` option groups too), then wrong types, then the schema's own ``problems()``, each batch reported at
    once as :class:`~vita_framework.errors.ValidationErrors`. None gives the defaults."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if node is None:
        return schema()
    plain = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)
    if not isinstance(plain, dict):
        raise ValidationErrors([f"{prefix} must be a group of options ({prefix}.port=..., ...); got {plain!r}"])
    problems = _unknown(plain, schema, prefix)
    for key, sub in (nested or {}).items():
        problems += _unknown(plain.get(key) or {}, sub, f"{prefix}.{key}")
    if problems:
        raise ValidationErrors(problems)
    try:
        options = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), plain))
    except OmegaConfBaseException as exc:
        raise ValidationErrors([f"invalid value for '{prefix}.{getattr(exc, 'full_key', '')}': {exc.msg}"]) from None
    problems = options.problems()
    if problems:
        raise ValidationErrors(problems)
    return options


def _unknown(node: dict[str, Any], schema: type, prefix: str) -> list[str]:
    names = [f.name for f in dataclasses.fields(schema)]
    out = []
    for key in node:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean '{prefix}.{close[0]}'?" if close else ""
            out.append(f"unknown config key '{prefix}.{key}'.{hint} Valid: {', '.join(names)}")
    return out
