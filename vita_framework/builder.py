"""From a composed config to a built :class:`~vita_framework.pipeline.Pipeline` (imports torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import CheckpointError, UnknownComponentError
from .lazy import LazyComponent
from .plugin_manager import get_plugins
from .registry import BuildContext
from .validation import attribute_unknown, validate_run
from .weights import Bundle, default_bundle_path


def open_checkpoint(value: Any, *, allow_pickle: bool = False, kinds: Sequence[str] = ("vision", "audio"),
                    ignored: Sequence[str] = (), config_only: bool = False) -> Bundle | None:
    """The run's bundle: the embedded one, a directory, or a hub id (``org/name[@revision]``) fetched with the
    files ``kinds`` need (tensors under ``ignored`` prefixes are nobody's: shards holding only those are skipped)."""
    if value is None or str(value).lower() in {"null", "none", "random"}:
        return None
    path = default_bundle_path() if str(value) == "default" else value
    if str(value) == "default" and not default_bundle_path().is_dir():
        raise CheckpointError(
            f"the embedded default bundle is missing at '{default_bundle_path()}'; rebuild it with "
            "`python scripts/build_default_bundle.py`"
        )
    from .fetch import resolve_checkpoint

    path = resolve_checkpoint(path, kinds=kinds, ignored=ignored, config_only=config_only) or path
    return Bundle(path, allow_pickle=allow_pickle)


class ComponentCache:
    """Built components keyed by their full config, reused across the jobs of a sweep in one process.

    The key holds the component's node, the checkpoint, dtype, device and the keys of the components it was
    derived from (a projector depends on the vision encoder's and the LLM's widths). Bounded, so a sweep over
    many large LLMs does not keep them all alive.
    """

    def __init__(self, max_items: int = 8) -> None:
        self.max_items = max_items
        self._items: dict[str, Any] = {}

    def get_or_build(self, key: str, build: Any) -> tuple[Any, bool]:
        if key in self._items:
            self._items[key] = self._items.pop(key)  # most recently used last
            return self._items[key], True
        value = build()
        self._items[key] = value
        while len(self._items) > self.max_items:
            self._items.pop(next(iter(self._items)))
        return value, False


#: the CLI's cache (API users build fresh components unless they pass a cache)
COMPONENT_CACHE = ComponentCache()


def build_pipeline(cfg: Any, *, cache: ComponentCache | None = None, serving: bool = False) -> Any:
    """Build every configured component (LLM first, so widths are derived from built parts)."""
    import json
    import warnings

    import torch
    from omegaconf import OmegaConf

    from .devices import resolve_device, resolve_dtype
    from .pipeline import Pipeline

    validate_run(cfg, request_inputs=False)  # every problem at once, before any weight is read
    generation = OmegaConf.to_container(cfg.generation, resolve=True) if cfg.get("generation") else {}
    plugins = get_plugins()
    registry, modalities = plugins.registry, plugins.modalities
    kinds = configured_kinds(cfg, modalities)
    claims, ignored = weight_claims(cfg, kinds, registry)
    from .memory import check_fits

    check_fits(cfg)  # the memory plan (configs only) refuses what cannot fit, before any weight is fetched or read
    bundle = open_checkpoint(cfg.get("checkpoint"), allow_pickle=bool(cfg.get("allow_pickle", False)), kinds=kinds,
                             ignored=ignored)
    if bundle is None:
        warnings.warn("checkpoint=null: every component gets RANDOM weights; answers are noise", stacklevel=2)
    device = resolve_device(str(cfg.get("device", "auto")))
    ckpt_dtype = (bundle.config.get("torch_dtype") or bundle.config.get("dtype")) if bundle else None
    dtype = resolve_dtype(str(cfg.get("dtype", "auto")), device, ckpt_dtype)
    context = BuildContext(checkpoint=bundle, dtype=dtype, device=device, claims=claims, ignored_prefixes=ignored,
                           serving=serving)
    if cfg.get("seed") is not None:
        torch.manual_seed(int(cfg.seed))
    keys: dict[str, str] = {}
    reused: list[str] = []

    def make(kind: str, depends: tuple[str, ...] = ()) -> Any:
        node = OmegaConf.to_container(cfg[kind], resolve=True)
        if cache is None:
            component = _build_attributed(registry, kind, node, context)
        else:
            keys[kind] = json.dumps([kind, node, str(bundle.path) if bundle else None, dtype, device,
                                     [keys[d] for d in depends if d in keys]], sort_keys=True, default=str)
            component, hit = cache.get_or_build(keys[kind],
                                                lambda: _build_attributed(registry, kind, node, context))
            if hit:
                reused.append(kind)
        context.components[kind] = component
        return component

    llm = make("llm")
    lazy = set(cfg.get("lazy") or [])
    encoders = {kind: LazyComponent(kind, lambda k=kind: make(k, ("llm",))) if kind in lazy else make(kind, ("llm",))
                for kind in kinds if kind in modalities.encoder_kinds()}
    projected = [m.encoder for m in modalities if m.projected and m.encoder in encoders]
    projector = make("projector", (*projected, "llm")) if projected else None
    fusion = make("fusion", ("llm",))  # a fusion may depend on the LLM (fastv checks it can prune)
    limits = [llm.context_length]
    if bundle is not None:
        limits.append(bundle.config.get("tokenizer_model_max_length"))
    limits = [int(v) for v in limits if isinstance(v, int) and v > 0]
    modality_options = {m.name: OmegaConf.to_container(cfg[m.options_key], resolve=True)
                        for m in modalities if m.options_key and cfg.get(m.options_key)}
    return Pipeline(llm=llm, fusion=fusion, modalities=modalities, encoders=encoders, projector=projector,
                    template=str(cfg.get("template", "qwen2p5_instruct")), generation=generation,
                    max_length=min(limits) if limits else None, modality_options=modality_options,
                    reused_components=reused, claims=context.claims,
                    encoder_cache_mb=float(cfg.get("encoder_cache_mb") or 0),
                    prefix_cache_mb=float(cfg.get("prefix_cache_mb") or 0))


def configured_kinds(cfg: Any, modalities: Any) -> list[str]:
    """Component kinds the config sets (not null), in build order: llm, encoders, projector, fusion."""
    encoders = [k for k in modalities.encoder_kinds() if cfg.get(k) is not None]
    projected = any(m.projected and m.encoder in encoders for m in modalities)
    return ["llm", *encoders, *(["projector"] if projected else []), "fusion"]


def weight_claims(cfg: Any, kinds: list[str], registry: Any) -> tuple[dict[str, list[str]], list[str]]:
    """Checkpoint prefixes each configured kind reads, and those of registered but unconfigured components.

    Each kind's prefixes are a :class:`~vita_framework.weights.Claimed` list naming the component and its
    plugin (for the LLM's "nobody claims these tensors" error). Two configured components claiming overlapping
    prefixes is an error naming both packages.
    """
    from omegaconf import OmegaConf

    from .errors import ConfigError
    from .weights import Claimed

    claims: dict[str, list[str]] = {}
    owners: dict[str, Any] = {}
    configured = []
    for kind in kinds:
        if kind == "llm":
            continue
        spec, options = registry.options(kind, OmegaConf.to_container(cfg[kind], resolve=True))
        configured.append(spec)
        claims[kind] = Claimed(spec.claimed_prefixes(options), owner=f"{kind} '{spec.name}' from {spec.origin}")
        for prefix in claims[kind]:
            for other, (other_kind, other_spec) in owners.items():
                if other_kind != kind and (prefix.startswith(other) or other.startswith(prefix)):
                    raise ConfigError(
                        f"{kind} '{spec.name}' from {spec.origin} and {other_kind} '{other_spec.name}' from "
                        f"{other_spec.origin} both claim checkpoint tensors under '{prefix}' / '{other}'; set one "
                        f"of them to another prefix ({kind}.weights_prefix=...)")
            owners[prefix] = (kind, spec)
    ignored = []
    for spec in registry.specs():
        if spec in configured or spec.kind == "llm":
            continue
        try:
            default = spec.claimed_prefixes(spec.schema()) if spec.schema is not None else []
        except TypeError:  # a schema with required fields has no default claim
            default = []
        ignored += [p for p in default if p not in ignored and not any(p.startswith(c) or c.startswith(p)
                                                                       for cs in claims.values() for c in cs)]
    return claims, ignored


def _build_attributed(registry: Any, kind: str, node: Any, context: BuildContext) -> Any:
    """registry.build, with an unknown component traced to the config option (and package) that named it."""
    try:
        return registry.build(kind, node, context)
    except UnknownComponentError as exc:
        raise UnknownComponentError(attribute_unknown(kind, exc)) from None


def build(overrides: Sequence[str] = (), *, config: Any = None) -> Any:
    """The Python API: ``build(["+vision=internvit", "+audio=none"]).generate("What is this?", images=[...])``."""
    from .config import compose

    cfg = config if config is not None else compose(list(overrides))
    return build_pipeline(cfg)
