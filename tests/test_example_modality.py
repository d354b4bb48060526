"""A new input modality from a third-party package: depth maps, with zero edits under ``vita_framework/``.

The example package (examples/vita-example-plugins, installed by :mod:`example_site`) registers the ``depth``
modality (request key ``depths``, marker ``<depth>``, a ``.npy`` loader, placeholder id -600) through
``vita_register_modalities``, its encoder ``depth_patch_cnn`` of the new kind ``depth`` through
``vita_register_encoders``, and the Hydra option ``conf/depth/patch_cnn.yaml`` (``+depth=patch_cnn``). The
tests run it as users would: the CLI, the Python API, batch mode, the plugin listing, and the error when depth
maps are given without a depth encoder. The runs start together in a module fixture (each ~10 s of imports).
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from conftest import default_bundle_tokens_per_tile
from example_site import (
    DIST,
    ENTRY_POINT,
    TIMEOUT_S,
    VERSION,
    clean_env,
    imported_from,
    install_example,
    ours,
    start,
    stop,
)
from vita_framework.cli import SAMPLE_IMAGE

BASE = ("+vision=internvit", "+audio=none", "generation.max_new_tokens=4", "device=cpu")
OPTION = "+depth=patch_cnn"
QUESTION = "How far away is the wall?"

#: the Python API in a fresh process with the package on PYTHONPATH; prints one JSON line
API_CODE = """
import json, sys, warnings
import numpy as np
import vita_framework
from vita_framework.cli import SAMPLE_IMAGE

warnings.simplefilter("ignore")  # random weights of the depth encoder, said loudly
path = sys.argv[1]
pipe = vita_framework.build(["+vision=internvit", "+audio=none", "+depth=patch_cnn", "device=cpu"])
encoder = pipe.encoders["depth"]
planned = encoder.planned_tokens(encoder.preprocess([np.load(path)]))
from_file = pipe.generate(sys.argv[2], depths=[path], max_new_tokens=4)
in_memory = pipe.generate("Compare <depth> with <image>.", depths=[np.load(path)], images=[SAMPLE_IMAGE],
                          max_new_tokens=4)
print(json.dumps({"planned": planned, "encoder_width": encoder.hidden_size, "llm_width": pipe.llm.hidden_size,
                  "same_encoder": pipe.depth is encoder,
                  "rows": [from_file.rows[0].to_dict(), in_memory.rows[0].to_dict()]}))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_example(tmp_path_factory.mktemp("example_modality"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A depth map (48 x 64 metres, float32), one with a hole (NaN), and a JSONL of three requests."""
    base = tmp_path_factory.mktemp("depth_inputs")
    rows, cols = np.mgrid[0:48, 0:64]
    depth = (1.0 + 0.05 * cols + 0.02 * rows).astype(np.float32)  # a wall receding to the right
    np.save(base / "wall.npy", depth)
    holed = depth.copy()
    holed[5, 7] = np.nan
    np.save(base / "holed.npy", holed)
    requests = base / "requests.jsonl"
    requests.write_text("\n".join(json.dumps(r) for r in [
        {"id": "depth", "prompt": QUESTION, "depths": [str(base / "wall.npy")]},
        {"id": "image", "prompt": "What is this?", "images": [str(SAMPLE_IMAGE)]},
        {"id": "holed", "prompt": QUESTION, "depths": [str(base / "holed.npy")]},
    ]) + "\n")
    return {"wall": base / "wall.npy", "holed": base / "holed.npy", "requests": requests}


@pytest.fixture(scope="module")
def runs(site: Path, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """The CLI, API, batch and no-encoder runs, started at once."""
    base = tmp_path_factory.mktemp("depth_runs")
    wall = files["wall"]
    started = {
        # with the option selected, its YAML declares `depths`, so no `+` is needed
        "cli": start(base, "cli", [*BASE, OPTION, f"depths=[{wall}]", f"prompt={QUESTION}"], site=site),
        "api": start(base, "api", ["-c", API_CODE, str(wall), QUESTION], site=site, cli=False),
        "batch": start(base, "batch", [*BASE, OPTION, f"requests={files['requests']}", "batch_size=3"], site=site),
        # no depth encoder: `depths` is only a request key of the modality table, appended with `+`
        "no_encoder": start(base, "no_encoder", [*BASE, f"+depths=[{wall}]", f"prompt={QUESTION}"], site=site),
    }
    yield started
    stop(started)


def expected_tokens(site: Path) -> int:
    """Depth tokens per map from the installed YAML: one per patch of the resized map."""
    node = yaml.safe_load((site / "vita_example_plugins" / "conf" / "depth" / "patch_cnn.yaml").read_text())["depth"]
    return (node["image_size"] // node["patch_size"]) ** 2


# -- the package and the listing ----------------------------------------------------------------------------
def test_pip_installs_the_depth_option(site):
    option = site / "vita_example_plugins" / "conf" / "depth" / "patch_cnn.yaml"
    assert option.is_file()  # package data made it into the wheel
    assert option.read_text().startswith("# @package _global_")
    assert expected_tokens(site) == 16


def test_listing_shows_the_modality_with_marker_and_package(site, runs):  # runs: start them early
    result = subprocess.run([sys.executable, "-m", "vita_framework.plugins", "--json"], env=clean_env(site),
                            capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert ours(data["problems"]) == []
    depth = next(m for m in data["modalities"] if m["name"] == "depth")
    assert depth == {"name": "depth", "marker": "<depth>", "request_key": "depths", "encoder": "depth",
                     "stream": "depth", "plugin": ENTRY_POINT, "package": DIST, "description": depth["description"]}
    assert [m["name"] for m in data["modalities"]][:3] == ["image", "video", "audio"]  # built-ins first
    row = next(row for row in data["plugins"] if row["plugin"] == ENTRY_POINT)
    assert row["modalities"] == ["depth"] and (row["package"], row["version"]) == (DIST, VERSION)
    assert {"kind": "depth", "name": "depth_patch_cnn", "description": next(
        c["description"] for c in row["components"] if c["kind"] == "depth")} in row["components"]

    table = subprocess.run([sys.executable, "-m", "vita_framework.plugins"], env=clean_env(site),
                           capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if line.startswith("depth "))
    assert line.split()[:5] == ["depth", "<depth>", "depths", "depth", DIST]


# -- CLI, API, batch -----------------------------------------------------------------------------------------
def test_cli_answers_a_depth_map_with_the_planned_token_count(site, runs):
    result = runs["cli"].succeeded()
    planned = runs["api"].succeeded()["planned"]
    row = result["rows"][0]
    assert row["prompt"] == QUESTION and 1 <= row["tokens_out"] <= 4
    assert row["tokens_in"]["depth"] == planned[0] == expected_tokens(site)
    assert row["tokens_in"]["image"] == 0  # no sample image is added when an input is given
    assert row["tokens_in"]["total"] == row["tokens_in"]["text"] + row["tokens_in"]["depth"]
    assert result["choices"]["depth"] == "patch_cnn"
    assert result["plugins"][ENTRY_POINT] == {"package": DIST, "version": VERSION}
    assert "depth_patch_cnn has RANDOM weights" in runs["cli"].err.read_text()


def test_api_takes_depths_from_files_and_arrays_with_markers(site, runs):
    out = runs["api"].succeeded()
    assert out["planned"] == [expected_tokens(site)]
    assert out["encoder_width"] == out["llm_width"] and out["same_encoder"]
    from_file, in_memory = out["rows"]
    assert from_file["prompt"] == QUESTION and from_file["tokens_in"]["depth"] == out["planned"][0]
    assert in_memory["tokens_in"]["depth"] == out["planned"][0]
    assert in_memory["tokens_in"]["image"] == default_bundle_tokens_per_tile()
    assert all(1 <= row["tokens_out"] <= 4 for row in out["rows"])


def test_batch_mode_answers_depth_and_image_rows(site, runs, files):
    result = runs["batch"].succeeded()
    rows = result["rows"]
    assert [r["id"] for r in rows] == ["depth", "image", "holed"]
    depth, image, holed = rows
    assert depth.get("error") is None and depth["tokens_in"]["depth"] == expected_tokens(site)
    assert depth["tokens_out"] >= 1 and depth["tokens_in"]["image"] == 0
    assert image.get("error") is None and image["tokens_in"]["image"] == default_bundle_tokens_per_tile()
    assert image["tokens_out"] >= 1 and image["tokens_in"]["depth"] == 0
    assert str(files["holed"]) in holed["error"] and "NaN" in holed["error"]  # the loader's InputError
    stdout = runs["batch"].out.read_text()
    assert "[0] " in stdout and "[1] " in stdout and "[2] error: depth map" in stdout


def test_depths_without_a_depth_encoder_is_a_clean_error(runs):
    done = runs["no_encoder"].wait()
    assert done.returncode == 2, done.stdout + done.stderr
    error = next(line for line in done.stderr.splitlines() if line.startswith("error: "))
    assert "depth" in error and "+depth=" in error
    assert "Traceback" not in done.stderr
    assert not (runs["no_encoder"].run_dir / "result.json").exists()


# -- in process: the loader, the encoder's contract and its weights -------------------------------------------
@pytest.fixture
def example(site, monkeypatch):
    """The installed package's modules and a freshly loaded registry (its real entry points)."""
    with imported_from(site, monkeypatch):
        from vita_example_plugins import depth

        from vita_framework.plugin_manager import load_plugins

        loaded = load_plugins()
        assert ours(loaded.problems) == []
        yield SimpleNamespace(depth=depth, loaded=loaded)


def _context(**kwargs):
    from vita_framework.registry import BuildContext

    return BuildContext(components={"llm": SimpleNamespace(hidden_size=24)}, **kwargs)


def test_loader_accepts_float_maps_and_refuses_the_rest_naming_the_file(example, tmp_path):
    from vita_framework.errors import InputError
    from vita_framework.modalities import LoadContext

    load = example.loaded.modalities.get("depth").load
    assert load is example.depth.load_depth
    context = LoadContext(encoder=None)
    good = np.linspace(0.5, 4.0, 12, dtype=np.float64).reshape(3, 4)
    np.save(tmp_path / "good.npy", good)
    loaded = load(str(tmp_path / "good.npy"), context)
    assert loaded.dtype == np.float32 and loaded.shape == (3, 4)
    np.testing.assert_allclose(loaded, good, rtol=1e-6)
    assert load(good, context).shape == (3, 4)  # an array in memory

    inf = good.copy()
    inf[2, 1] = np.inf
    nan = good.copy()
    nan[1, 3] = np.nan
    bad = {
        "cube.npy": (np.zeros((2, 3, 4), np.float32), r"must be a 2-D array \(height, width\).*\(2, 3, 4\)"),
        "channel.npy": (np.zeros((3, 4, 1), np.float32), r"save depth_map\[\.\.\., 0\]"),
        "ints.npy": (np.ones((3, 4), np.int32), r"floating-point depths.*int32"),
        "bools.npy": (np.ones((3, 4), bool), r"floating-point depths.*bool"),
        "empty.npy": (np.zeros((0, 4), np.float32), "is empty"),
        "nan.npy": (nan, r"holds 1 NaN.*row 1, column 3"),
        "inf.npy": (inf, r"holds 1 infinite.*row 2, column 1"),
    }
    for name, (array, match) in bad.items():
        np.save(tmp_path / name, array)
        with pytest.raises(InputError, match=match) as info:
            load(str(tmp_path / name), context)
        assert f"depth map '{tmp_path / name}'" in str(info.value)
    np.savez(tmp_path / "pair.npz", a=good, b=good)
    (tmp_path / "text.npy").write_text("0.5 1.0\n")
    for name, match in [("missing.npy", "does not exist"), ("pair.npz", r"\.npz archive"),
                        ("text.npy", r"cannot be read as a \.npy array")]:
        with pytest.raises(InputError, match=match):
            load(str(tmp_path / name), context)
    with pytest.raises(InputError, match="2-D float array; got int"):
        load(7, context)


def test_encoder_satisfies_the_contract_and_plans_what_it_encodes(example):
    from vita_framework.contracts import Encoder, missing_members

    registry = example.loaded.registry
    assert registry.contracts["depth"] == [Encoder]
    with pytest.warns(UserWarning, match="depth_patch_cnn has RANDOM weights"):
        encoder = registry.build("depth", {"component": "depth_patch_cnn", "patch_size": 8}, _context())
    assert missing_members(encoder, [Encoder]) == []
    assert encoder.hidden_size == 24  # the LLM's width, taken from the built LLM
    maps = [np.random.default_rng(0).random((30, 50)).astype(np.float32), np.full((64, 64), 2.0, np.float32),
            np.random.default_rng(1).random((200, 90)).astype(np.float32)]
    batch = encoder.preprocess(maps)
    planned = encoder.planned_tokens(batch)
    assert planned == [(64 // 8) ** 2] * 3
    features = encoder.encode(batch)
    assert [tuple(f.shape) for f in features] == [(n, 24) for n in planned]
    assert all(bool(f.isfinite().all()) for f in features)  # a constant map (min == max) is fine too
    assert example.depth.prepare_depths(encoder, maps).segments == [1, 1, 1]


def test_encoder_loads_its_tensors_from_a_bundle_prefix(example, tmp_path):
    from safetensors.torch import save_file

    from vita_framework.weights import Bundle

    registry = example.loaded.registry
    with pytest.warns(UserWarning, match="RANDOM"):
        trained = registry.build("depth", {"component": "depth_patch_cnn"}, _context())
    prefix = "model.depth_encoder."
    state = trained.checkpoint_state()
    assert state and all(not k.startswith(prefix) for k in state)  # relative to the prefix
    save_file({prefix + k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RANDOM warning: the bundle has the tensors
        loaded = registry.build("depth", {"component": "depth_patch_cnn"}, _context(checkpoint=Bundle(tmp_path)))
    batch = loaded.preprocess([np.arange(48, dtype=np.float32).reshape(6, 8)])
    for mine, theirs in zip(loaded.encode(batch), trained.encode(batch)):
        assert bool((mine == theirs).all())


def test_options_are_checked_with_the_full_key(example):
    from vita_framework.errors import ComponentConfigError

    registry = example.loaded.registry
    with pytest.raises(ComponentConfigError, match=r"depth\.image_size=64 must be a multiple of depth\.patch_size=10"):
        registry.options("depth", {"component": "depth_patch_cnn", "patch_size": 10})
    with pytest.raises(ComponentConfigError, match=r"unknown option 'depth\.patch_sise'.*'depth\.patch_size'"):
        registry.options("depth", {"component": "depth_patch_cnn", "patch_sise": 8})
    with pytest.raises(ComponentConfigError, match=r"depth\.max_depth must be > 0"):
        registry.options("depth", {"component": "depth_patch_cnn", "max_depth": 0.0})
    spec, options = registry.options("depth", {"component": "depth_patch_cnn", "max_depth": 10})
    assert (spec.package, spec.version, options.max_depth) == (DIST, VERSION, 10.0)
    assert spec.claimed_prefixes(options) == ["model.depth_encoder."]
