"""The example plugin package (examples/vita-example-plugins), installed for real and used through the CLI.

:mod:`example_site` installs it with pip into a tmp dir that the subprocesses get on PYTHONPATH. Without that
PYTHONPATH its options do not exist, which proves they come from the package and not from the framework.

Every CLI run spends most of its ~10 s importing torch, so the runs start together in a module fixture and
each test waits only for its own; the file stays well under a minute. Its new modality (depth maps) is
``test_example_modality.py``'s.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import default_bundle_tokens_per_tile
from example_site import (
    DIST,
    ENTRY_POINT,
    TIMEOUT_S,
    VERSION,
    Run,
    clean_env,
    imported_from,
    install_example,
    ours,
    start,
    stop,
)

BASE = ("+vision=internvit", "+audio=none", "generation.max_new_tokens=4", "device=cpu")

#: name -> (overrides after BASE, whether the package is on PYTHONPATH)
CLI_CASES: dict[str, tuple[tuple[str, ...], bool]] = {
    "perceiver": (("projector=perceiver_resampler",), True),
    "perceiver16": (("projector=perceiver_resampler", "projector.num_latents=16"), True),
    "mean_pool": (("fusion=mean_pool_splice",), True),
    "not_installed": (("projector=perceiver_resampler",), False),
    "typo": (("projector=perceiver_resampler", "projector.num_latentz=3"), True),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_example(tmp_path_factory.mktemp("example_plugin"))


@pytest.fixture(scope="module")
def cli_runs(site: Path, tmp_path_factory: pytest.TempPathFactory):
    """Start every case of CLI_CASES at once."""
    base = tmp_path_factory.mktemp("example_runs")
    runs: dict[str, Run] = {name: start(base, name, [*BASE, *overrides], site=site if installed else None)
                            for name, (overrides, installed) in CLI_CASES.items()}
    yield runs
    stop(runs)


# -- the installed distribution -----------------------------------------------------------------------
def test_pip_installs_code_configs_and_entry_points(site):
    dist = next(metadata.distributions(path=[str(site)]))
    assert (dist.metadata["Name"], dist.version) == (DIST, VERSION)
    groups = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
    assert groups == {("vita_framework", ENTRY_POINT): "vita_example_plugins.plugin",
                      ("vita_framework.conf", ENTRY_POINT): "vita_example_plugins.conf"}
    conf = site / "vita_example_plugins" / "conf"
    assert (conf / "projector" / "perceiver_resampler.yaml").is_file()  # package data made it into the wheel
    assert (conf / "fusion" / "mean_pool_splice.yaml").is_file()


def test_listing_attributes_every_component_to_the_package(site, cli_runs):  # cli_runs: start them early
    result = subprocess.run([sys.executable, "-m", "vita_framework.plugins", "--json"], env=clean_env(site),
                            capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert ours(data["problems"]) == []
    row = next(row for row in data["plugins"] if row["plugin"] == ENTRY_POINT)
    assert (row["package"], row["version"], row["source"]) == (DIST, VERSION, "entrypoint")
    assert {(c["kind"], c["name"]) for c in row["components"]} == {
        ("projector", "perceiver_resampler"), ("fusion", "mean_pool_splice"), ("depth", "depth_patch_cnn")}
    assert row["modalities"] == ["depth"]


# -- the components' contracts, in process ------------------------------------------------------------
@pytest.fixture
def example_modules(site, monkeypatch):
    """Import the installed package in this process; forget it afterwards so no later test sees it."""
    with imported_from(site, monkeypatch):
        yield


@pytest.mark.parametrize("factor", [1, 3, 4])
def test_mean_pool_reduce_keeps_exactly_what_reduced_tokens_predicts(example_modules, factor):
    import torch
    from vita_example_plugins.mean_pool import MeanPoolSpliceFusion

    fusion = MeanPoolSpliceFusion(factor)
    tokens, groups = [256, 64, 10, 1], [0, 0, 1, 1]
    features = [torch.randn(t, 8) for t in tokens]
    pooled = fusion.reduce("image", features, groups)
    assert [int(f.shape[0]) for f in pooled] == fusion.reduced_tokens("image", tokens, groups)
    assert fusion.reduced_tokens("image", tokens, groups) == [math.ceil(t / factor) for t in tokens]
    torch.testing.assert_close(pooled[2][0], features[2][:factor].mean(dim=0))
    torch.testing.assert_close(pooled[2][-1], features[2][(10 - 1) // factor * factor:].mean(dim=0))
    assert fusion.reduce("audio", features, groups) is features  # audio keeps its encoder's count
    assert fusion.reduced_tokens("audio", tokens, groups) == tokens


# -- the CLI with the package installed ---------------------------------------------------------------
@pytest.mark.parametrize("case,latents", [("perceiver", 64), ("perceiver16", 16)])
def test_perceiver_resampler_gives_num_latents_tokens_per_tile(cli_runs, case, latents):
    result = cli_runs[case].succeeded()
    row = result["rows"][0]
    assert row["tokens_in"]["image"] == latents  # the sample image is one tile
    assert 1 <= row["tokens_out"] <= 4
    assert result["choices"]["projector"] == "perceiver_resampler"
    assert result["plugins"][ENTRY_POINT] == {"package": DIST, "version": VERSION}
    assert "perceiver_resampler has RANDOM weights" in cli_runs[case].err.read_text()


def test_mean_pool_splice_divides_image_tokens_by_factor(cli_runs):
    result = cli_runs["mean_pool"].succeeded()
    assert result["choices"]["fusion"] == "mean_pool_splice"
    # mlp2x_gelu keeps the tower's tokens; the YAML sets factor 4 and a partial last group is pooled too
    assert result["rows"][0]["tokens_in"]["image"] == math.ceil(default_bundle_tokens_per_tile() / 4)


def test_options_exist_only_with_the_package_installed(cli_runs):
    try:  # a real install into this venv would make the option exist without PYTHONPATH
        metadata.distribution(DIST)
        pytest.skip(f"{DIST} is installed in this environment")
    except metadata.PackageNotFoundError:
        pass
    done = cli_runs["not_installed"].wait()
    assert done.returncode != 0
    assert "config group 'projector' has no option 'perceiver_resampler'" in done.stderr
    assert "Available: " in done.stderr and "mlp2x_gelu" in done.stderr  # the options that do exist are listed


def test_misspelt_option_is_stopped_before_any_job_with_the_full_key(cli_runs):
    done = cli_runs["typo"].wait()  # a key the option's YAML lacks is rejected before any job runs
    assert done.returncode != 0
    assert "unknown config key 'projector.num_latentz'" in done.stderr
    assert "Did you mean 'projector.num_latents'?" in done.stderr


def test_misspelt_option_names_the_full_key_and_the_package(example_modules):
    """What ``+projector.num_latentz=3`` reaches: the plugin's schema, checked by the framework's registry.

    Checked in process on a freshly loaded registry (the real entry points of the installed package): the
    CLI prints this same message after building the LLM and vision encoder, ~10 s more of a subprocess.
    """
    from vita_framework.errors import ComponentConfigError
    from vita_framework.plugin_manager import load_plugins

    loaded = load_plugins()
    assert ours(loaded.problems) == []
    node = {"component": "perceiver_resampler", "num_latentz": 3}
    with pytest.raises(ComponentConfigError) as info:
        loaded.registry.options("projector", node)
    message = str(info.value)
    assert message.startswith("unknown option 'projector.num_latentz' for projector 'perceiver_resampler'")
    assert f"plugin '{ENTRY_POINT}' ({DIST} {VERSION})" in message
    assert "Did you mean 'projector.num_latents'?" in message
    spec, options = loaded.registry.options("projector", {"component": "perceiver_resampler", "num_latents": 16})
    assert (spec.package, spec.version, options.num_latents, options.num_heads) == (DIST, VERSION, 16, 8)


def test_budget_check_uses_the_projectors_output_tokens(site):
    """A compressing projector's own token count sizes the pre-encoding budget check."""
    code = (
        "import vita_framework, warnings\n"
        "from vita_framework.cli import SAMPLE_IMAGE\n"
        "from vita_framework.request import Request\n"
        "warnings.simplefilter('ignore')\n"
        "p = vita_framework.build(['+vision=internvit', '+audio=none', 'device=cpu',\n"
        "                          'projector=perceiver_resampler'])\n"
        "ids = p.prepare(Request('What?', images=[SAMPLE_IMAGE])).input_ids\n"
        "p.max_length = len(ids) + 2\n"
        "p.prepare(Request('What?', images=[SAMPLE_IMAGE]))\n"
        "p.max_length = len(ids) - 1\n"
        "try:\n    p.prepare(Request('What?', images=[SAMPLE_IMAGE]))\n"
        "except Exception as e:\n    print('refused', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=clean_env(site))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused the request needs" in proc.stdout and "image 64" in proc.stdout
