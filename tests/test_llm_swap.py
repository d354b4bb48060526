"""Swapping the LLM by configuration alone: a tiny Llama instead of the tiny Qwen2, image request included."""

from __future__ import annotations

import json
import warnings

import pytest

import vita_framework
from conftest import default_bundle_tokens_per_tile
from vita_framework.cli import SAMPLE_IMAGE
from vita_framework.errors import ComponentConfigError
from vita_framework.weights import default_bundle_path


def _build(*overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vita_framework.build(["+vision=internvit", "+audio=none", "device=cpu", *overrides])


def test_llama_from_a_local_checkpoint_dir_with_the_bundle_vision(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from vita_framework.causal_lm import load_tokenizer

    tok = load_tokenizer(default_bundle_path())
    # the bundle's projector is loaded too, so the Llama must match its width
    width = json.loads((default_bundle_path() / "config.json").read_text())["hidden_size"]
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=96,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    model.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    pipe = _build("llm=hf_causal_lm", f"llm.model={tmp_path / 'llama'}", "template=tokenizer")
    assert type(pipe.llm.model).__name__ == "LlamaForCausalLM"
    result = pipe.generate("What shape is red?", images=[SAMPLE_IMAGE], max_new_tokens=4)
    row = result.rows[0]
    assert row.tokens_in["image"] == default_bundle_tokens_per_tile() and 1 <= row.tokens_out <= 4
    with pytest.raises(ComponentConfigError, match=r"llm\.arch=Mistral but .* holds a LlamaForCausalLM"):
        _build("llm=hf_causal_lm", f"llm.model={tmp_path / 'llama'}", "llm.arch=Mistral")


@pytest.mark.parametrize("arch,width", [("Llama", 96), ("Qwen2", 48)])
def test_random_llm_of_another_width_gets_a_matching_projector(arch, width):
    pipe = _build("checkpoint=null", "llm=hf_causal_lm", f"llm.arch={arch}", f"llm.config.hidden_size={width}",
                  "vision.max_tiles=1")  # no bundle to say so: the (non-square) sample as one tile
    assert pipe.llm.hidden_size == width
    assert pipe.projector[0].in_features == pipe.vision.hidden_size and pipe.projector[-1].out_features == width
    result = pipe.generate("Describe this image.", images=[SAMPLE_IMAGE], max_new_tokens=3)
    assert result.rows[0].tokens_in["image"] == 256


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(ComponentConfigError, match=r"llm\.arch='Lama' is not a transformers causal LM"):
        _build("checkpoint=null", "llm=hf_causal_lm", "llm.arch=Lama")
