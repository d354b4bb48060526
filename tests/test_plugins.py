"""Plugins: third-party entry points from fake installed distributions, env switches, registry errors.

A "distribution" here is a ``<name>-<version>.dist-info`` directory (METADATA + entry_points.txt) next to
its plugin modules in a tmp dir put on PYTHONPATH, so real ``importlib.metadata`` and real pluggy load it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dists import HEADER, make_dist
from vita_framework import hookspecs
from vita_framework.errors import ComponentConfigError, UnknownComponentError
from vita_framework.plugin_manager import DEFAULT_PLUGINS, load_plugins
from vita_framework.registry import Registry


def projector_plugin(name: str, description: str = "a test projector") -> str:
    return HEADER + textwrap.dedent(f"""
        @dataclass
        class Options:
            width: int = 8

        @hookimpl
        def vita_register_projectors(register):
            register({name!r}, lambda options, context: options, schema=Options, description={description!r})
    """)


BROKEN_IMPORT = 'raise ImportError("needs libfoo, which is not installed")\n'
BROKEN_HOOK = HEADER + textwrap.dedent("""
    @hookimpl
    def vita_register_projectors(register):
        raise RuntimeError("hook exploded")
""")
MISSPELLED_HOOK = HEADER + textwrap.dedent("""
    @hookimpl
    def vita_register_projector(register):
        register("never", lambda options, context: None)
""")
BROKEN = {
    "import": (BROKEN_IMPORT, "failed to load: ImportError: needs libfoo"),
    "hook": (BROKEN_HOOK, "raised in vita_register_projectors: RuntimeError: hook exploded"),
    "unknown-hook": (MISSPELLED_HOOK, "unknown hook 'vita_register_projector'"),
}


@pytest.fixture
def site(tmp_path) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    return path


def run_listing(site: Path, *args: str, python_args: tuple[str, ...] = (), **env_vars: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITA_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(site), PYTHONWARNINGS="default", **env_vars)
    return subprocess.run(
        [sys.executable, *python_args, "-m", "vita_framework.plugins", *args],
        cwd=site.parent, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def listing_json(site: Path, **env_vars: str) -> dict:
    result = run_listing(site, "--json", **env_vars)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def components(data: dict) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(kind, name) -> (plugin, package, version) from the --json listing."""
    return {
        (comp["kind"], comp["name"]): (row["plugin"], row["package"], row["version"])
        for row in data["plugins"] for comp in row["components"]
    }


# -- third-party plugins through the CLI listing ------------------------------------------------------
def test_good_plugin_is_listed_with_its_plugin_distribution_and_version(site):
    make_dist(site, "acme-vita", "1.2.3", {"acme": projector_plugin("acme_proj", "acme's projector")})
    data = listing_json(site)
    found = components(data)
    assert found[("projector", "acme_proj")] == ("acme", "acme-vita", "1.2.3")
    assert found[("projector", "mlp2x_gelu")][:2] == ("vita_plugins.projector.mlp", "vita-framework")
    row = next(row for row in data["plugins"] if row["plugin"] == "acme")
    assert row["source"] == "entrypoint"
    assert row["components"] == [{"kind": "projector", "name": "acme_proj", "description": "acme's projector"}]
    assert data["problems"] == []

    table = run_listing(site)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["MODALITY", "MARKER", "REQUEST", "KEY", "ENCODER", "PACKAGE", "DESCRIPTION"]
    assert ["PLUGIN", "PACKAGE", "VERSION", "KIND", "COMPONENT", "DESCRIPTION"] in [line.split() for line in lines]
    line = next(line for line in table.stdout.splitlines() if line.startswith("acme "))
    assert line.split()[:5] == ["acme", "acme-vita", "1.2.3", "projector", "acme_proj"]
    assert line.endswith("acme's projector")
    assert "warning:" not in table.stdout


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_broken_plugin_warns_with_its_distribution_and_others_still_load(site, how):
    source, detail = BROKEN[how]
    make_dist(site, "broken-vita", "0.1", {"broken": source})
    make_dist(site, "acme-vita", "1.0", {"acme": projector_plugin("acme_proj")})
    result = run_listing(site, "--json")
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" in result.stderr and "distribution 'broken-vita'" in result.stderr
    assert detail in result.stderr
    data = json.loads(result.stdout)
    assert components(data)[("projector", "acme_proj")] == ("acme", "acme-vita", "1.0")
    assert ("projector", "never") not in components(data)
    assert len(data["problems"]) == 1
    assert "plugin 'broken' from distribution 'broken-vita'" in data["problems"][0]

    table = run_listing(site)
    assert table.returncode == 0, table.stderr
    warnings = [line for line in table.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'broken-vita'" in warnings[0] and detail in warnings[0]
    assert any(line.startswith("acme ") for line in table.stdout.splitlines())


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_strict_mode_makes_a_broken_plugin_an_error(site, how):
    source, detail = BROKEN[how]
    make_dist(site, "broken-vita", "0.1", {"broken": source})
    make_dist(site, "acme-vita", "1.0", {"acme": projector_plugin("acme_proj")})
    result = run_listing(site, "--json", VITA_STRICT_PLUGINS="1")
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith("error: plugin 'broken' from distribution 'broken-vita'")
    assert detail in result.stderr and "VITA_STRICT_PLUGINS" in result.stderr
    assert "Traceback" not in result.stderr


def test_duplicate_component_names_both_plugins_and_the_block_hint_works(site):
    make_dist(site, "dupe-vita", "0.3", {"dupe": projector_plugin("mlp2x_gelu")})
    result = run_listing(site, "--json")
    assert result.returncode == 2, result.stdout
    message = result.stderr
    assert message.startswith("error: projector 'mlp2x_gelu' is registered twice")
    assert "plugin 'vita_plugins.projector.mlp' (vita-framework" in message
    assert "plugin 'dupe' (dupe-vita 0.3)" in message
    assert "Traceback" not in message
    hint = re.search(r"VITA_BLOCK_PLUGINS=(\S+)", message)
    assert hint and hint.group(1) == "dupe"
    data = listing_json(site, VITA_BLOCK_PLUGINS=hint.group(1))
    assert components(data)[("projector", "mlp2x_gelu")][0] == "vita_plugins.projector.mlp"


@pytest.mark.parametrize("env,third_party,blocked_builtin,n_problems", [
    ({}, {"alpha", "beta"}, None, 1),
    ({"VITA_BLOCK_PLUGINS": "broken"}, {"alpha", "beta"}, None, 0),
    ({"VITA_BLOCK_PLUGINS": "alpha, broken"}, {"beta"}, None, 0),
    ({"VITA_LOAD_PLUGINS": "alpha"}, {"alpha"}, None, 0),
    ({"VITA_LOAD_PLUGINS": "beta,broken"}, {"beta"}, None, 1),
    ({"VITA_BLOCK_PLUGINS": "splice,broken"}, {"alpha", "beta"}, "vita_plugins.fusion.splice", 0),
])
def test_block_and_load_plugin_lists(site, env, third_party, blocked_builtin, n_problems):
    make_dist(site, "alpha-vita", "1.0", {"alpha": projector_plugin("alpha_proj")})
    make_dist(site, "beta-vita", "2.0", {"beta": projector_plugin("beta_proj")})
    make_dist(site, "broken-vita", "0.1", {"broken": BROKEN_IMPORT})
    data = listing_json(site, **env)
    builtins = set(DEFAULT_PLUGINS) - {blocked_builtin}
    assert {row["plugin"] for row in data["plugins"]} == builtins | third_party
    assert {row["plugin"] for row in data["plugins"] if row["source"] == "builtin"} == builtins
    assert len(data["problems"]) == n_problems
    found = components(data)
    for ep in ("alpha", "beta"):
        assert (("projector", f"{ep}_proj") in found) == (ep in third_party)


def test_listing_does_not_import_torch_or_transformers(site):
    make_dist(site, "acme-vita", "1.0", {"acme": projector_plugin("acme_proj")})
    result = run_listing(site, "--json", python_args=("-X", "importtime"))
    assert result.returncode == 0, result.stderr
    modules = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert any(re.search(r"\|\s+pluggy$", line) for line in modules)  # the -X importtime output is there
    heavy = [line for line in modules if re.search(r"\|\s+(torch|transformers)(\.|$)", line)]
    assert heavy == []


# -- in process: every hook, and the registry's errors -------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch):
    for var in ("VITA_LOAD_PLUGINS", "VITA_BLOCK_PLUGINS", "VITA_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def inproc_site(site, monkeypatch, clean_env):
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(site)):
            del sys.modules[name]


def test_hooks_by_kind_maps_every_hookspec():
    declared = {name for name, obj in vars(hookspecs).items()
                if hasattr(obj, f"{hookspecs.PROJECT_NAME}_spec")}
    assert declared == {*hookspecs.HOOKS_BY_KIND.values(), hookspecs.MODALITY_HOOK, hookspecs.ANY_ENCODER_HOOK}


@pytest.mark.parametrize("kind,hook", sorted(hookspecs.HOOKS_BY_KIND.items()))
def test_every_hook_registers_under_its_kind(inproc_site, monkeypatch, kind, hook):
    ep, name = f"hook_{kind}", f"x_{kind}"
    make_dist(inproc_site, f"hook-{kind}", "0.4", {ep: HEADER + textwrap.dedent(f"""
        @hookimpl
        def {hook}(register):
            register({name!r}, lambda options, context: {kind!r}, description="via {hook}")
    """)})
    monkeypatch.setenv("VITA_LOAD_PLUGINS", ep)
    loaded = load_plugins()
    assert loaded.problems == []
    assert getattr(loaded.manager.hook, hook).spec is not None
    spec = loaded.registry.get(kind, name)
    assert (spec.plugin, spec.package, spec.version, spec.description) == (ep, f"hook-{kind}", "0.4",
                                                                            f"via {hook}")
    assert spec.factory(None, None) == kind
    assert [(s.kind, s.name) for s in loaded.registry.specs() if s.plugin == ep] == [(kind, name)]
    assert loaded.plugins[ep].components == [(kind, name)]


MODALITY_PLUGIN = HEADER + textwrap.dedent("""
    from vita_framework.modalities import Modality

    @hookimpl
    def vita_register_modalities(register):
        register(Modality(name="thermal", marker="<thermal>", request_key="thermals", encoder="thermal",
                          load=lambda source, context: source, prepare=lambda encoder, items: None,
                          placeholder_id=-700, description="thermal images"))

    @hookimpl
    def vita_register_encoders(register):
        register("thermal", "x_thermal", lambda options, context: "thermal", description="via encoders")
""")


def test_modality_hook_and_generic_encoder_hook_add_a_kind(inproc_site, monkeypatch):
    make_dist(inproc_site, "thermal-vita", "0.5", {"thermal": MODALITY_PLUGIN})
    monkeypatch.setenv("VITA_LOAD_PLUGINS", "thermal")
    loaded = load_plugins()
    assert loaded.problems == []
    assert loaded.modalities.names() == ["image", "video", "audio", "thermal"]
    entry = loaded.modalities.entries()[-1]
    assert (entry.modality.marker, entry.plugin, entry.package) == ("<thermal>", "thermal", "thermal-vita")
    assert loaded.modalities.streams()["thermal"] == -700
    assert "thermal" in loaded.registry.kinds()
    spec = loaded.registry.get("thermal", "x_thermal")
    assert (spec.plugin, spec.package, spec.version, spec.description) == ("thermal", "thermal-vita", "0.5",
                                                                            "via encoders")
    assert loaded.plugins["thermal"].modalities == ["thermal"]
    assert loaded.plugins["thermal"].components == [("thermal", "x_thermal")]


def test_generic_encoder_hook_with_an_unknown_kind_is_the_plugins_problem(inproc_site, monkeypatch):
    make_dist(inproc_site, "sonar-vita", "0.1", {"sonar": HEADER + textwrap.dedent("""
        @hookimpl
        def vita_register_encoders(register):
            register("sonar", "x_sonar", lambda options, context: None)
    """)})
    monkeypatch.setenv("VITA_LOAD_PLUGINS", "sonar")
    with pytest.warns(RuntimeWarning, match="sonar-vita"):
        loaded = load_plugins()
    assert len(loaded.problems) == 1
    assert "raised in vita_register_encoders" in loaded.problems[0]
    assert "unknown kind 'sonar'" in loaded.problems[0] and "vision" in loaded.problems[0]


def test_modalities_are_listed_with_marker_and_package(site):
    data = listing_json(site)
    rows = {row["name"]: row for row in data["modalities"]}
    assert list(rows) == ["image", "video", "audio"]
    assert {name: (r["marker"], r["request_key"], r["encoder"], r["package"]) for name, r in rows.items()} == {
        "image": ("<image>", "images", "vision", "vita-framework"),
        "video": ("<video>", "videos", "vision", "vita-framework"),
        "audio": ("<audio>", "audios", "audio", "vita-framework"),
    }
    assert all(r["plugin"] == "vita_plugins.modalities" for r in rows.values())
    row = next(row for row in data["plugins"] if row["plugin"] == "vita_plugins.modalities")
    assert row["modalities"] == ["image", "video", "audio"] and row["components"] == []


@pytest.fixture
def registry(clean_env):
    return load_plugins().registry


def test_unknown_component_lists_available_names_and_suggests(registry):
    with pytest.raises(UnknownComponentError) as err:
        registry.options("projector", {"component": "mlp2x_gelo"})
    message = str(err.value)
    assert "unknown projector component 'mlp2x_gelo'" in message
    assert "Did you mean 'mlp2x_gelu'?" in message
    for available in ("linear", "mlp2x_gelu", "mlp3x_gelu", "mlp4x_gelu"):
        assert f"'{available}' (vita-framework)" in message
    with pytest.raises(UnknownComponentError, match=r"unknown audio component 'wisper'.*Did you mean 'whisper'"):
        registry.get("audio", "wisper")
    empty = Registry({"audio": []})
    with pytest.raises(UnknownComponentError, match="Available: none"):
        empty.get("audio", "whale")


def test_unknown_option_names_full_key_suggestion_and_valid_keys(registry):
    with pytest.raises(ComponentConfigError) as err:
        registry.options("vision", {"component": "internvit", "select_layerr": -2})
    message = str(err.value)
    assert "unknown option 'vision.select_layerr'" in message
    assert "Did you mean 'vision.select_layer'?" in message
    assert "Valid keys: arch, attn_implementation, downsample_ratio, feature_scale, max_tiles" in message
    assert "vita_plugins.vision.internvit" in message


@pytest.mark.parametrize("node,key", [
    ({"max_tiles": "abc"}, "vision.max_tiles"),
    ({"arch": {"hidden_size": "wide"}}, "vision.arch.hidden_size"),
    ({"arch": {"hidden_sise": 8}}, "vision.arch.hidden_sise"),
])
def test_bad_option_value_names_the_full_key(registry, node, key):
    with pytest.raises(ComponentConfigError, match=re.escape(f"invalid option '{key}'")):
        registry.options("vision", {"component": "internvit", **node})
    spec, options = registry.options("vision", {"component": "internvit", "max_tiles": "6"})
    assert spec.plugin == "vita_plugins.vision.internvit" and options.max_tiles == 6


def test_a_packages_yaml_naming_an_unknown_component_names_the_package_and_key(tmp_path):
    site = tmp_path / "site"
    conf = site / "badconf_pkg" / "conf" / "projector"
    conf.mkdir(parents=True)
    (site / "badconf_pkg" / "__init__.py").write_text("")
    (site / "badconf_pkg" / "conf" / "__init__.py").write_text("")
    (conf / "ghost.yaml").write_text("component: ghost_projector\n")
    info = site / "badconf_vita-0.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: badconf-vita\nVersion: 0.2\n")
    (info / "entry_points.txt").write_text("[vita_framework.conf]\nbadconf = badconf_pkg.conf\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITA_")}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "vita_framework", "+vision=internvit", "+audio=none",
                           "projector=ghost", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "projector.component in config option 'projector=ghost' from package 'badconf-vita'" in proc.stderr
    assert "unknown projector component 'ghost_projector'" in proc.stderr
