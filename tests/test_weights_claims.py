"""Components own their weights: each claims its checkpoint prefixes, the LLM takes the rest, and a pipeline
saved with ``save_bundle`` loads back with the same config (timm, SigLIP and Whisper included).

Real tiny models on CPU: a 2-block vit_tiny at 64 px, a 2-layer SigLIP at 64 px, the embedded bundle's LLM.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import vita_framework
from conftest import GOLDEN
from vita_framework.builder import configured_kinds, weight_claims
from vita_framework.cli import SAMPLE_IMAGE
from vita_framework.config import compose
from vita_framework.errors import CheckpointError, ConfigError
from vita_framework.media.image import load_image
from vita_framework.plugin_manager import get_plugins
from vita_framework.saving import save_bundle
from vita_framework.weights import default_bundle_path

NO_AUDIO = ("+audio=none", "device=cpu")
TIMM = ("+vision=timm", *NO_AUDIO, "+vision.model_kwargs.depth=2", "+vision.model_kwargs.img_size=64")
SIGLIP = ("+vision=siglip", *NO_AUDIO, "vision.arch.image_size=64")
WHISPER = ("+audio=whisper", "device=cpu")
AUDIO = GOLDEN / "case3_image_audio" / "audio.wav"


def _build(*overrides: str, record: list | None = None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = vita_framework.build(list(overrides))
    if record is not None:
        record.extend(str(w.message) for w in caught)
    return pipe


def _claims(*overrides: str) -> dict[str, list[str]]:
    cfg = compose(list(overrides))
    plugins = get_plugins()
    return weight_claims(cfg, configured_kinds(cfg, plugins.modalities), plugins.registry)[0]


def _round_trip(tmp_path, overrides: tuple[str, ...], first: str = "null"):
    """Build with ``checkpoint=first``, save, build again from the saved bundle; returns both and the bundle."""
    original = _build(*overrides, f"checkpoint={first}")
    out = save_bundle(original, tmp_path / "saved", claims=_claims(*overrides, f"checkpoint={first}"))
    messages: list[str] = []
    loaded = _build(*overrides, f"checkpoint={out}", record=messages)
    assert not [m for m in messages if "RANDOM" in m], messages  # every component found its tensors
    return original, loaded, out


def _same_vision(original, loaded) -> None:
    image = load_image(SAMPLE_IMAGE)
    a = original.vision.encode(original.vision.preprocess([image]))[0]
    b = loaded.vision.encode(loaded.vision.preprocess([image]))[0]
    assert torch.equal(a, b)
    ask = dict(images=[SAMPLE_IMAGE], max_new_tokens=6)
    assert original.generate("What is this?", **ask).rows[0].generated_ids == \
        loaded.generate("What is this?", **ask).rows[0].generated_ids


def test_timm_bundle_loads_back(tmp_path):
    original, loaded, out = _round_trip(tmp_path, TIMM)
    keys = load_file(str(out / "model.safetensors")).keys()
    assert any(k.startswith("model.vision_tower.timm.blocks.1.") for k in keys)
    assert any(k.startswith("model.mm_projector.") for k in keys) and "model.norm.weight" in keys
    assert (out / "tokenizer.json").is_file() and (out / "InternViT-tiny" / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left behind
    _same_vision(original, loaded)
    with pytest.raises(CheckpointError, match="already exists"):
        save_bundle(original, out, claims={})


def test_siglip_bundle_loads_back(tmp_path):
    original, loaded, out = _round_trip(tmp_path, SIGLIP)
    assert any(k.startswith("model.vision_tower.siglip.encoder.") for k in load_file(str(out / "model.safetensors")))
    _same_vision(original, loaded)


def test_whisper_bundle_loads_back_and_is_ignored_without_whisper(tmp_path):
    original, loaded, out = _round_trip(tmp_path, WHISPER, first="default")
    assert any(k.startswith("model.audio_whisper.encoder.") for k in load_file(str(out / "model.safetensors")))
    wave = torch.sin(torch.arange(16000) * (2 * torch.pi * 440 / 16000))
    a = original.audio.encode(original.audio.preprocess([wave], 16000))[0]
    b = loaded.audio.encode(loaded.audio.preprocess([wave], 16000))[0]
    assert torch.equal(a, b)
    ask = dict(audios=[AUDIO], max_new_tokens=6)
    assert original.generate("", **ask).rows[0].generated_ids == loaded.generate("", **ask).rows[0].generated_ids
    # an unconfigured component's tensors are left unread, not handed to the LLM
    assert _build("device=cpu", f"checkpoint={out}").audio is None


def test_tensors_nobody_claims_are_an_error_naming_their_prefix_and_the_components(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    state = load_file(str(bundle / "model.safetensors"))
    state.update({f"model.foo_tower.blocks.{i}.weight": torch.zeros(2) for i in range(3)})
    save_file(state, str(bundle / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        _build("+vision=internvit", *NO_AUDIO, f"checkpoint={bundle}")
    message = str(info.value)
    registry = get_plugins().registry
    assert "unexpected 3 tensor(s)" in message and "'model.foo_tower.blocks.' (3)" in message
    for kind, name, prefix in [("vision", "internvit", "model.vision_tower.vision_tower."),
                               ("projector", "mlp2x_gelu", "model.mm_projector.")]:
        assert f"{kind} '{name}' from {registry.get(kind, name).origin} claims '{prefix}'" in message
    assert "fusion 'splice'" in message and "weights_prefix" in message


def test_a_bundle_saved_under_another_prefix_needs_that_prefix(tmp_path):
    moved = (*TIMM, "vision.weights_prefix=model.my_vit.")
    original, loaded, out = _round_trip(tmp_path, moved)
    _same_vision(original, loaded)
    with pytest.raises(CheckpointError, match=r"'model\.my_vit\.blocks\.' \(\d+\).*vision 'timm'.*"
                                              r"'model\.vision_tower\.timm\.'"):
        _build(*TIMM, f"checkpoint={out}")


def test_two_components_claiming_one_prefix_name_both_packages():
    registry = get_plugins().registry
    with pytest.raises(ConfigError) as info:
        _build(*TIMM, "vision.weights_prefix=model.mm_projector.", "checkpoint=null")
    message = str(info.value)
    assert registry.get("vision", "timm").origin in message
    assert registry.get("projector", "mlp2x_gelu").origin in message
    assert "vita-framework" in message and "weights_prefix" in message
