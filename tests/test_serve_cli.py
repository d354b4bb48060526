"""``python -m vita_framework.serve``: it logs its URL, answers as the CLI does, and the README's Serve examples
(curl, the openai client) work as written against it on the embedded default."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from serve_helpers import answer, chat

from conftest import ROOT

pytest.importorskip("fastapi")
pytest.importorskip("openai")

SERVE = [sys.executable, "-m", "vita_framework.serve", "+vision=internvit", "+audio=none"]
SAMPLE = ROOT / "vita_framework" / "assets" / "sample.png"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = tmp_path_factory.mktemp("serve")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("VITA_API_KEY", None)
    proc = subprocess.Popen([*SERVE, "serve.port=0", f"hydra.run.dir={out}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, url = [], None
    deadline = time.monotonic() + 180
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        found = re.search(r"serving 'vita-default' on (http://127\.0\.0\.1:\d+) ", line)
        url = found.group(1) if found else None
    if url is None:
        proc.kill()
        pytest.fail("the server did not log its URL:\n" + "".join(lines))
    yield url
    proc.terminate()
    proc.wait(30)


def test_the_server_answers_as_the_cli_does(served, run_env, tmp_path):
    cli = subprocess.run([sys.executable, "-m", "vita_framework", "+vision=internvit", "+audio=none",
                          f"images=[{SAMPLE}]", "prompt=What colour is the square?", "stream=false",
                          f"hydra.run.dir={tmp_path}"], cwd=ROOT, env=run_env, capture_output=True, text=True,
                         timeout=300)
    assert cli.returncode == 0, cli.stderr
    from PIL import Image
    from serve_helpers import image_question, png_url

    status, body = chat(served, image_question(png_url(Image.open(SAMPLE)), "What colour is the square?"))
    assert status == 200 and answer(body) == cli.stdout.strip() == "purple"


def _readme_block(language: str, needle: str) -> str:
    section = (ROOT / "README.md").read_text().split("\n## Serve\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)
    return next(b for b in blocks if needle in b)


def test_readme_curl_and_openai_examples_work_as_written(served):
    port = served.rsplit(":", 1)[1]
    curl = _readme_block("bash", "curl ").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    done = subprocess.run(["bash", "-c", curl], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and '"content":"purple"' in done.stdout, done.stdout + done.stderr
    code = _readme_block("python", "OpenAI(").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purple {'image': 49"), done.stdout


def test_a_misspelt_serve_option_is_refused_before_loading(run_env, tmp_path):
    done = subprocess.run([*SERVE, "serve.prot=9000", f"hydra.run.dir={tmp_path}"], cwd=ROOT, env=run_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "serve.port" in done.stderr, done.stderr
    done = subprocess.run([*SERVE, "serve.engine=spark", f"hydra.run.dir={tmp_path}"], cwd=ROOT, env=run_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "serve.engine=spark is not supported" in done.stderr, done.stderr


@pytest.mark.slow
def test_serve_benchmark_runs(run_env):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve.py"), "--requests", "4", "--concurrency",
                           "1,2", "--new-tokens", "4", "--models", "default", "--soak", "6", "--soak-concurrency", "3",
                           "--conversations", "0"], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^default +([12]) +([0-9.]+) +([0-9.]+) .* 0 +0 +[0-9.]+$", done.stdout, flags=re.M)
    assert [r[0] for r in rows] == ["1", "2"] and all(float(r[2]) > 0 for r in rows), done.stdout
    assert re.search(r"^soak: 6 requests at concurrency 3: 6 ok, 0 lost, 0 5xx", done.stdout, flags=re.M), done.stdout
