"""The side panel's text: the composition being talked to (each group's component, with the plugin and version
that provide it, as ``python -m vita_framework.plugins`` lists them) and the figures of the last answer."""

from __future__ import annotations

from typing import Any

from .session import Stats


def composition_rows(cfg: Any, pipeline: Any) -> list[dict[str, str]]:
    """One row per configured component group (llm, encoders, projector, fusion): the component's registry name,
    its plugin, package and version; then the checkpoint, generation preset, dtype and device."""
    from omegaconf import OmegaConf

    from ..builder import configured_kinds
    from ..plugin_manager import get_plugins

    plugins = get_plugins()
    rows = []
    for kind in configured_kinds(cfg, plugins.modalities):
        node = OmegaConf.to_container(cfg[kind], resolve=True)
        name = str(node.get("component", "?")) if isinstance(node, dict) else str(node)
        spec = plugins.registry.get(kind, name)
        rows.append(
            {"group": kind, "component": name, "plugin": spec.plugin, "package": spec.package, "version": spec.version}
        )
    choices = _choices()
    checkpoint = cfg.get("checkpoint")
    shown = "embedded tiny default bundle" if str(checkpoint) == "default" else str(checkpoint)
    rows.append({"group": "checkpoint", "component": shown})
    rows.append({"group": "generation", "component": choices.get("generation") or "custom"})
    llm = pipeline.llm
    rows.append({"group": "dtype / device", "component": f"{_dtype(llm)} / {getattr(llm, 'device', '?')}"})
    return rows


def composition_markdown(rows: list[dict[str, str]]) -> str:
    """One line per group: ``**vision** `internvit`: plugin `vita_plugins.vision.internvit` (vita-framework 0.1.0)``."""
    lines = ["### Composition", ""]
    for row in rows:
        origin = f": plugin `{row['plugin']}` ({row['package']} {row['version']})" if row.get("plugin") else ""
        lines.append(f"- **{row['group']}** `{row['component']}`{origin}")
    return "\n".join(lines)


def stats_markdown(stats: Stats | None, *, running: bool = False) -> str:
    """The last answer's tokens in by modality, tokens out, time to first token, decode speed and batch."""
    if stats is None:
        return "### Last answer\n\nNo answer yet: upload an image, a recording or a video, or just type."
    total = stats.tokens_in.get("total", 0)
    parts = ", ".join(f"{k} {v}" for k, v in stats.tokens_in.items() if k != "total" and v)
    ttft = "-" if stats.ttft_s is None else f"{stats.ttft_s * 1000:.0f} ms"
    speed = "-" if stats.decode_tokens_per_s is None else f"{stats.decode_tokens_per_s:.1f} tokens/s"
    finish = (
        "generating…"
        if running
        else {"stop": "end of answer", "length": "token limit", "cancelled": "stopped"}.get(
            stats.finish or "", stats.finish or "-"
        )
    )
    return "\n".join(
        [
            "### Last answer",
            "",
            "| measure | value |",
            "|---|---|",
            f"| tokens in | {total} ({parts or 'none'}) |",
            f"| tokens out | {stats.tokens_out} |",
            f"| time to first token | {ttft} |",
            f"| decode | {speed} |",
            f"| batch | {stats.batch or '-'} |",
            f"| finished | {finish} |",
        ]
    )


def _choices() -> dict[str, str]:
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        return dict(OmegaConf.to_container(HydraConfig.get().runtime.choices))
    except ValueError:  # not under a Hydra app (tests building the app themselves)
        return {}


def _dtype(llm: Any) -> str:
    dtype = getattr(llm, "dtype", None) or getattr(getattr(llm, "model", None), "dtype", None)
    return str(dtype).replace("torch.", "") if dtype is not None else "?"
