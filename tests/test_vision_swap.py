"""Swapping the vision encoder by configuration alone: any timm model, or transformers' SigLIP.

Most cases use a 2-block vit_tiny (``model_kwargs={depth: 2}``): same width and grid as the full model, a
fraction of the CPU time. Weights are always local (timm's pretrained=False, safetensors in tmp_path).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import vita_framework
from vita_framework.cli import SAMPLE_IMAGE
from vita_framework.errors import CheckpointError, ComponentConfigError
from vita_framework.media.image import load_image
from vita_framework.plugin_manager import get_registry
from vita_framework.registry import BuildContext
from vita_framework.weights import default_bundle_path

BASE = ["+audio=none", "device=cpu"]
SHALLOW = "+vision.model_kwargs.depth=2"


def _build(*overrides: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vita_framework.build([*BASE, *overrides])


def _encoder(**options):
    """The vision component alone (no compose, no LLM): fast for encoder-level checks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_registry().build("vision", options, BuildContext(device="cpu"))


def _timm_state(tmp_path, **kwargs):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, **kwargs).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    file = tmp_path / "vit.safetensors"
    save_file(state, str(file))
    return model, state, file


def test_timm_vit_tiny_random_generates_and_sizes_the_projector():
    pipe = _build("+vision=timm", "checkpoint=null", "vision.model=vit_tiny_patch16_224")
    assert pipe.vision.tokens_per_tile == 196 and pipe.vision.hidden_size == 192
    assert pipe.projector[0].in_features == 192
    result = pipe.generate("What is this?", images=[SAMPLE_IMAGE], max_new_tokens=3)
    assert result.rows[0].tokens_in["image"] == pipe.vision.tokens_per_tile == 196
    assert 1 <= result.rows[0].tokens_out <= 3


@pytest.mark.parametrize("reduce,tokens,width", [("pixel_shuffle", 49, 768), ("avg_pool", 49, 192)])
def test_timm_reductions(reduce, tokens, width):
    pipe = _build("+vision=timm", "checkpoint=null", SHALLOW, f"vision.reduce={reduce}")
    assert (pipe.vision.tokens_per_tile, pipe.vision.hidden_size) == (tokens, width)
    assert pipe.projector[0].in_features == width
    result = pipe.generate("What is this?", images=[SAMPLE_IMAGE], max_new_tokens=2)
    assert result.rows[0].tokens_in["image"] == tokens


def test_timm_layer_and_prefix_tokens_match_timm_itself(tmp_path):
    model, _, file = _timm_state(tmp_path, num_classes=0)
    image = load_image(SAMPLE_IMAGE)
    outputs = {}
    for layer in (-1, -2):
        encoder = _encoder(component="timm", weights=str(file), layer=layer, model_kwargs={"depth": 2})
        batch = encoder.preprocess([image])
        assert batch.tiles_per_item == [1] and encoder.preprocess_frames([image, image]).tiles_per_item == [1, 1]
        outputs[layer] = encoder.encode(batch)[0]
        with torch.no_grad():
            ref = model.forward_intermediates(batch.pixel_values, indices=[layer], intermediates_only=True)[0]
        torch.testing.assert_close(outputs[layer], ref.flatten(2).transpose(1, 2)[0])
    assert outputs[-1].shape == outputs[-2].shape == (196, 192)
    assert not torch.allclose(outputs[-1], outputs[-2])
    kept = _encoder(component="timm", weights=str(file), drop_prefix_tokens=False, model_kwargs={"depth": 2})
    assert kept.tokens_per_tile == 197
    features = kept.encode(kept.preprocess([image]))[0]
    assert features.shape == (197, 192)
    torch.testing.assert_close(features[1:], outputs[-1])


def test_timm_weights_from_a_local_safetensors_file(tmp_path):
    _, state, file = _timm_state(tmp_path, num_classes=0)
    pipe = _build("+vision=timm", "checkpoint=null", SHALLOW, f"vision.weights={file}")
    loaded = pipe.vision.model.state_dict()
    assert loaded and all(torch.equal(value, state[key]) for key, value in loaded.items())
    assert pipe.generate("What is this?", images=[SAMPLE_IMAGE], max_new_tokens=2).rows[0].tokens_in["image"] == 196

    from safetensors.torch import save_file

    bad = dict(state, **{"blocks.0.attn.qkv.weight": torch.zeros(3, 3)})
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.weight: checkpoint \(3, 3\) vs model"):
        _encoder(component="timm", weights=str(tmp_path / "bad.safetensors"), model_kwargs={"depth": 2})
    del bad["blocks.0.attn.qkv.weight"]
    save_file(bad, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor.*blocks\.0\.attn\.qkv\.weight"):
        _encoder(component="timm", weights=str(tmp_path / "missing.safetensors"), model_kwargs={"depth": 2})


def test_timm_weights_from_a_directory_with_a_classifier_head(tmp_path):
    """timm hub layout: a directory with model.safetensors that still holds the classification head."""
    _, state, file = _timm_state(tmp_path, num_classes=10)
    assert "head.weight" in state
    file.rename(tmp_path / "model.safetensors")
    encoder = _encoder(component="timm", weights=str(tmp_path), model_kwargs={"depth": 2})
    assert torch.equal(encoder.model.state_dict()["blocks.1.mlp.fc2.weight"], state["blocks.1.mlp.fc2.weight"])


def test_timm_option_errors():
    with pytest.raises(ComponentConfigError, match=r"vision\.reduce='max'"):
        _encoder(component="timm", reduce="max")
    with pytest.raises(ComponentConfigError, match=r"not a timm model.*vit_tiny_patch16_224"):
        _encoder(component="timm", model="vit_tiny_patch16_244")
    with pytest.raises(ComponentConfigError, match=r"vision\.layer=5 is out of range"):
        _encoder(component="timm", layer=5, model_kwargs={"depth": 2})


def test_siglip_random_generates():
    pipe = _build("+vision=siglip", "checkpoint=null")
    assert pipe.vision.tokens_per_tile == (224 // 16) ** 2 == 196
    assert pipe.projector[0].in_features == pipe.vision.hidden_size == 64
    result = pipe.generate("What is this?", images=[SAMPLE_IMAGE], max_new_tokens=3)
    assert result.rows[0].tokens_in["image"] == 196


def test_siglip_from_a_local_directory_matches_transformers(tmp_path):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    config = SiglipVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                image_size=64, patch_size=16)
    reference = SiglipVisionModel(config).eval()
    reference.save_pretrained(tmp_path / "siglip")
    SiglipImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path / "siglip")
    for layer in (-1, 1):
        encoder = _encoder(component="siglip", model=str(tmp_path / "siglip"), select_layer=layer)
        assert (encoder.tokens_per_tile, encoder.hidden_size) == (16, 32)
        batch = encoder.preprocess([load_image(SAMPLE_IMAGE)])
        with torch.no_grad():
            out = reference(pixel_values=batch.pixel_values, output_hidden_states=True)
        expected = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        torch.testing.assert_close(encoder.encode(batch)[0], expected[0])


def test_default_bundle_projector_does_not_fit_a_new_encoder():
    """The embedded bundle's projector takes InternViT's shuffled width; a timm tower of width 192 cannot reuse it."""
    config = json.loads((default_bundle_path() / "config.json").read_text())
    tower = config["mm_hidden_size"]
    assert tower != 192
    with pytest.raises(CheckpointError, match=rf"trained for vision features of width {tower}, but the configured "
                                              r"vision encoder \(TimmVisionEncoder\) gives 192.*train a projector "
                                              r"for this encoder.*checkpoint=null") as info:
        _build("+vision=timm", "checkpoint=default", SHALLOW)
    assert "default_bundle" in str(info.value)
