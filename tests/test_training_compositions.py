"""Training any composition: a swapped encoder with a plugin's projector trains through the real command, writes
a bundle that the printed inference command loads back with those components, and a composition that cannot be
trained as asked is refused before anything is built, naming the option and the fix."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
from safetensors import safe_open

from example_site import clean_env, install_example
from vita_framework.errors import ConfigError, ValidationErrors
from vita_training import synthetic

TINY = [
    "scene_pool=4",
    "vision_warmup.steps=2",
    "vision_warmup.images_per_step=2",
    "align.steps=2",
    "align.images_per_step=2",
    "align.questions_per_image=2",
    "steps=2",
    "images_per_step=2",
    "questions_per_image=2",
    "heldout=6",
    "log_every=1",
]


def compose_training(*overrides: str):
    """The training app's config, composed as ``python -m vita_framework.train`` composes it."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from vita_framework.searchpath import register_search_path

    register_search_path()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="vita_training.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_a_swapped_encoder_with_a_plugin_projector_trains_and_loads_back(tmp_path):
    site = install_example(tmp_path / "example")
    env = clean_env(site)
    out = tmp_path / "run"
    components = [
        "+vision=timm",
        "+vision.model_kwargs.depth=1",
        "projector=perceiver_resampler",
        "projector.num_latents=16",
    ]
    command = [sys.executable, "-m", "vita_framework.train", *components, "train=quick", *TINY]
    # region labels need one LLM position per tower token: the resampler's 16 latents cannot have them
    refused = subprocess.run(
        [*command, f"hydra.run.dir={tmp_path / 'refused'}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "the tower gives 196 tokens and the LLM receives 16" in refused.stderr
    assert "set vision_warmup.steps=0" in refused.stderr and "vision step" not in refused.stderr
    proc = subprocess.run(
        [*command, "vision_warmup.steps=0", f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "align step     2  shapes<=" in proc.stderr and "\nstep     2  shapes<=" in proc.stderr
    assert "vision tower stays frozen" in proc.stderr  # a random timm tower is a choice, said out loud
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and result["visual_tokens"] == 16 and result["ttft_ms"] > 0
    assert 0 <= result["accuracy"] <= 1 and set(result["accuracy_by_kind"]) == set(synthetic.QUESTION_KINDS)
    assert result["fresh"] == ["projector", "vision"] and result["trained"] == ["llm", "projector"]
    assert result["parameters"]["projector"] > 0 and result["train_s"] > 0
    info = json.loads((out / "bundle" / "bundle_info.json").read_text())
    assert info["run_overrides"] == [*components, "+audio=whale"] and info["init"] == "default"
    assert [h["stage"] for h in json.loads((out / "history.json").read_text())] == ["align"] * 2 + ["answers"] * 2
    with safe_open(str(out / "bundle" / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("model.vision_tower.timm.") for k in keys)
    assert any(k.startswith("model.mm_resampler.") for k in keys)
    assert not any(k.startswith(("model.vision_tower.vision_tower.", "model.mm_projector.")) for k in keys)
    # the command the run printed is the user's way back in: it loads the timm tower and the resampler and answers
    assert result["load_command"] in proc.stderr
    image = tmp_path / "scene.png"
    synthetic.example("heldout", 3).image().save(image)
    args = shlex.split(result["load_command"])[3:]
    infer = subprocess.run(
        [
            sys.executable,
            "-m",
            "vita_framework",
            *args,
            "device=cpu",
            "prompt='What shape is red?'",
            f"images=[{image}]",
            "generation.max_new_tokens=4",
            f"hydra.run.dir={tmp_path / 'infer'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert infer.returncode == 0, infer.stderr[-3000:]
    answer = json.loads((tmp_path / "infer" / "result.json").read_text())
    assert answer["choices"]["vision"] == "timm" and answer["choices"]["projector"] == "perceiver_resampler"
    row = answer["rows"][0]
    assert row["tokens_in"]["image"] == 16 and 1 <= row["tokens_out"] <= 4
    assert "RANDOM" not in infer.stderr  # every tensor came from the bundle


def test_compositions_that_cannot_be_trained_as_asked_are_refused_with_the_fix():
    from vita_training.composition import plan_run

    frozen_fresh = compose_training("+vision=timm", "train=quick", "learn.projector=false", "align.steps=0")
    with pytest.raises(
        ConfigError,
        match=r"projector is never trained but has no trained weights: projector "
        r"'mlp2x_gelu' for vision 'timm' starts fresh.*Set learn\.projector=true.*"
        r"align\.steps > 0",
    ):
        plan_run(frozen_fresh, [])
    random_llm = compose_training("learn.llm=false")
    with pytest.raises(
        ConfigError,
        match=r"LLM starts from random weights \(init=random\).*learn\.llm=true.*"
        r"init=default",
    ):
        plan_run(random_llm, [])
    with pytest.raises(ValidationErrors) as info:  # every problem at once
        plan_run(compose_training("+vision=siglip", "train=quick", "init=pretrained", "audio=whisper", "ship=true"), [])
    assert len(info.value.problems) == 3
    assert "init=pretrained is not one of random, default" in str(info.value)
    assert "audio=whisper: the training app teaches spoken questions to the whale encoder only" in str(info.value)
    assert "drop ship=true" in str(info.value)
    with pytest.raises(ConfigError, match=r"audio=whale would stay untrained \(init=random\) with speech\.steps=0: "
                                          r"set speech\.steps > 0.*or audio=none"):
        plan_run(compose_training("speech.steps=0"), [])
    with pytest.raises(ConfigError, match=r"speech\.augment\.speed must be \[low, high\] with low <= high and "
                                          r"low > 0; got \[1\.2, 0\.8\]"):
        plan_run(compose_training("speech.augment={speed:[1.2,0.8]}"), [])
    with pytest.raises(ConfigError, match=r"speech\.augment: each of speed, gain_db, snr_db is \[low, high\] or null"):
        plan_run(compose_training("speech.augment={snr_db:loud}"), [])
    with pytest.raises(ConfigError, match=r"speech\.specaugment\.freq_masks must be a whole number >= 0; got 'two'"):
        plan_run(compose_training("speech.specaugment={freq_masks:two,freq_width:10}"), [])
    with pytest.raises(ConfigError, match=r"speech\.specaugment\.warp must be \[low, high\] with 0 < low <= high "
                                          r"\(e\.g\. \[0\.88, 1\.12\]\) or null; got \[1\.2, 0\.9\]"):
        plan_run(compose_training("speech.specaugment.warp=[1.2,0.9]"), [])
    for bad in ("-0.5", "much", "true"):
        with pytest.raises(ConfigError, match=r"speech\.distill must be a number >= 0 \(0: off; e\.g\. 1\.0\); got "):
            plan_run(compose_training(f"speech.distill={bad}"), [])
    for bad in ("3", "maybe"):
        with pytest.raises(ConfigError, match=r"speech\.learn_encoder must be true \(the speech stage trains the whole "
                                              r"whale encoder\) or false \(its adapter only"):
            plan_run(compose_training(f"speech.learn_encoder={bad}"), [])
        with pytest.raises(ConfigError, match=r"pad_to_square must be true, false or null \(the tower's own choice\)"):
            plan_run(compose_training(f"pad_to_square={bad}"), [])
    with pytest.raises(ValidationErrors) as info:  # counts torch or the loader would refuse mid-run, named up front
        plan_run(compose_training("threads=0", "workers=-1", "speech.threads=two", "speech.workers=1.5"), [])
    assert info.value.problems == ["threads must be a whole number >= 1; got 0",
                                   "workers must be a whole number >= 0; got -1",
                                   "speech.threads must be a whole number >= 1 or null (as `threads`); got 'two'",
                                   "speech.workers must be a whole number >= 0; got 1.5"]
    plan_run(compose_training("threads=2", "workers=1", "speech.threads=1", "speech.workers=1"), [])
    with pytest.raises(ValidationErrors) as info:  # both stages' averaging options, named
        plan_run(compose_training("average_from=1.5", "speech.average_from=half"), [])
    assert [p.split(" must be")[0] for p in info.value.problems] == ["average_from", "speech.average_from"]
    # what can be trained: the quick preset on a swapped tower (fresh tower and projector), the shipped recipe
    plan = plan_run(compose_training("+vision=timm", "train=quick"), ["+vision=timm", "train=quick", "seed=1"])
    assert plan.replaced == ["vision", "projector"] and sorted(plan.untrained) == ["projector", "vision"]
    assert plan.load_overrides == ["+vision=timm", "+audio=whale"] and "vision tower stays frozen" in plan.warnings[0]
    shipped = plan_run(compose_training(), [])  # the whale encoder starts fresh and learns in the speech stage
    assert shipped.default_recipe and shipped.replaced == ["audio"]
    assert shipped.load_overrides == ["+vision=internvit", "+audio=whale"]
    again = plan_run(compose_training("+vision=internvit", "train=quick"), [])
    assert again.replaced == [] and again.untrained == {} and not again.default_recipe
    typed_only = plan_run(compose_training("audio=none"), [])
    assert typed_only.replaced == [] and typed_only.load_overrides == ["+vision=internvit"]


def test_a_refused_run_exits_before_training_and_old_learn_flags_still_work(tmp_path, run_env):
    """``train.<module>=`` (before ``train`` became the preset group) is read as ``learn.<module>=``."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vita_framework.train",
            "+vision=timm",
            "train=quick",
            "train.projector=false",
            "align.steps=0",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=run_env,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "'train.projector=false' is now 'learn.projector=false'" in proc.stderr
    assert "error:" in proc.stderr and "Set learn.projector=true" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "bundle").exists() and not (out / "bundle.init").exists()


def test_speech_training_without_a_speech_engine_names_the_missing_data(tmp_path, run_env):
    """Spoken questions are made with espeak-ng: without it, the run stops before training and says how to get
    it (or how to train without audio)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "vita_framework.train", "steps=1", f"hydra.run.dir={out}"],
        capture_output=True, text=True, timeout=300, env={**run_env, "PATH": str(empty)}, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "spoken-question training needs speech data: espeak-ng is not installed" in proc.stderr
    assert "apt-get install espeak-ng" in proc.stderr and "drop +audio=whale" not in proc.stderr
    assert "audio=none" in proc.stderr and "Traceback" not in proc.stderr and not (out / "bundle").exists()


def test_the_recipe_pads_a_tower_that_can_unless_its_own_option_says():
    from vita_training.composition import run_config

    assert run_config(compose_training("pad_to_square=true"), "null").vision.pad_to_square is True
    assert run_config(compose_training("pad_to_square=false"), "null").vision.pad_to_square is False
    assert run_config(compose_training("train=quick"), "null").vision.pad_to_square is None  # the bundle's own
    kept = compose_training("+vision=internvit", "vision.pad_to_square=false", "pad_to_square=true")
    assert run_config(kept, "null").vision.pad_to_square is False
    assert "pad_to_square" not in run_config(compose_training("+vision=timm", "pad_to_square=true"), "null").vision


# settings that change how fast a run goes, never its bytes (vita_training.prefetch; checked by
# test_prefetched_batches_are_the_batches_made_in_order)
SPEED_ONLY = {"workers", "speech.workers"}


def test_the_default_recipe_is_the_config_the_embedded_bundle_was_trained_with():
    """`python -m vita_framework.train` with no options reproduces the embedded bundle: the config it composes
    is the bundle's recorded `train_config`, key by key, but for where it writes and the speed-only settings."""
    from omegaconf import OmegaConf

    from vita_framework.weights import default_bundle_path

    def flat(tree, prefix=""):
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    cfg = compose_training()
    OmegaConf.set_struct(cfg, False)
    del cfg["output_dir"]  # ${hydra:runtime.output_dir}: a run's own directory
    recipe = flat(OmegaConf.to_container(cfg, resolve=True))
    info = json.loads((default_bundle_path() / "bundle_info.json").read_text())
    shipped = flat(info["train_config"])
    shipped.pop("output_dir")
    differing = {key: (recipe.get(key, "<missing>"), shipped.get(key, "<missing>"))
                 for key in recipe.keys() | shipped.keys()
                 if key not in SPEED_ONLY and recipe.get(key, "<missing>") != shipped.get(key, "<missing>")}
    assert not differing, f"recipe against the embedded bundle's train_config: {differing}"
    assert len(recipe) > 90
