"""Contracts, hooks and the modality table: every hook documented and tested, every contract member documented
and checked at build, modality conflicts named, plugins importing only public framework modules.

Third-party plugins are real distributions (a dist-info with entry points on sys.path), loaded by the real
plugin manager, as in tests/test_plugins.py.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from dists import HEADER, make_dist
from vita_framework import contracts, hookspecs
from vita_framework.errors import ConfigError, ContractError, DuplicateModalityError
from vita_framework.plugin_manager import load_plugins
from vita_framework.registry import BuildContext

HOOKS = sorted(name for name, obj in vars(hookspecs).items() if hasattr(obj, f"{hookspecs.PROJECT_NAME}_spec"))
PROTOCOLS = [contracts.Encoder, contracts.VisionEncoder, contracts.AudioEncoder, contracts.Projector,
             contracts.FusionStrategy, contracts.LLMBackbone]

MODALITY = HEADER + textwrap.dedent("""
    from vita_framework.modalities import Modality

    @hookimpl
    def vita_register_modalities(register):
        register(Modality(name={name!r}, marker={marker!r}, request_key={key!r}, encoder={encoder!r},
                          load=lambda source, context: source, prepare=lambda encoder, items: None,
                          placeholder_id={pid}, description="test modality"))
""")


def modality_plugin(name: str, marker: str, key: str, encoder: str = "thermal", pid: int = -700) -> str:
    return MODALITY.format(name=name, marker=marker, key=key, encoder=encoder, pid=pid)


@pytest.fixture
def dists(tmp_path, monkeypatch):
    """A site directory on sys.path for test distributions; modules it added are forgotten afterwards."""
    import sys

    for var in ("VITA_LOAD_PLUGINS", "VITA_BLOCK_PLUGINS", "VITA_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(site)):
            del sys.modules[name]


# -- documentation meta-tests -----------------------------------------------------------------------------
@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_is_documented(hook):
    """pytest style: summary, when it is called, every parameter, the return value; and the plugin guide
    shows its signature (datasette style)."""
    pm = load_plugins().manager
    spec = getattr(pm.hook, hook).spec
    doc = spec.function.__doc__ or ""
    assert doc.strip().splitlines()[0].strip(), f"{hook} has no summary line"
    assert "Called" in doc, f"{hook} does not say when it is called"
    for arg in spec.argnames:
        assert f":param {arg}:" in doc, f"{hook} does not document parameter {arg}"
    assert ":returns:" in doc, f"{hook} does not document its return value"
    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    assert f"{hook}({', '.join(spec.argnames)})" in guide, f"docs/writing-a-plugin.md lacks {hook}'s signature"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    names = {node.name for path in (ROOT / "tests").glob("test_*.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
    assert any(n.startswith(f"test_hook_{hook}") for n in names), f"no test named test_hook_{hook}*"


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_every_contract_member_is_documented(protocol):
    members = contracts.contract_members(protocol)
    assert members, protocol
    for name in members:
        value = next(vars(k)[name] for k in protocol.__mro__ if name in vars(k))
        doc = (value.fget if isinstance(value, property) else value).__doc__
        assert doc and doc.strip(), f"{protocol.__name__}.{name} has no docstring"


def test_contract_members_are_what_the_framework_uses():
    assert contracts.contract_members(contracts.VisionEncoder) == [
        "hidden_size", "preprocess", "planned_tokens", "encode", "checkpoint_state", "preprocess_frames"]
    assert set(contracts.contract_members(contracts.LLMBackbone)) == {
        "hidden_size", "tokenizer", "device", "context_length", "embed", "generation_config", "generate",
        "checkpoint_state"}
    assert "__call__" in contracts.contract_members(contracts.Projector)


# -- one test per hook (datasette style) --------------------------------------------------------------------
def _load(dists, monkeypatch, dist: str, sources: dict[str, str]):
    make_dist(dists, dist, "0.3", sources)
    monkeypatch.setenv("VITA_LOAD_PLUGINS", ",".join(sources))
    return load_plugins()


def test_hook_vita_register_modalities(dists, monkeypatch):
    loaded = _load(dists, monkeypatch, "thermal-vita", {"thermal": modality_plugin("thermal", "<thermal>", "thermals")})
    assert loaded.problems == []
    entry = next(e for e in loaded.modalities.entries() if e.modality.name == "thermal")
    assert (entry.plugin, entry.package, entry.modality.marker) == ("thermal", "thermal-vita", "<thermal>")
    assert loaded.modalities.names()[:3] == ["image", "video", "audio"]  # built-ins first, same path
    assert "thermal" in loaded.registry.kinds()  # the modality's encoder kind became a registry kind
    assert loaded.plugins["thermal"].modalities == ["thermal"]


def _component_hook(hook: str, kind: str) -> str:
    if hook == hookspecs.ANY_ENCODER_HOOK:
        call = f"register({kind!r}, 'x_{kind}', lambda options, context: {kind!r}, description='via {hook}')"
    else:
        call = f"register('x_{kind}', lambda options, context: {kind!r}, description='via {hook}')"
    return HEADER + f"\n@hookimpl\ndef {hook}(register):\n    {call}\n"


def _check_component_hook(dists, monkeypatch, hook: str, kind: str, extra: dict[str, str] | None = None):
    loaded = _load(dists, monkeypatch, f"hook-{kind}", {f"hook_{kind}": _component_hook(hook, kind), **(extra or {})})
    assert loaded.problems == []
    spec = loaded.registry.get(kind, f"x_{kind}")
    assert (spec.plugin, spec.package, spec.version, spec.description) == (f"hook_{kind}", f"hook-{kind}", "0.3",
                                                                            f"via {hook}")
    assert spec.factory(None, None) == kind


def test_hook_vita_register_vision_encoders(dists, monkeypatch):
    _check_component_hook(dists, monkeypatch, "vita_register_vision_encoders", "vision")


def test_hook_vita_register_audio_encoders(dists, monkeypatch):
    _check_component_hook(dists, monkeypatch, "vita_register_audio_encoders", "audio")


def test_hook_vita_register_projectors(dists, monkeypatch):
    _check_component_hook(dists, monkeypatch, "vita_register_projectors", "projector")


def test_hook_vita_register_fusion_strategies(dists, monkeypatch):
    _check_component_hook(dists, monkeypatch, "vita_register_fusion_strategies", "fusion")


def test_hook_vita_register_llm_backbones(dists, monkeypatch):
    _check_component_hook(dists, monkeypatch, "vita_register_llm_backbones", "llm")


def test_hook_vita_register_encoders(dists, monkeypatch):
    """The generic hook fills a kind that a plugin's modality declared, and also a built-in kind."""
    _check_component_hook(dists, monkeypatch, "vita_register_encoders", "thermal",
                          {"thermal": modality_plugin("thermal", "<thermal>", "thermals")})


def test_generic_encoder_hook_refuses_an_unknown_kind(dists, monkeypatch):
    make_dist(dists, "lost-vita", "0.1", {"lost": _component_hook("vita_register_encoders", "sonar")})
    monkeypatch.setenv("VITA_LOAD_PLUGINS", "lost")
    loaded = load_plugins()
    assert len(loaded.problems) == 1
    assert "unknown kind 'sonar'" in loaded.problems[0] and "lost-vita" in loaded.problems[0]


# -- modality conflicts -----------------------------------------------------------------------------------
@pytest.mark.parametrize("marker,key,clash", [
    ("<image>", "pictures", "marker"),
    ("<pic>", "images", "request key"),
])
def test_two_plugins_claiming_a_marker_or_key_is_an_error_naming_both_packages(dists, monkeypatch, marker, key,
                                                                                clash):
    make_dist(dists, "pictures-vita", "1.2", {"pictures": modality_plugin("picture", marker, key)})
    monkeypatch.setenv("VITA_LOAD_PLUGINS", "pictures")
    with pytest.raises(DuplicateModalityError) as info:
        load_plugins()
    message = str(info.value)
    assert f"same {clash}" in message and "pictures-vita" in message and "vita-framework" in message


# -- contracts checked at build ---------------------------------------------------------------------------
LACKING = HEADER + textwrap.dedent("""
    class HalfProjector:
        def __call__(self, features):
            return features

    @hookimpl
    def vita_register_projectors(register):
        register("half", lambda options, context: HalfProjector())
""")


def test_a_component_lacking_a_contract_member_fails_at_build_naming_plugin_component_member(dists, monkeypatch):
    loaded = _load(dists, monkeypatch, "half-vita", {"half": LACKING})
    with pytest.raises(ContractError) as info:
        loaded.registry.build("projector", {"component": "half"}, BuildContext())
    message = str(info.value)
    for fragment in ("projector 'half'", "plugin 'half' (half-vita 0.3)", "'tokens_out'", "'checkpoint_state'",
                     "Projector"):
        assert fragment in message, message


def test_built_in_components_satisfy_their_contracts():
    from conftest import build_cached

    pipe = build_cached("+vision=internvit", "+audio=whale", "checkpoint=null", "device=cpu")
    registry = load_plugins().registry
    parts = {"llm": pipe.llm, "vision": pipe.vision, "audio": pipe.audio, "projector": pipe.projector,
             "fusion": pipe.fusion}
    for kind, component in parts.items():
        assert contracts.missing_members(component, registry.contracts[kind]) == [], kind


# -- layout ------------------------------------------------------------------------------------------------
def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def test_plugins_import_only_public_framework_modules_and_never_each_other():
    sources = [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "examples").rglob("*.py")]
    for path in sources:
        for module in _imports(path):
            assert not module.startswith("vita_plugins"), f"{path} imports {module}: another plugin's module"
            if module.startswith("vita_framework"):
                assert not re.search(r"(^|\.)_", module), f"{path} imports private module {module}"
            assert not module.startswith("vita_training"), f"{path} imports training code"


def test_no_inference_module_over_300_lines():
    files = [*(ROOT / "vita_framework").rglob("*.py"), *(ROOT / "plugins").rglob("*.py"),
             *(ROOT / "training").rglob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 310}
    assert long == {}


def test_the_core_names_no_modality():
    """A new input kind needs no core edit: no core module spells a built-in modality's request key or marker."""
    core = [p for p in (ROOT / "vita_framework").rglob("*.py") if p.name not in ("cli.py",)]
    for path in core:
        text = path.read_text()
        for word in ('"images"', '"audios"', '"videos"', '"<image>"', '"<audio>"', '"<video>"', "IMAGE_PLACEHOLDER"):
            assert word not in text, f"{path.name} hard-codes {word}"


def test_registry_refuses_a_config_naming_a_component_of_a_missing_kind():
    registry = load_plugins().registry
    with pytest.raises(ConfigError, match="unknown kind 'sonar'"):
        from vita_framework.registry import ComponentSpec

        registry.add(ComponentSpec("sonar", "x", lambda o, c: None, None, "", "p", "pkg", "1"))
