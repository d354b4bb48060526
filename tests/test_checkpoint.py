"""Loading VITA-1.5 bundles as published: shards, sub-directories, bad tensors, pickles, hub ids."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import vita_framework
from conftest import GOLDEN, GOLDEN_CKPT, build_cached, golden_tensors
from vita_framework.errors import CheckpointError, ConfigError
from vita_framework.weights import Bundle, default_bundle_path

VITA15 = ("+experiment=vita15", "dtype=float32", "device=cpu", "generation.max_new_tokens=20")


def _copy_ckpt(tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(GOLDEN_CKPT, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def test_sharded_checkpoint_with_index_gives_the_same_tokens(tmp_path):
    ckpt = _copy_ckpt(tmp_path)
    state = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, str(ckpt / name))
        weight_map.update(dict.fromkeys(shard_keys, name))
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    pipe = vita_framework.build([*VITA15, f"checkpoint={ckpt}"])
    gold = golden_tensors("case1_text")
    meta = json.loads((GOLDEN / "case1_text" / "meta.json").read_text())
    assert pipe.generate(meta["question"]).rows[0].generated_ids == gold["generated_ids_demo"][0].tolist()


def test_audio_tensors_are_not_read_without_an_audio_encoder(monkeypatch):
    read: list[str] = []
    original = Bundle.load

    def spy(self, prefix="", **kw):
        out = original(self, prefix, **kw)
        read.extend(prefix + k if kw.get("strip", True) else k for k in out)
        return out

    monkeypatch.setattr(Bundle, "load", spy)
    vita_framework.build([*VITA15, f"checkpoint={GOLDEN_CKPT}"])
    assert read and not [k for k in read if k.startswith("model.audio_encoder.")]
    assert any(k.startswith("model.vision_tower.") for k in read)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("model.mm_projector.2.bias"), r"missing 1 tensor\(s\), e\.g\. 2\.bias"),
    (lambda s: s.__setitem__("model.layers.0.mlp.extra.weight", torch.zeros(2)),
     r"unexpected 1 tensor\(s\), e\.g\. model\.layers\.0\.mlp\.extra\.weight"),
    (lambda s: s.__setitem__("model.norm.weight", torch.zeros(65)),
     r"model\.norm\.weight: checkpoint \(65,\) vs model \(64,\)"),
    (lambda s: s.__setitem__("model.vision_tower.vision_tower.encoder.layers.0.attn.qkv.weight", torch.zeros(5, 64)),
     r"attn\.qkv\.weight' has shape \(5, 64\)"),
])
def test_bad_tensors_raise_checkpoint_error_naming_key_and_shapes(tmp_path, edit, message):
    ckpt = _copy_ckpt(tmp_path)
    state = load_file(str(ckpt / "model.safetensors"))
    edit(state)
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message):
        vita_framework.build([*VITA15, f"checkpoint={ckpt}"])


def test_pickle_weights_are_refused_unless_allowed(tmp_path):
    ckpt = _copy_ckpt(tmp_path)
    state = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(state, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only has pickle weights.*allow_pickle=true"):
        vita_framework.build([*VITA15, f"checkpoint={ckpt}"])
    pipe = vita_framework.build([*VITA15, f"checkpoint={ckpt}", "allow_pickle=true"])
    gold = golden_tensors("case1_text")
    meta = json.loads((GOLDEN / "case1_text" / "meta.json").read_text())
    assert pipe.generate(meta["question"]).rows[0].generated_ids == gold["generated_ids_demo"][0].tolist()


def test_missing_vision_directory_and_hub_id_errors(tmp_path, monkeypatch):
    ckpt = _copy_ckpt(tmp_path)
    shutil.rmtree(ckpt / "InternViT-tiny")
    with pytest.raises(CheckpointError, match=r"mm_vision_tower.*'InternViT-tiny'.*no directory"):
        vita_framework.build([*VITA15, f"checkpoint={ckpt}"])
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    config = json.loads((ckpt / "config.json").read_text())
    config["mm_vision_tower"] = "OpenGVLab/InternViT-300M-448px"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"python -m vita_framework\.fetch OpenGVLab/InternViT-300M-448px"):
        vita_framework.build([*VITA15, f"checkpoint={ckpt}"])


def test_tokenizer_larger_than_checkpoint_vocab_is_an_error(tmp_path):
    ckpt = _copy_ckpt(tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["vocab_size"] = 300
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="vocab_size 300 but the tokenizer has 403"):
        vita_framework.build([*VITA15, f"checkpoint={ckpt}"])


def test_max_tiles_is_configurable():
    from PIL import Image

    wide = Image.new("RGB", (900, 400), (10, 200, 30))
    source = Image.open(GOLDEN / "case2_image5" / "source.png").convert("RGB")  # 760x700: 2x2 grid by default
    pipe = build_cached(*VITA15, f"checkpoint={GOLDEN_CKPT}", "vision.max_tiles=2")
    assert pipe.vision.preprocess([wide, source]).tiles_per_item == [3, 1]  # (2,1) + thumbnail; (1,1)
    pipe = build_cached(*VITA15, f"checkpoint={GOLDEN_CKPT}", "vision.max_tiles=12")
    assert pipe.vision.preprocess([wide, source]).tiles_per_item == [3, 5]
    with pytest.raises(ConfigError, match=r"vision\.min_tiles=3 and vision\.max_tiles=2"):
        vita_framework.build([*VITA15, f"checkpoint={GOLDEN_CKPT}", "vision.max_tiles=2", "vision.min_tiles=3"])
    default = build_cached(*VITA15, f"checkpoint={GOLDEN_CKPT}")  # null: VITA-1.5's 12 (no max_patches here)
    assert default.vision.max_tiles == 12 and default.vision.preprocess([source]).tiles_per_item == [5]


def test_a_bundle_trained_on_single_tiles_asks_for_one(tmp_path):
    """The embedded bundle's tower says ``max_patches: 1`` (it was trained on whole images resized to one tile,
    of any aspect ratio); ``vision.max_tiles`` still wins when given, and a bad value is named with its file."""
    from PIL import Image

    wide = Image.new("RGB", (640, 360), (250, 250, 250))
    pipe = vita_framework.build(["+vision=internvit", "+audio=none", "device=cpu"])
    assert pipe.vision.max_tiles == 1 and pipe.vision.preprocess([wide]).tiles_per_item == [1]
    six = vita_framework.build(["+vision=internvit", "+audio=none", "device=cpu", "vision.max_tiles=6"])
    assert six.vision.preprocess([wide]).tiles_per_item == [3]  # (2,1) + thumbnail
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    config = bundle / "InternViT-tiny" / "preprocessor_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "max_patches": 0}))
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json': max_patches must be a whole number >= 1"):
        vita_framework.build(["+vision=internvit", "+audio=none", f"checkpoint={bundle}"])


def test_pad_to_square_keeps_proportions_and_a_bundle_can_ask_for_it(tmp_path):
    """``vision.pad_to_square`` centres an image on a square of the processor's mean colour before tiling (VITA's
    expand2square), so a wide image's tile shows it unsquashed between two bands; a bundle's
    ``preprocessor_config.json`` can ask for it, the option still wins, and a bad value is named with its file."""
    import numpy as np
    from PIL import Image

    wide = Image.new("RGB", (448, 224), (250, 20, 20))  # 2:1, all red
    squashed = vita_framework.build(["+vision=internvit", "+audio=none", "device=cpu", "vision.pad_to_square=false"])
    padded = vita_framework.build(["+vision=internvit", "+audio=none", "device=cpu", "vision.pad_to_square=true"])
    tile = padded.vision.preprocess([wide]).pixel_values[0]  # [3, 112, 112], one tile
    side = tile.shape[-1]
    assert padded.vision.pad_colour == (124, 116, 104)  # round(255 x ImageNet mean)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    band = (np.array([124, 116, 104]) / 255 - mean) / std
    red = (np.array([250, 20, 20]) / 255 - mean) / std
    rows = tile.permute(1, 2, 0).numpy()  # [H, W, 3]
    assert np.allclose(rows[: side // 4 - 2], band, atol=2e-2)
    assert np.allclose(rows[side * 3 // 4 + 2:], band, atol=2e-2)
    assert np.allclose(rows[side // 4 + 2: side * 3 // 4 - 2], red, atol=2e-2)  # the image: half the tile's height
    assert np.allclose(squashed.vision.preprocess([wide]).pixel_values[0].permute(1, 2, 0).numpy(), red, atol=2e-2)
    square = Image.new("RGB", (300, 300), (20, 200, 20))
    same = squashed.vision.preprocess([square]).pixel_values
    assert torch.equal(padded.vision.preprocess([square]).pixel_values, same)

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    config = bundle / "InternViT-tiny" / "preprocessor_config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "pad_to_square": not settings.get("pad_to_square", False)}))
    asks = vita_framework.build(["+vision=internvit", "+audio=none", f"checkpoint={bundle}"])
    assert asks.vision.pad_to_square is (not settings.get("pad_to_square", False))
    told = vita_framework.build(["+vision=internvit", "+audio=none", f"checkpoint={bundle}",
                                 f"vision.pad_to_square={str(settings.get('pad_to_square', False)).lower()}"])
    assert told.vision.pad_to_square is bool(settings.get("pad_to_square", False))
    config.write_text(json.dumps({**settings, "pad_to_square": "yes"}))
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json': pad_to_square must be true or false"):
        vita_framework.build(["+vision=internvit", "+audio=none", f"checkpoint={bundle}"])


def test_text_request_runs_no_vision_encoder():
    pipe = build_cached(*VITA15, f"checkpoint={GOLDEN_CKPT}", "vision.attn_implementation=eager")
    calls = []
    handle = pipe.vision.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        pipe.generate("Hello", max_new_tokens=2)
        assert calls == []
        pipe.generate("Hello", images=[GOLDEN / "case2_image5" / "source.png"], max_new_tokens=2)
        assert calls == [1]
    finally:
        handle.remove()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dtype_applies_to_every_component(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = vita_framework.build(["+experiment=vita15", f"checkpoint={GOLDEN_CKPT}", f"dtype={dtype}",
                                     "device=cpu"])
    want = getattr(torch, dtype)
    for module in (pipe.llm.model, pipe.vision.model, pipe.projector):
        assert {p.dtype for p in module.parameters()} == {want}
    result = pipe.generate("Describe this image.", images=[GOLDEN / "case2_image5" / "source.png"],
                           max_new_tokens=3)
    assert result.rows[0].tokens_out >= 1


def test_device_map_needs_accelerate_or_works():
    try:
        import accelerate  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="accelerate"):
            vita_framework.build([*VITA15, f"checkpoint={GOLDEN_CKPT}", "llm.device_map=auto"])
        return
    pipe = vita_framework.build([*VITA15, f"checkpoint={GOLDEN_CKPT}", "llm.device_map=auto"])
    gold = golden_tensors("case1_text")
    meta = json.loads((GOLDEN / "case1_text" / "meta.json").read_text())
    assert pipe.generate(meta["question"]).rows[0].generated_ids == gold["generated_ids_demo"][0].tolist()
