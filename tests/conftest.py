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


def default_bundle_tokens_per_tile() -> int:
    """Image tokens per tile of the embedded bundle: (tile / patch / 2)^2 after the 2x2 pixel shuffle."""
    import json

    from vita_framework.weights import default_bundle_path

    vit = json.loads((default_bundle_path() / "InternViT-tiny" / "config.json").read_text())
    return (vit["image_size"] // vit["patch_size"] // 2) ** 2


def golden_tensors(case: str, name: str = "tensors.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / case / name))


@pytest.fixture
def run_env(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONUNBUFFERED="1")
    env.pop("VITA_DEBUG", None)
    return env


@pytest.fixture(scope="session")
def espeak():
    """Debian's espeak-ng (training speech is made with it), installed with apt-get when missing."""
    from debian import ensure_package

    return ensure_package(Path("/usr/bin/espeak-ng"), "espeak-ng", "speech synthesis")
