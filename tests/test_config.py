"""Composition rules, validation of every shipped option, and the no-heavy-import promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import vita_framework
from vita_framework.errors import ComponentConfigError, ConfigError
from vita_framework.generation import validate_generation_options
from vita_framework.plugin_manager import get_registry

CONF = Path(vita_framework.__file__).resolve().parent.parent / "conf"
MAIN = ["+vision=internvit", "+audio=none"]


def test_plus_groups_append_vision_and_audio():
    cfg = vita_framework.compose(MAIN)
    assert cfg.vision.component == "internvit"
    assert cfg.audio is None
    assert cfg.llm.component == "qwen2" and cfg.projector.component == "mlp2x_gelu"
    assert cfg.fusion.component == "splice" and cfg.generation.do_sample is False


def test_vision_without_plus_says_what_to_type():
    with pytest.raises(ConfigCompositionException, match=r"\+vision=internvit"):
        vita_framework.compose(["vision=internvit"])


def test_typo_group_is_rejected_with_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown config key 'vison'.*Did you mean '\+vision=internvit'"):
        vita_framework.compose(["+vison=internvit"])
    with pytest.raises(ConfigError, match=r"Did you mean 'prompt=hi'"):
        vita_framework.compose(["+promt=hi"])


@pytest.mark.parametrize("override,message", [
    ("dtype=float64", "dtype=float64 is not supported"),
    ("device=gpu", "device=gpu is not understood"),
    ("batch_size=0", "batch_size must be a positive integer"),
    ("+output.plot=true", "output.plot"),
])
def test_bad_run_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        vita_framework.compose([*MAIN, override])


def test_experiment_preset_then_plain_override():
    cfg = vita_framework.compose(["+experiment=vita15", "vision.max_tiles=6", "projector=linear"])
    assert cfg.vision.component == "internvit" and cfg.vision.max_tiles == 6
    assert cfg.projector.component == "linear" and cfg.generation.max_new_tokens == 1024


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in ("vision", "audio", "projector", "fusion", "llm",
                                                           "generation", "experiment") for o in _options(g)])
def test_every_shipped_option_composes_and_validates(group, option):
    plus = {"vision", "audio", "experiment"}
    cfg = vita_framework.compose([f"{'+' if group in plus else ''}{group}={option}"])
    registry = get_registry()
    for kind in ("vision", "audio", "projector", "fusion", "llm"):
        node = cfg.get(kind)
        if node is not None:
            spec, _options = registry.options(kind, node)
            assert spec.name == node.component
    validate_generation_options(OmegaConf.to_container(cfg.generation))


def test_component_option_typo_names_the_full_key():
    cfg = vita_framework.compose([*MAIN, "+vision.select_layerr=-2"])
    with pytest.raises(ComponentConfigError, match=r"vision\.select_layerr.*Did you mean 'vision\.select_layer'"):
        get_registry().options("vision", cfg.vision)
    with pytest.raises(ComponentConfigError, match=r"generation\.max_tokens"):
        validate_generation_options({"max_tokens": 3})


def _imports_heavy(code: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-X", "importtime", *code], capture_output=True, text=True, timeout=120,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    heavy = [line for line in proc.stderr.splitlines()
             if line.startswith("import time:") and line.split("|")[-1].strip().split(".")[0]
             in {"torch", "transformers", "timm"}]
    return "\n".join(heavy)


@pytest.mark.parametrize("args", [
    ["-c", "import vita_framework; vita_framework.compose(['+vision=internvit', '+audio=none'])"],
    ["-m", "vita_framework", "+vision=internvit", "+audio=none", "--cfg", "job"],
    ["-m", "vita_framework", "--help"],
])
def test_composing_help_and_cfg_import_no_torch(args):
    assert _imports_heavy(args) == ""


def test_ci_runs_the_readme_test_command_and_hooks_are_documented():
    root = CONF.parent
    readme = (root / "README.md").read_text()
    ci_line = (root / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_line in readme
    assert "python -m vita_framework +vision=internvit +audio=none" in readme
    from vita_framework.hookspecs import ANY_ENCODER_HOOK, HOOKS_BY_KIND, MODALITY_HOOK

    for hook in [*HOOKS_BY_KIND.values(), MODALITY_HOOK, ANY_ENCODER_HOOK]:
        assert f"`{hook}(register)`" in readme
    assert "register(name, factory, *, schema=None, description=\"\", claims=None)" in readme
    assert "register(kind, name, factory, ...)" in readme
