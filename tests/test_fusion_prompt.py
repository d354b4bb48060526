"""Splice fusion and placeholder expansion, with a real tokenizer and real torch modules."""

from __future__ import annotations

import pytest
import torch

from conftest import GOLDEN_CKPT
from vita_framework.causal_lm import load_tokenizer
from vita_framework.errors import FusionError, InputError
from vita_framework.fusion import SpliceFusion
from vita_framework.plugin_manager import get_modalities
from vita_framework.prompt import PromptTokens, get_template, layout_user_text
from vita_plugins.modalities import AUDIO_PLACEHOLDER, IMAGE_PLACEHOLDER

PLACEHOLDER_IDS = get_modalities().streams()


def user_text(question: str, image_tiles: list[int], video_frames: list[int], n_audios: int) -> str:
    """The laid-out user turn for the built-in modalities (tiles per image, frames per video, audio clips)."""
    segments = {"image": image_tiles, "video": video_frames, "audio": [1] * n_audios}
    return layout_user_text(question, {k: v for k, v in segments.items() if v}, get_modalities())[0]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(GOLDEN_CKPT)


def test_placeholder_streams_of_the_builtin_modalities():
    assert PLACEHOLDER_IDS == {"image": IMAGE_PLACEHOLDER, "audio": AUDIO_PLACEHOLDER} == {"image": -200, "audio": -500}


def test_features_land_exactly_at_placeholders():
    embed = torch.nn.Embedding(10, 4)
    ids = torch.tensor([[1, IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER, 2, AUDIO_PLACEHOLDER, 3],
                        [0, 0, 4, IMAGE_PLACEHOLDER, 5, 6]])
    image = [torch.full((2, 4), 7.0), torch.full((1, 4), 8.0)]
    audio = [torch.full((1, 4), 9.0)]
    fused = SpliceFusion().fuse(ids, torch.ones_like(ids), embed, {"image": image, "audio": audio}, PLACEHOLDER_IDS)
    out = fused.inputs_embeds.detach()
    assert torch.equal(out[0, 1], torch.full((4,), 7.0)) and torch.equal(out[0, 2], torch.full((4,), 7.0))
    assert torch.equal(out[0, 4], torch.full((4,), 9.0)) and torch.equal(out[1, 3], torch.full((4,), 8.0))
    text = ids.clamp(min=0)
    for row, col in [(0, 0), (0, 3), (0, 5), (1, 2), (1, 5)]:
        assert torch.equal(out[row, col], embed.weight[text[row, col]].detach())


def test_count_mismatch_raises_with_counts():
    embed = torch.nn.Embedding(10, 4)
    ids = torch.tensor([[1, IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER, 2]])
    with pytest.raises(FusionError, match=r"image: the prompt has 3 placeholder positions \(per row \[3\]\).*"
                                          r"produced 2 feature rows \(per item \[2\]\)"):
        SpliceFusion().fuse(ids, torch.ones_like(ids), embed, {"image": [torch.zeros(2, 4)]}, PLACEHOLDER_IDS)


def test_width_mismatch_raises():
    embed = torch.nn.Embedding(10, 4)
    ids = torch.tensor([[1, IMAGE_PLACEHOLDER]])
    with pytest.raises(FusionError, match="width 5"):
        SpliceFusion().fuse(ids, torch.ones_like(ids), embed, {"image": [torch.zeros(1, 5)]}, PLACEHOLDER_IDS)


def test_user_text_places_markers_like_the_reference_demo():
    assert user_text("What?", [2], [], 0) == "<image><image>\nWhat?"
    assert user_text("", [1], [], 1) == "<image>\n<audio>"
    assert user_text("Hi", [], [], 0) == "Hi"
    assert user_text("Compare <image> and <image>.", [2, 1], [], 0) == "Compare <image><image> and <image>."


def test_user_marker_count_must_match_inputs():
    with pytest.raises(InputError, match=r"2 <image> marker\(s\) but 1 images"):
        user_text("<image> and <image>", [5], [], 0)
    with pytest.raises(InputError, match=r"1 <audio> marker\(s\) but 0 audios"):
        user_text("listen <audio>", [], [], 0)


def test_chunks_are_tokenised_separately(tokenizer):
    prompt = get_template("qwen2p5_instruct").render("ab<image>cd", "image")
    ids = PromptTokens(tokenizer, prompt, get_modalities().stream_markers()).ids({"image": [3]}, PLACEHOLDER_IDS)
    before, after = prompt.split("<image>")
    expected = (tokenizer(before).input_ids + [IMAGE_PLACEHOLDER] * 3 + tokenizer(after).input_ids)
    assert ids == expected
    assert ids.count(IMAGE_PLACEHOLDER) == 3 and ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
