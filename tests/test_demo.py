"""The demo through ``gradio_client`` (each Client is a tab of its own): it streams the CLI's answers for image,
audio and video uploads, tabs asking at once are batched by the server's scheduler (each still getting the answer
it gets alone), Stop ends a generation, and bad input (an undecodable upload, an oversized one, a question while
the tab is still being answered) is a note in the chat after which the app goes on. Bad overrides are refused as
the CLI refuses them, before Gradio or torch is imported.

The app runs VITA-1.5's composition on the golden tiny checkpoint with whale audio, and with
``generation.eos_token_id=[] generation.stop_tokens=[]`` every answer is exactly as long as asked (a long one
can be stopped, a busy tab is busy long enough); the CLI gets the same overrides.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time

import pytest
from browser import SAMPLE, demo_app, env, wait_until
from serve_helpers import write_clip

from conftest import GOLDEN, GOLDEN_CKPT, ROOT

COMPOSITION = (
    "+experiment=vita15",
    f"checkpoint={GOLDEN_CKPT}",
    "dtype=float32",
    "device=cpu",
    "audio=whale",
    "generation.eos_token_id=[]",
    "generation.stop_tokens=[]",
)
AUDIO = GOLDEN / "case3_image_audio" / "audio.wav"
BIG_IMAGE = GOLDEN / "case3_image_audio" / "source.png"  # 121 KB: over the app's 0.1 MB limit
TOKENS = 16


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("media") / "clip.mp4")


@pytest.fixture(scope="module")
def questions(clip):
    """(text, files) of the questions asked, each as its own tab would ask it."""
    return {
        "image": ("", [SAMPLE]),
        "audio": ("", [AUDIO]),
        "video": ("What happens?", [clip]),
        "text": ("What colour is the circle?", []),
    }


@pytest.fixture(scope="module")
def cli_answers(questions, tmp_path_factory):
    """The CLI's answer to each question, each alone (batch mode with batch_size=1), same overrides."""
    out = tmp_path_factory.mktemp("cli")
    rows = []
    for text, files in questions.values():
        row = {"prompt": text} if text else {}
        for f in files:
            row.setdefault({".png": "images", ".wav": "audios", ".mp4": "videos"}[f.suffix], []).append(str(f))
        rows.append(row)
    (out / "batch.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vita_framework",
            *COMPOSITION,
            f"generation.max_new_tokens={TOKENS}",
            f"requests={out / 'batch.jsonl'}",
            "batch_size=1",
            f"hydra.run.dir={out}",
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "result.json").read_text())  # the answers of a random-weight model hold newlines
    return {kind: row["text"] for kind, row in zip(questions, result["rows"], strict=True)}


@pytest.fixture(scope="module")
def starting(tmp_path_factory):
    with demo_app(tmp_path_factory.mktemp("demo"), *COMPOSITION, "demo.max_upload_mb=0.1") as running:
        yield running


@pytest.fixture(scope="module")
def app(starting, cli_answers):
    return starting.wait_ready()  # the CLI ran while the app was starting


def tab(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def ask(client, text: str, files=(), max_tokens: int = TOKENS, temperature: float = 0.0):
    from gradio_client import handle_file

    return client.submit(
        {"text": text, "files": [handle_file(str(f)) for f in files]}, max_tokens, temperature, api_name="/chat"
    )


def texts(chat: list[dict]) -> list[str]:
    """Each message's text (files left out; the page's HTML escaping undone)."""
    return [html.unescape(" ".join(p.get("text", "") for p in m["content"] if p.get("type") == "text")) for m in chat]


def stat(panel: str, row: str) -> str:
    found = re.search(rf"\| {row} \| ([^|]+) \|", panel)
    assert found, panel
    return found.group(1).strip()


def streaming(job, outputs: int = 2, timeout: float = 60.0) -> None:
    wait_until(lambda: len(job.outputs()) >= outputs, timeout, what=f"{outputs} outputs of the answer")


@pytest.mark.slow
def test_each_input_kind_streams_the_clis_answer(app, questions, cli_answers):
    for kind, (text, files) in questions.items():
        job = ask(tab(app), text, files)
        chat, _, panel = job.result(timeout=120)
        assert texts(chat)[-1] == cli_answers[kind], kind
        assert stat(panel, "tokens out") == str(TOKENS) and stat(panel, "finished") == "token limit"
        if kind != "text":
            assert f"{kind} " in stat(panel, "tokens in"), panel
        grown = [texts(out[0])[-1] for out in job.outputs() if out[0] and out[0][-1]["role"] == "assistant"]
        assert all(cli_answers[kind].startswith(t) for t in grown)
        assert len(set(grown)) >= 3, grown  # the answer arrived in pieces, not at once


@pytest.mark.slow
def test_tabs_asking_at_once_are_batched_and_stop_ends_a_generation(app, questions, cli_answers):
    long = tab(app)
    story = ask(long, "Tell me a story.", max_tokens=4000)
    streaming(story)  # the engine is busy with it: the next tabs' questions wait in the scheduler's queue
    waiting = {kind: ask(tab(app), *questions[kind]) for kind in ("image", "video", "text")}
    for job in waiting.values():
        streaming(job, 1)  # each is submitted (its question shown, no answer yet)
    t0 = time.monotonic()
    long.predict(api_name="/stop")
    chat, _, panel = story.result(timeout=60)
    assert stat(panel, "finished") == "stopped" and 0 < int(stat(panel, "tokens out")) < 4000
    assert time.monotonic() - t0 < 30
    for kind, job in waiting.items():
        chat, _, panel = job.result(timeout=120)
        assert texts(chat)[-1] == cli_answers[kind], kind  # batched, and still the answer it gets alone
        assert stat(panel, "batch") == "3 rows", panel


@pytest.mark.slow
def test_a_busy_tab_gets_a_note_and_goes_on(app, questions, cli_answers):
    client = tab(app)
    first = ask(client, "Tell me a story.", max_tokens=4000)
    streaming(first)
    chat, box, _ = ask(client, *questions["text"]).result(timeout=60)
    assert "still answering your previous message" in texts(chat)[-1]
    assert isinstance(box, dict) and "value" not in box  # an update that leaves the typed text in the box
    client.predict(api_name="/stop")
    chat, _, panel = first.result(timeout=60)
    assert stat(panel, "finished") == "stopped"
    assert any("still answering" in t for t in texts(chat))  # the note stays in the chat
    client.predict(api_name="/clear")
    chat, _, _ = ask(client, *questions["text"]).result(timeout=60)
    assert texts(chat) == ["What colour is the circle?", cli_answers["text"]]


@pytest.mark.slow
def test_bad_uploads_are_notes_in_the_chat(app, questions, cli_answers, tmp_path):
    client = tab(app)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    chat, _, _ = ask(client, "What is it?", [broken]).result(timeout=60)
    assert "broken.png" in texts(chat)[-1] and texts(chat)[-1].startswith("⚠️"), texts(chat)
    assert str(tmp_path) not in texts(chat)[-1] and "/gradio/" not in texts(chat)[-1]  # no server paths
    chat, _, _ = ask(client, "What is it?", [BIG_IMAGE]).result(timeout=60)
    note = texts(chat)[-1]
    assert "'source.png' has 0.12 MB; this demo accepts files up to 0.10 MB" in note and "demo.max_upload_mb" in note
    (tmp_path / "notes.txt").write_text("not a picture")
    chat, _, _ = ask(client, "", [tmp_path / "notes.txt"]).result(timeout=60)
    assert "'notes.txt' is not a file type this demo reads" in texts(chat)[-1]
    chat, _, panel = ask(client, *questions["image"]).result(timeout=60)  # refused turns are not in the history
    assert texts(chat)[-1] == cli_answers["image"] and stat(panel, "finished") == "token limit"
    chat, _, panel = ask(client, "And now?").result(timeout=60)  # a second turn sends the first one too
    assert len(texts(chat)[-1]) > 0 and int(stat(panel, "tokens in").split()[0]) > 100


def test_bad_overrides_are_refused_before_anything_loads(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "vita_framework.demo",
                "+vision=internvit",
                "+audio=none",
                *args,
                f"hydra.run.dir={tmp_path}",
            ],
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = run("vision=internvitt")
    assert done.returncode == 2 and "error: config group 'vision' has no option 'internvitt'" in done.stderr
    done = run("demo.prot=9000")
    assert done.returncode == 2 and "demo.port" in done.stderr and "Traceback" not in done.stderr, done.stderr
    done = run("demo.max_upload_mb=0")
    assert done.returncode == 2 and "demo.max_upload_mb must be > 0" in done.stderr, done.stderr
    probe = "import sys, vita_framework.demo.__main__; print(sorted({'gradio', 'torch'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
