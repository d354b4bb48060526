"""Shared fixtures: golden data paths, an offline environment, and pipelines built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "golden"
GOLDEN_CKPT = GOLDEN / "ckpt"

_PIPELINES: dict[tuple[str, ...], object] = {}


def build_cached(*overrides: str):
    """Build a pipeline once per distinct override list (building is the slow part of most tests)."""
    key = tuple(overrides)
    if key not in _PIPELINES:
        import torch

        import vita_framework

        torch.set_num_threads(2)  # the golden data were made with 2 threads
        _PIPELINES[key] = vita_framework.build(list(overrides))
    return _PIPELINES[key]


def golden_tensors(case: str, name: str = "tensors.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / case / name))


@pytest.fixture
def run_env(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONUNBUFFERED="1")
    env.pop("VITA_DEBUG", None)
    return env
