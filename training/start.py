"""The bundle a training run starts from, for any composition, written to disk and loaded like any bundle.

Why a bundle on disk: the trainer builds its pipeline with :func:`vita_framework.build` -- the very loader and
components generation uses -- so what it trains is exactly what a user loads back. The base is the untrained
bundle of ``arch`` (``init=random``) or the embedded default (``init=default``). A part whose base tensors do not
fit the composition (a timm tower; a projector for it) is built fresh through the registry, sized from the
parts it connects (the projector from the new tower's width and the LLM's), and its ``checkpoint_state()``
replaces the base's tensors under the prefix it claims.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from .bundle import build_pipeline, component_tensors, weight_prefixes


def derive(base: Path, out: Path, run_cfg: Any, replaced: list[str], *, seed: int) -> Path:
    """``base`` with the ``replaced`` kinds' tensors swapped for fresh components of ``run_cfg``; returns ``out``
    (or ``base`` itself when nothing is replaced)."""
    if not replaced:
        return base
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import load_file, save_file

    from vita_framework.plugin_manager import get_plugins
    from vita_framework.registry import BuildContext

    base_pipe, base_cfg = build_pipeline(base, "cpu", seed)
    registry = get_plugins().registry
    context = BuildContext(dtype="float32", device="cpu", components={"llm": base_pipe.llm})
    parts: dict[str, Any] = {}
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # "RANDOM weights": these are the fresh parts, on purpose
        warnings.simplefilter("ignore")
        for kind in ("vision", "projector", "audio"):
            if kind == "audio" and kind not in replaced:
                continue
            if kind in replaced:
                node = OmegaConf.to_container(run_cfg[kind], resolve=True)
                parts[kind] = registry.build(kind, node, context)
            else:
                parts[kind] = getattr(base_pipe, kind)
            context.components[kind] = parts[kind]
    old = weight_prefixes(base_cfg)
    tensors = {
        k: v
        for k, v in load_file(str(base / "model.safetensors")).items()
        if not any(kind in old and k.startswith(old[kind]) for kind in replaced)
    }
    tensors.update(component_tensors({k: parts[k] for k in replaced}, weight_prefixes(run_cfg)))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "*.pth"))
    save_file(
        {k: v.detach().to("cpu").contiguous().clone() for k, v in sorted(tensors.items())},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    describe(out, run_cfg, parts["vision"])
    if "audio" in replaced:
        add_audio_files(out, parts["audio"].cfg)
    return out


def add_audio_files(bundle: Path, whale_cfg: Any, stats: Any = None) -> None:
    """The whale encoder's ``train.yaml`` and CMVN stats (identity when ``stats`` is None) in the bundle's audio
    directory, named by ``config.json``'s ``mm_audio_encoder`` as in a VITA-1.5 checkpoint."""
    from vita_plugins.audio.whale.config import write_whale_dir

    from .bundle import AUDIO_DIR

    write_whale_dir(bundle / AUDIO_DIR, whale_cfg, stats)
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    config["mm_audio_encoder"] = AUDIO_DIR
    path.write_text(json.dumps(config, indent=2) + "\n")


def describe(bundle: Path, run_cfg: Any, vision: Any) -> None:
    """Make ``config.json``'s ``mm_*`` keys say what the bundle holds (informative: no loader reads them), and
    the tower's ``preprocessor_config.json`` whether it was trained on images padded to a square (read)."""
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    config["mm_hidden_size"] = int(vision.hidden_size)
    config["mm_projector_type"] = str(run_cfg.projector.component)
    config["mm_vision_type"] = str(run_cfg.vision.component)
    path.write_text(json.dumps(config, indent=2) + "\n")
    processor = bundle / str(config.get("mm_vision_tower", "")) / "preprocessor_config.json"
    pad = getattr(vision, "pad_to_square", None)
    if pad is not None and config.get("mm_vision_tower") and processor.is_file():  # trained padded: load padded
        settings = json.loads(processor.read_text())
        if bool(settings.get("pad_to_square", False)) != bool(pad):
            settings["pad_to_square"] = bool(pad)
            processor.write_text(json.dumps(settings, indent=2) + "\n")
