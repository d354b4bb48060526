"""The memory plan: full-size VITA-1.5 from its configs in seconds, exact bytes for what a build holds, the CLI's
refusal before loading, and the LLM spread over devices (llm.device_map=auto) as planned."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import DATA, build_cached
from vita_framework.weights import default_bundle_path, read_bundle_info

FIXTURE = DATA / "vita15_config"  # VITA-1.5's config.json, tower config and train.yaml; no weights
VITA15 = ["+experiment=vita15", f"checkpoint={FIXTURE}", "device=cuda", "dtype=bfloat16"]
BASE = ["+vision=internvit", "+audio=none", "device=cpu"]


def _qwen25_7b_params(vocab=152064, h=3584, inter=18944, layers=28, kv=512):
    attention = h * h + h + 2 * (h * kv + kv) + h * h  # q (bias), k, v (bias), o
    return 2 * vocab * h + layers * (attention + 3 * h * inter + 2 * h) + h


def _internvit_300m_params(h=1024, inter=4096, layers=24, patch=14, grid=32):
    embeddings = h + 3 * patch * patch * h + h + (grid * grid + 1) * h
    layer = (h * 3 * h + 3 * h) + (h * h + h) + (h * inter + inter) + (inter * h + h) + 4 * h + 2 * h
    return embeddings + layers * layer


def test_full_size_vita15_is_planned_from_its_configs_in_seconds():
    from vita_framework.config import compose
    from vita_framework.memory_plan import compute_plan

    compute_plan(compose(BASE))  # imports (transformers, plugins) are not the plan's time
    start = time.perf_counter()
    plan = compute_plan(compose(VITA15), budget_gb=24)
    seconds = time.perf_counter() - start
    assert seconds < 30, seconds
    c = plan.components
    assert c["llm"].params == _qwen25_7b_params()
    assert c["llm"].bytes == 2 * _qwen25_7b_params() + 64 * 4  # bfloat16 weights, the float32 rotary inv_freq
    assert c["vision"].params == _internvit_300m_params()
    assert c["projector"].params == 4096 * 3584 + 3584 + 3584 * 3584 + 3584
    assert c["audio"].lazy and 3.5e8 < c["audio"].params < 4e8
    assert 16.5e9 < plan.total_bytes < 16.8e9  # the published shards: 16.6 GB in bfloat16
    assert plan.kv_cache_bytes_per_token == 2 * 28 * 4 * 128 * 2 and plan.context_length == 6200
    assert plan.fits and plan.required_bytes < 20 * 2**30  # one 24 GB GPU
    report = plan.to_dict()
    assert {"components", "kv_cache_bytes_per_token", "total_bytes", "fits"} <= set(report)
    assert report["components"]["llm"] == {"component": "qwen2", "params": c["llm"].params,
                                           "bytes": c["llm"].bytes, "quantization": None, "lazy": False}
    int4 = compute_plan(compose([*VITA15, "llm.quantization=int4"]), budget_gb=8)
    assert int4.components["llm"].bytes < 0.35 * c["llm"].bytes and int4.fits  # tinygemm pads 3584 to 4096
    assert compute_plan(compose(VITA15), budget_gb=12).fits is False


@pytest.mark.parametrize("mode", [None, "int8", "int4"])
def test_planned_bytes_are_what_the_build_holds(mode):
    from vita_framework.config import compose
    from vita_framework.memory_plan import compute_plan
    from vita_framework.quantization import weight_bytes

    overrides = [*BASE] + ([f"llm.quantization={mode}", f"vision.quantization={mode}"] if mode else [])
    plan = compute_plan(compose(overrides))
    pipe = build_cached(*overrides)
    assert plan.components["llm"].bytes == weight_bytes(pipe.llm.model)
    assert plan.components["vision"].bytes == weight_bytes(pipe.encoders["vision"].model)
    assert plan.components["projector"].bytes == weight_bytes(pipe.projector)
    assert plan.components["llm"].params == read_bundle_info(default_bundle_path())["parameters"]["llm"]


def test_the_cli_plans_and_refuses_before_loading(tmp_path, run_env, capsys):
    from vita_framework import memory

    assert memory.main([*VITA15, "--json", "--budget-gb", "8"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["fits"] is False and report["verdict"] == "does not fit" and report["budget_source"] == "--budget-gb"
    assert memory.main([*VITA15, "llm.quantization=int4", "--budget-gb", "8"]) == 0
    table = capsys.readouterr().out
    assert "int4" in table and "fits" in table and "KV cache: 56.0 KiB/token" in table
    assert memory.main([*BASE, "llm.quantization=bnb_nf4"]) == 2
    assert "bitsandbytes, which runs on CUDA only" in capsys.readouterr().err
    # the run: the fixture has no weights, so only a refusal before loading can give this error
    proc = subprocess.run([sys.executable, "-m", "vita_framework", *VITA15[:2], "device=cpu", "dtype=bfloat16",
                           "memory_budget_gb=8", "prompt=Hi", f"hydra.run.dir={tmp_path}"], env=run_env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the memory plan says this run does not fit cpu" in proc.stderr
    assert "but memory_budget_gb is 8.00 GiB" in proc.stderr and "llm.quantization=int8" in proc.stderr


def test_device_map_auto_is_listed_per_device_and_the_build_places_it_so():
    from vita_framework.config import compose
    from vita_framework.memory_plan import compute_plan

    two_gpus = compute_plan(compose([*VITA15, "llm.device_map=auto", "llm.max_memory={0: 8GiB, 1: 10GiB}"]),
                            budget_gb=48)
    assert set(two_gpus.devices) == {"cuda:0", "cuda:1"} and sum(two_gpus.devices.values()) == two_gpus.required_bytes
    assert two_gpus.placement["model.embed_tokens"] == "cuda:0" and two_gpus.placement["lm_head"] == "cuda:1"
    # on this CPU host: a split between memory and disk (accelerate offloads the disk share), planned as built
    split = [*BASE, "llm.device_map=auto", "llm.max_memory={cpu: 1200KB, disk: 100MB}"]
    plan = compute_plan(compose(split))
    assert set(plan.placement.values()) == {"cpu", "disk"}
    pipe = build_cached(*split)
    assert {k: str(v) for k, v in pipe.llm.model.hf_device_map.items()} == plan.placement
    whole = build_cached(*BASE)
    question = ("What shape is red?", ["vita_framework/assets/sample.png"])
    assert pipe.generate(question[0], images=question[1]).text == whole.generate(question[0], images=question[1]).text
