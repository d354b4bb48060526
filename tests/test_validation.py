"""Validation before loading: every problem of a run (keys, component options, generation, checkpoint, request)
reported at once, and before any weight is read."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from vita_framework import compose
from vita_framework.errors import ValidationErrors
from vita_framework.validation import generation_problems, run_problems, validate_run
from vita_framework.weights import default_bundle_path

BASE = ["+vision=internvit", "+audio=none", "device=cpu"]


def test_all_problems_are_collected_into_one_error(tmp_path):
    cfg = compose([*BASE, "vision.max_tiles=abc", "generation.max_new_tokens=0", "checkpoint=/nonexistent/b",
                   f"images=[{tmp_path / 'missing.png'}]"])
    with pytest.raises(ValidationErrors) as info:
        validate_run(cfg)
    problems = info.value.problems
    assert len(problems) == 4, problems
    message = str(info.value)
    assert message.startswith("4 problems in the configuration:")
    for fragment in ("'vision.max_tiles'", "generation.max_new_tokens must be >= 1", "/nonexistent/b' does not exist",
                     "missing.png' does not exist"):
        assert fragment in message, message


def test_component_schema_checks_run_before_building():
    cfg = compose([*BASE, "vision.min_tiles=5", "vision.max_tiles=2", "fusion=slow_fast", "fusion.stride=0"])
    problems = run_problems(cfg)
    assert any("1 <= min_tiles <= max_tiles" in p for p in problems), problems
    assert any("fusion.stride" in p for p in problems), problems


@pytest.mark.parametrize("options,fragment", [
    ({"max_new_tokens": 0}, "generation.max_new_tokens must be >= 1"),
    ({"max_new_tokens": 2.5}, "generation.max_new_tokens must be an integer"),
    ({"temperature": "abc", "do_sample": True}, "generation.temperature must be a number"),
    ({"top_p": 2.0, "do_sample": True}, "generation.top_p must be > 0.0 and <= 1.0"),
    ({"repetition_penalty": 0}, "generation.repetition_penalty must be > 0.0"),
    ({"max_new_token": 5}, "unknown option 'generation.max_new_token'"),
    ({"num_beams": 2, "num_return_sequences": 3}, "generation:"),  # transformers' own strict validation
])
def test_generation_values_are_checked_by_name_and_value(options, fragment):
    problems = generation_problems(options)
    assert any(fragment in p for p in problems), problems


def test_valid_generation_options_pass():
    assert generation_problems({"max_new_tokens": 8, "do_sample": True, "temperature": 0.7, "top_p": 0.9}) == []
    assert generation_problems({"max_new_tokens": 8, "top_k": 5}) == []  # ignored under greedy, as generate does


def test_problems_are_reported_before_any_weight_is_read(tmp_path):
    """A bundle whose weights file is garbage: with bad options, the options are reported, not the file."""
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    (bundle / "model.safetensors").write_bytes(b"not a safetensors file")
    cfg = compose([*BASE, f"checkpoint={bundle}", "vision.max_tiles=abc", "generation.max_new_tokens=-3"])
    import vita_framework

    with pytest.raises(ValidationErrors) as info:
        vita_framework.build(config=cfg)
    assert len(info.value.problems) == 2 and "safetensors" not in str(info.value)


def test_the_cli_lists_every_problem_and_exits_2(tmp_path, run_env):
    cmd = [sys.executable, "-m", "vita_framework", *BASE, "vision.max_tiles=abc", "generation.max_new_tokens=0",
           "checkpoint=/nonexistent/bundle", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: 3 problems in the configuration:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "checkpoint directory '/nonexistent/bundle' does not exist" in proc.stderr
    assert not (tmp_path / "result.json").exists()


def test_the_issue_example_reports_the_tokenizer_and_the_vision_option_together():
    cfg = compose([*BASE, "+llm.tokenizer=/nonexistent", "vision.max_tiles=abc"])
    problems = run_problems(cfg)
    assert len(problems) == 2, problems
    assert "llm.tokenizer='/nonexistent' is not a directory" in problems[1] and "vision.max_tiles" in problems[0]
