"""The main command as a user runs it: a subprocess with its Hydra output dir in a temp dir."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from conftest import GOLDEN, default_bundle_tokens_per_tile


def run_cli(tmp_path, *args, env=None):
    cmd = [sys.executable, "-m", "vita_framework", *args, f"hydra.run.dir={tmp_path}", "device=cpu"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_main_command_streams_answer_and_writes_result(tmp_path, run_env):
    proc = run_cli(tmp_path, "+vision=internvit", "+audio=none", "generation.max_new_tokens=12", env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    row = result["rows"][0]
    assert row["prompt"] == "Describe this image."
    image_tokens = default_bundle_tokens_per_tile()
    assert row["tokens_in"]["image"] == image_tokens and row["tokens_in"]["total"] > image_tokens
    assert 1 <= row["tokens_out"] == len(row["generated_ids"]) <= 12
    assert row["text"] and row["text"] in proc.stdout  # the streamer printed the answer
    assert "tokens in:" in proc.stderr and "time to first token" in proc.stderr
    assert result["choices"]["vision"] == "internvit" and result["choices"]["llm"] == "qwen2"
    assert result["plugins"]["vita_plugins.vision.internvit"]["package"] == "vita-framework"
    assert result["timings"]["time_to_first_token_s"] > 0


def test_text_only_run_uses_no_vision(tmp_path, run_env):
    proc = run_cli(tmp_path, "prompt=Hello there", "generation.max_new_tokens=5", "stream=false", env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((tmp_path / "result.json").read_text())["rows"][0]
    assert row["prompt"] == "Hello there" and row["tokens_in"]["image"] == 0
    assert row["text"] in proc.stdout


def test_output_scores_writes_stacked_scores(tmp_path, run_env):
    proc = run_cli(tmp_path, "+experiment=vita15", f"checkpoint={GOLDEN / 'ckpt'}", "prompt=Hi",
                   "generation.max_new_tokens=7", "generation.repetition_penalty=1.0", "generation.stop_tokens=[]",
                   "generation.eos_token_id=[]", "output.scores=true", "dtype=float32", env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = load_file(str(tmp_path / "scores.safetensors"))["scores"]
    assert scores.shape == (1, 7, 403)
    row = json.loads((tmp_path / "result.json").read_text())["rows"][0]
    assert scores[0].argmax(-1).tolist() == row["generated_ids"]  # greedy, no penalty: argmax is the token


@pytest.mark.parametrize("args,message", [
    (["+vison=internvit"], "Did you mean '+vision=internvit'"),
    (["+vision=internvit", "+audio=none", "images=[/nonexistent/cat.png]"],
     "images: file '/nonexistent/cat.png' does not exist"),
    (["checkpoint=/nonexistent/ckpt"], "checkpoint directory '/nonexistent/ckpt' does not exist"),
])
def test_user_errors_exit_2_without_traceback(tmp_path, run_env, args, message):
    proc = run_cli(tmp_path, *args, env=run_env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") or "\nerror: " in proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "result.json").exists()


def test_vision_without_plus_tells_what_to_type(tmp_path, run_env):
    proc = run_cli(tmp_path, "vision=internvit", env=run_env)
    assert proc.returncode != 0 and "+vision=internvit" in proc.stderr


def test_help_of_both_apps_shows_usage_and_only_their_own_groups(tmp_path, run_env):
    def help_of(module: str) -> str:
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                              timeout=120, env=run_env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    run = help_of("vita_framework")
    assert "Usage: python -m vita_framework [+group=option ...] [key=value ...]" in run
    assert "+experiment=vita15 checkpoint=/models/VITA-1.5" in run
    groups = run.split("== Configuration groups")[1].split("== Config")[0]
    assert "vision: internvit, siglip, timm" in groups and "projector: linear, mlp2x_gelu, mlp3x_gelu" in groups
    assert "train" not in groups
    train = help_of("vita_framework.train")
    assert "Usage: python -m vita_framework.train [key=value ...]" in train and "ship=true" in train
    assert "Configuration groups" not in train and "vision: internvit" not in train
    assert "vision_warmup:" in train  # its own config


def test_any_generation_config_field_is_accepted_and_diagnostics_go_to_the_log(tmp_path, run_env):
    """generation.<field> for fields the YAML lacks (stop_strings, top_k under greedy, min_p); stdout carries the
    answer alone, diagnostics go to stderr and the job's log file, warnings without source lines."""
    proc = run_cli(tmp_path, "+vision=internvit", "+audio=none", "generation.stop_strings=[square]",
                   "generation.top_k=5", "generation.min_p=0.1", "vision.attn_implementation=eager", env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((tmp_path / "result.json").read_text())["rows"][0]
    assert row["text"].endswith("square") and row["text"] == proc.stdout.strip()  # the stop string ended it
    log = (tmp_path / "vita.log").read_text()
    assert "note: running the embedded tiny default bundle" in log and "-- tokens in:" in log
    assert "note:" not in proc.stdout and "tokens in" not in proc.stdout
    random_run = run_cli(tmp_path / "random", "+vision=internvit", "+audio=none", "checkpoint=null",
                         "generation.max_new_tokens=2", env=run_env)
    assert random_run.returncode == 0, random_run.stderr[-3000:]
    warning_lines = [line for line in random_run.stderr.splitlines() if "RANDOM" in line]
    assert warning_lines and all(line.startswith("warning: ") for line in warning_lines)
    assert "from_options(" not in random_run.stderr  # no source lines


def test_a_video_only_request_gets_no_sample_image():
    from vita_framework import compose
    from vita_framework.cli import SAMPLE_IMAGE, default_inputs

    prompt, fields = default_inputs(compose(["+vision=internvit", "+audio=none", "videos=[clip.mp4]"]))
    assert prompt is None and fields["videos"] == ["clip.mp4"] and fields["images"] == []
    _, fields = default_inputs(compose(["+vision=internvit", "+audio=none"]))
    assert fields["images"] == [str(SAMPLE_IMAGE)]
    _, fields = default_inputs(compose(["+vision=internvit", "+audio=whale", "audios=[q.wav]"]))
    assert fields["images"] == []
