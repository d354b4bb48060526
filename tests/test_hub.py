"""Hub checkpoints for real: downloads from a hub-shaped server on 127.0.0.1 (``HF_ENDPOINT``), the offline path
from the populated cache, and bad references (repo, revision, gated, a download cut half-way) as clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import HubServer, vita_repo

from vita_framework.weights import default_bundle_path, read_bundle_info

REPO = "vita-test/tiny-vita"
RUN = ["+vision=internvit", "+audio=none", "device=cpu", "generation.max_new_tokens=12"]
ANSWER = read_bundle_info(default_bundle_path())["sample"]["answer"]  # the embedded bundle's, for its sample
LLM_PARAMS = read_bundle_info(default_bundle_path())["parameters"]["llm"]


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    return vita_repo(tmp_path_factory.mktemp("hubrepo") / "tiny-vita")


def hub_env(tmp_path, hub=None, **extra):
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0" if hub else "1", PYTHONUNBUFFERED="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1", HF_ENDPOINT=hub.url if hub else "http://127.0.0.1:9")
    for key in ("HF_TOKEN", "VITA_DEBUG", "HF_HUB_CACHE"):
        env.pop(key, None)
    env.update(extra)
    return env


def run(args, env, *, module="vita_framework", timeout=240):
    return subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def python(code, env):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)


ONLINE = """
import json, os, sys, urllib.request
import vita_framework
from vita_framework.config import compose
from vita_framework.memory_plan import compute_plan
args = sys.argv[1:]
plan = compute_plan(compose(args)).to_dict()
try:  # a marker in the server's log: what follows is the build's
    urllib.request.urlopen(os.environ["HF_ENDPOINT"] + "/__build__/x/y", timeout=10)
except OSError:
    pass
pipe = vita_framework.build(args)
images = [os.environ["SAMPLE"]] if "+vision=internvit" in args else []
text = pipe.generate("Describe this image.", images=images, max_new_tokens=12).text
print(json.dumps({"plan": plan, "text": text}))
"""


def online(args, env):
    from vita_framework.cli import SAMPLE_IMAGE

    proc = subprocess.run([sys.executable, "-c", ONLINE, *args], env={**env, "SAMPLE": str(SAMPLE_IMAGE)},
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def split_log(hub):
    """(the plan's requested paths, the build's) around the marker."""
    paths = [p for m, p, _ in hub.log if m == "GET"]
    cut = next(i for i, p in enumerate(paths) if p.startswith("/__build__"))
    return paths[:cut], paths[cut + 1:]


def test_plan_fetches_configs_the_run_fetches_what_it_needs_and_offline_runs_from_the_cache(tmp_path, repo_dir):
    with HubServer() as hub:
        hub.add(REPO, repo_dir, refs=("main",))
        tagged = hub.add(REPO, _edited(repo_dir, tmp_path), refs=("v0.1",))
        result = online([*RUN, f"checkpoint={REPO}@v0.1"], hub_env(tmp_path, hub))
        assert result["text"] == ANSWER and result["plan"]["components"]["llm"]["params"] == LLM_PARAMS
        planned, built = split_log(hub)
        assert not [p for p in planned if p.endswith(".safetensors")]  # the plan: config files only
        got = {p.rsplit("/", 1)[-1] for p in built if "/resolve/" in p}
        assert got == {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"}
        resolved = [p for p in planned + built if "/resolve/" in p]
        assert all(f"/resolve/{tagged}/" in p for p in resolved)  # @v0.1's commit
        assert not {p.rsplit("/", 1)[-1] for p in resolved} & {"model-00003-of-00003.safetensors", "scheduler.pt",
                                                                "decoder.bin"}  # +audio=none; never junk

        # offline (HF_HUB_OFFLINE=1, the endpoint a closed port) the tag resolves from the cache; the default branch
        # was never fetched: refused before loading, with the command that fetches it
        code = ("import vita_framework\nfrom vita_framework.fetch import resolve_checkpoint\n"
                f"print(resolve_checkpoint('{REPO}@v0.1', kinds=['vision'], ignored=['model.audio_encoder.']))")
        cached = python(code, hub_env(tmp_path))
        assert cached.returncode == 0 and cached.stdout.strip().endswith(tagged), cached.stderr[-3000:]
        proc = run([*RUN, f"checkpoint={REPO}", f"hydra.run.dir={tmp_path / 'run'}"], hub_env(tmp_path))
        assert proc.returncode == 2
        assert f"python -m vita_framework.fetch {REPO}`" in proc.stderr and "HF_HUB_OFFLINE=1" in proc.stderr


def _edited(repo_dir, tmp_path):
    """A second commit (tag v0.1): the same weights, another bundle_info.json."""
    import shutil

    other = tmp_path / "v0.1"
    shutil.copytree(repo_dir, other)
    (other / "bundle_info.json").write_text('{"weights": "trained", "tag": "v0.1"}')
    return other


ERRORS = """
import json, os
from vita_framework.errors import HubError
from vita_framework.fetch import fetch_bundle
from vita_framework.hub import parse_hub_ref
from vita_framework.weights import resolve_local_dir
from pathlib import Path
out = {}
def attempt(name, value, token=None, **kw):
    os.environ.pop("HF_TOKEN", None)
    if token:
        os.environ["HF_TOKEN"] = token
    try:
        out[name] = str(fetch_bundle(parse_hub_ref(value), kinds=["vision"], **kw))
    except HubError as exc:
        out[name] = "HubError: " + str(exc)
attempt("no_repo", "vita-test/nope")
attempt("no_rev", "vita-test/tiny-vita@v9")
attempt("gated", "vita-test/gated")
attempt("gated_wrong", "vita-test/gated", token="hf_wrong")
attempt("gated_ok", "vita-test/gated", token="hf_right")
os.environ.pop("HF_TOKEN", None)
try:
    out["model"] = str(resolve_local_dir("vita-test/tiny-vita@main", base=Path.cwd(), what="llm.model"))
except HubError as exc:
    out["model"] = "HubError: " + str(exc)
print(json.dumps(out))
"""


def test_bad_references_and_gated_repositories_are_clear_errors(tmp_path, repo_dir):
    with HubServer() as hub:
        hub.add(REPO, repo_dir)
        hub.add("vita-test/gated", repo_dir, gated_token="hf_right")
        proc = python(ERRORS, hub_env(tmp_path, hub))
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout)
    assert "no repository 'vita-test/nope'" in out["no_repo"] and "HF_TOKEN is not set" in out["no_repo"]
    assert "revision 'v9' does not exist in 'vita-test/tiny-vita'" in out["no_rev"]
    assert "checkpoint=vita-test/tiny-vita@main" in out["no_rev"]
    assert "gated repository and HF_TOKEN is not set" in out["gated"] and f"{hub.url}/vita-test/gated" in out["gated"]
    assert "HF_TOKEN is set but its account is not allowed" in out["gated_wrong"]
    assert not out["gated_ok"].startswith("HubError") and out["gated_ok"].endswith(tuple("0123456789abcdef"))
    # llm.model=<hub id>: a model directory's files (weights included), resolved like a local directory
    assert Path(out["model"], "model-00001-of-00003.safetensors").is_file()
    assert not Path(out["model"], "scheduler.pt").exists()


CUT = """
import json, os, pathlib
import huggingface_hub.constants
huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = 65536  # resumes count whole chunks: make the 1.8 MB shard several
from vita_framework.errors import HubError
from vita_framework.fetch import fetch_bundle
from vita_framework.hub import parse_hub_ref
ref = parse_hub_ref("vita-test/tiny-vita")
try:
    fetch_bundle(ref, kinds=["vision"], ignored=["model.audio_encoder."])
    print(json.dumps({"ok": True}))
except HubError as exc:
    cache = pathlib.Path(os.environ["HF_HOME"], "hub")
    print(json.dumps({"error": str(exc), "partial": [str(p) for p in cache.rglob("*.incomplete")],
                      "files": sorted(p.name for p in cache.rglob("snapshots/*/*"))}))
"""


def test_a_cut_download_resumes_or_fails_clean_and_is_never_used_half_written(tmp_path, repo_dir):
    shard = "model-00001-of-00003.safetensors"
    with HubServer() as hub:
        hub.add(REPO, repo_dir)
        hub.cut[shard] = "once"  # dropped half-way once: huggingface_hub resumes it with a range request
        resumed = python(CUT, hub_env(tmp_path / "a", hub))
        assert json.loads(resumed.stdout) == {"ok": True}, resumed.stderr[-3000:]
        half = len((repo_dir / shard).read_bytes()) // 2
        resumes = [int(r.split("=")[1].rstrip("-")) for _, p, r in hub.log if r and p.endswith(shard)]
        assert len(resumes) == 1 and half - 65536 < resumes[0] <= half  # from the last whole chunk received

        hub.cut[shard] = "always"  # dropped every time: a clean error, nothing half-written in the snapshot
        env = hub_env(tmp_path / "b", hub)
        failed = json.loads(python(CUT, env).stdout)
        assert "download was cut" in failed["error"] and "run the same command again" in failed["error"]
        assert failed["partial"] == [] and shard not in failed["files"] and "config.json" in failed["files"]
        offline = json.loads(python(CUT, hub_env(tmp_path / "b")).stdout)  # the cache alone: incomplete, refused
        assert "not (completely) in the local Hugging Face cache" in offline["error"]
        assert "python -m vita_framework.fetch vita-test/tiny-vita" in offline["error"]

        del hub.cut[shard]
        before = len(hub.log)
        assert json.loads(python(CUT, env).stdout) == {"ok": True}
        fetched = [p for m, p, _ in hub.log[before:] if m == "GET" and "/resolve/" in p]
        assert [p.rsplit("/", 1)[-1] for p in fetched] == [shard]  # only the missing file is downloaded again


def test_validation_accepts_hub_ids_without_the_network(monkeypatch, tmp_path):
    import socket

    from huggingface_hub import constants

    from vita_framework.config import compose
    from vita_framework.validation import checkpoint_problems

    def refuse(*args, **kwargs):
        raise AssertionError("validation touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cfg = compose([*RUN, "checkpoint=VITA-MLLM/VITA-1.5@main"])
    assert checkpoint_problems(cfg) == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    (problem,) = checkpoint_problems(cfg)
    assert "not in the local Hugging Face cache" in problem
    assert "python -m vita_framework.fetch VITA-MLLM/VITA-1.5@main" in problem
    assert "hf download VITA-MLLM/VITA-1.5 --revision main" in problem
    assert checkpoint_problems(compose([*RUN, "checkpoint=./no/such/dir"]))[0].startswith("checkpoint directory")


def _tiny_llama(dest):
    """A standard transformers checkpoint directory (what llm.model names): a tiny Llama + the bundle's tokenizer."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vita_framework.weights import default_bundle_path

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=640, max_position_embeddings=512)
    LlamaForCausalLM(config).save_pretrained(dest)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(default_bundle_path() / name, dest / name)
    (dest / "pytorch_model.bin").write_bytes(b"never fetched")
    return dest


def test_llm_model_hub_id_plans_from_its_config_and_loads_from_the_cache(tmp_path):
    from safetensors.torch import load_file

    llama = _tiny_llama(tmp_path / "tiny-llama")
    args = ["llm=hf_causal_lm", "llm.model=vita-test/tiny-llama@main", "checkpoint=null", "device=cpu"]
    with HubServer() as hub:
        hub.add("vita-test/tiny-llama", llama)
        result = online(args, hub_env(tmp_path, hub))
        params = sum(v.numel() for v in load_file(str(llama / "model.safetensors")).values())
        assert result["plan"]["components"]["llm"]["params"] == params
        planned, built = split_log(hub)
        assert not [p for p in planned if p.endswith(".safetensors")]
        assert [p.rsplit("/", 1)[-1] for p in built if p.endswith((".safetensors", ".bin"))] == ["model.safetensors"]
    code = ("from pathlib import Path\nfrom vita_framework.weights import resolve_local_dir\n"
            "resolve_local_dir('vita-test/tiny-llama@v2', base=Path.cwd(), what='llm.model')")
    proc = python(code, hub_env(tmp_path))
    assert "python -m vita_framework.fetch vita-test/tiny-llama@v2 --model" in proc.stderr


def test_fetch_command_prefetches_a_run_or_configs_with_a_progress_bar(tmp_path, repo_dir):
    with HubServer() as hub:
        hub.add(REPO, repo_dir)
        env = hub_env(tmp_path, hub)
        env.pop("HF_HUB_DISABLE_PROGRESS_BARS")
        proc = run([REPO, "--config-only"], env, module="vita_framework.fetch")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Fetching" in proc.stderr and "100%" in proc.stderr  # huggingface_hub's progress bar
        assert not [p for p in hub.requested() if p.endswith(".safetensors")]
        proc = run([REPO, "+vision=internvit", "+audio=none"], env, module="vita_framework.fetch")
        assert proc.returncode == 0, proc.stderr[-3000:]
        snapshot = Path(proc.stdout.strip())
        assert sorted(p.name for p in snapshot.glob("*.safetensors")) == [
            "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"]
    # what the fetch put in the cache is enough to run offline (HF_HUB_OFFLINE=1, the server gone)
    offline = run([*RUN, f"checkpoint={REPO}", f"hydra.run.dir={tmp_path / 'out'}"], hub_env(tmp_path))
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert offline.stdout.strip() == ANSWER
