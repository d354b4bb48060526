"""Hostile or broken checkpoints: no checkpoint code ever runs, bundle paths stay inside the bundle, and NaN
weights stop generation with a clean error instead of ``!!!!``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

import vita_framework
from vita_framework.errors import CheckpointError, GenerationError
from vita_framework.weights import Bundle, default_bundle_path

BASE = ["+vision=internvit", "+audio=none", "device=cpu"]


def _copy_bundle(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    return bundle


def _evil_code(marker):
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _cli(tmp_path, *args, stdin, env):
    cmd = [sys.executable, "-m", "vita_framework", *args, f"hydra.run.dir={tmp_path / 'run'}", "device=cpu"]
    feed = {"input": "y\n"} if stdin == "y" else {"stdin": subprocess.DEVNULL}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **feed)


# -- remote code ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stdin", ["y", "closed"])
def test_auto_map_tokenizer_is_refused_and_never_runs(tmp_path, run_env, stdin):
    bundle = _copy_bundle(tmp_path)
    marker = tmp_path / "code_ran"
    (bundle / "tokenization_evil.py").write_text(_evil_code(marker))
    _edit_json(bundle / "tokenizer_config.json", tokenizer_class="EvilTokenizer",
               auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]})
    proc = _cli(tmp_path, f"checkpoint={bundle}", "+vision=internvit", "+audio=none", "generation.max_new_tokens=2",
                stdin=stdin, env=run_env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert not marker.exists()
    assert "Traceback" not in proc.stderr and "[y/N]" not in proc.stdout + proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert error and f"'{bundle / 'tokenizer_config.json'}' has 'auto_map'" in error[0]
    assert "tokenization_evil.EvilTokenizer" in error[0] and "trust_remote_code=False" in error[0]


def test_auto_map_model_directory_is_refused(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from vita_framework.causal_lm import load_tokenizer

    tok = load_tokenizer(default_bundle_path())
    width = json.loads((default_bundle_path() / "config.json").read_text())["hidden_size"]
    model_dir = tmp_path / "llm"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=width, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    marker = tmp_path / "code_ran"
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (model_dir / name).write_text(_evil_code(marker))
    _edit_json(model_dir / "config.json", model_type="evil_llm",
               auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                         "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match=r"config\.json' has 'auto_map'.*never does"):
            vita_framework.build([*BASE, "llm=hf_causal_lm", f"llm.model={model_dir}", "template=tokenizer"])
    assert not marker.exists()


def test_auto_map_beside_a_builtin_tokenizer_class_loads_the_builtin(tmp_path):
    from vita_framework.causal_lm import load_tokenizer

    bundle = _copy_bundle(tmp_path)
    marker = tmp_path / "code_ran"
    (bundle / "tokenization_evil.py").write_text(_evil_code(marker))
    _edit_json(bundle / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]})
    assert len(load_tokenizer(bundle)) == len(load_tokenizer(default_bundle_path()))
    assert not marker.exists()


# -- bundle paths ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["../../../../../../etc", "/etc", "InternViT-tiny/../../outside"])
def test_bundle_subdirectory_may_not_leave_the_bundle(tmp_path, value):
    bundle = _copy_bundle(tmp_path)
    (tmp_path / "outside").mkdir()
    _edit_json(bundle / "config.json", mm_vision_tower=value)
    with pytest.raises(CheckpointError, match=r"mm_vision_tower .*outside the checkpoint directory"):
        Bundle(bundle).resolve("mm_vision_tower")
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        vita_framework.build([*BASE, f"checkpoint={bundle}"])


def test_bundle_subdirectory_does_not_resolve_against_the_current_directory(tmp_path, monkeypatch):
    bundle = _copy_bundle(tmp_path)
    work = tmp_path / "cwd"
    shutil.move(bundle / "InternViT-tiny", work / "InternViT-tiny")
    monkeypatch.chdir(work)
    with pytest.raises(CheckpointError, match=r"mm_vision_tower .*'InternViT-tiny'.*no directory"):
        Bundle(bundle).resolve("mm_vision_tower")


def test_symlink_out_of_the_bundle_is_refused(tmp_path):
    bundle = _copy_bundle(tmp_path)
    shutil.move(bundle / "InternViT-tiny", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", bundle / "InternViT-tiny")
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        Bundle(bundle).resolve("mm_vision_tower")


def test_inside_paths_and_the_hugging_face_cache_resolve(tmp_path, monkeypatch):
    from huggingface_hub import constants

    bundle = _copy_bundle(tmp_path)
    _edit_json(bundle / "config.json", mm_vision_tower="./InternViT-tiny/../InternViT-tiny")
    assert Bundle(bundle).resolve("mm_vision_tower").resolve() == (bundle / "InternViT-tiny").resolve()
    cache = tmp_path / "hf_cache"
    shutil.copytree(bundle / "InternViT-tiny", cache / "InternViT-tiny")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    _edit_json(bundle / "config.json", mm_vision_tower=str(cache / "InternViT-tiny"))
    assert Bundle(bundle).resolve("mm_vision_tower") == cache / "InternViT-tiny"
    vita_framework.build([*BASE, f"checkpoint={bundle}"])  # the vision tower reads its config from the cache


def test_user_options_stay_user_paths(tmp_path, monkeypatch):
    from vita_framework.weights import resolve_local_dir

    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_local_dir("mine", base=default_bundle_path(), what="vision.model").resolve() == tmp_path / "mine"


# -- non-finite logits ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nan_bundle(tmp_path_factory):
    from safetensors.torch import load_file, save_file

    bundle = _copy_bundle(tmp_path_factory.mktemp("nan"))
    state = load_file(str(bundle / "model.safetensors"))
    state["model.norm.weight"] = torch.full_like(state["model.norm.weight"], float("nan"))
    save_file(state, str(bundle / "model.safetensors"), metadata={"format": "pt"})
    return bundle


def test_nan_weights_are_a_clean_cli_error(tmp_path, run_env, nan_bundle):
    proc = _cli(tmp_path, f"checkpoint={nan_bundle}", "+vision=internvit", "+audio=none",
                "generation.max_new_tokens=4", stdin="closed", env=run_env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "!!!!" not in proc.stdout
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert error and "the LLM (Qwen2ForCausalLM) produced NaN logits" in error[0]
    assert "dtype=float32" in error[0]


def test_nan_weights_raise_through_stream_and_generate(nan_bundle):
    pipe = vita_framework.build([*BASE, f"checkpoint={nan_bundle}"])
    with pytest.raises(GenerationError, match=r"the LLM .*NaN logits"):
        list(pipe.stream("Hi", max_new_tokens=4))
    with pytest.raises(GenerationError, match="NaN logits"):
        pipe.generate("Hi", max_new_tokens=4, do_sample=True, seed=0)


def test_finite_logits_check_allows_banned_tokens_only():
    from vita_framework.decoding import FiniteLogitsCheck

    ids = torch.zeros((2, 0), dtype=torch.long)
    banned = torch.tensor([[0.0, float("-inf"), 1.0], [2.0, 1.0, float("-inf")]])
    assert torch.equal(FiniteLogitsCheck("the LLM")(ids, banned), banned)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(GenerationError, match=r"row\(s\) \[1\]"):
            FiniteLogitsCheck("the LLM")(ids, torch.tensor([[0.0, 1.0, 2.0], [0.0, bad, 2.0]]))
    with pytest.raises(GenerationError, match="infinite logits"):
        FiniteLogitsCheck("the LLM")(ids, torch.full((1, 3), float("-inf")))
    check = FiniteLogitsCheck("the LLM")
    check(ids, banned)
    check(ids, torch.full((2, 3), float("nan")))  # only the first step is checked
