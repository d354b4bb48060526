"""The demo in a real browser: headless Chromium (Debian's, installed by the fixture when missing) opens the page,
uploads the shipped sample image, asks the CLI's default question, waits for the streamed answer and compares it
with the real CLI's, then records from the (fake) microphone; the page needs nothing from outside the machine.
The screenshot is kept as an artifact (tests/artifacts/demo.png) and is the README's (docs/demo.png: written when
missing or with VITA_UPDATE_SCREENSHOT=1). The README's gradio_client example runs against the same app.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from browser import BASE, SAMPLE, browser_page, chromium, cli_answer, demo_app, env  # noqa: F401 (a fixture)

from conftest import ROOT
from vita_framework.preparation import DEFAULT_QUESTION

ARTIFACT = ROOT / "tests" / "artifacts" / "demo.png"
DOCS_SCREENSHOT = ROOT / "docs" / "demo.png"
#: records the last answer's text each time the chat changes, to see it grow token by token
WATCH = """() => {
  window.__states = [];
  const chat = document.querySelector('#vita-chat');
  new MutationObserver(() => {
    const bots = chat.querySelectorAll('[data-testid="bot"]');
    const text = bots.length ? bots[bots.length - 1].innerText.trim() : '';
    if (window.__states[window.__states.length - 1] !== text) window.__states.push(text);
  }).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


@pytest.mark.slow
def test_the_page_answers_the_sample_image_as_the_cli_does(chromium, tmp_path):  # noqa: F811
    with demo_app(tmp_path / "demo") as app:
        expected = cli_answer(tmp_path / "cli", *BASE)  # sample image, default question (while the app starts)
        assert expected == "a purple square, a yellow triangle and a green star"
        url = app.wait_ready()
        with browser_page(chromium) as page:
            _ask_in_the_page(page, url, expected)
            _speak_into_the_microphone(page)
        _readme_client_example_works(url)
    assert ARTIFACT.stat().st_size > 10_000
    if not DOCS_SCREENSHOT.exists() or os.environ.get("VITA_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(ARTIFACT, DOCS_SCREENSHOT)


def _ask_in_the_page(page, url: str, expected: str) -> None:
    page.goto(url)
    page.wait_for_selector("#vita-input textarea", timeout=60_000)
    composition = page.inner_text("#vita-composition")
    for needed in (
        "vision",
        "internvit",
        "vita_plugins.vision.internvit",
        "vita-framework",
        "0.1.0",
        "llm",
        "qwen2",
        "projector",
        "mlp2x_gelu",
        "fusion",
        "splice",
    ):
        assert needed in composition, composition
    page.locator("#vita-input input[type=file]").set_input_files(str(SAMPLE))
    page.wait_for_selector("#vita-input img", timeout=30_000)  # the thumbnail: the upload is done
    page.evaluate(WATCH)
    page.fill("#vita-input textarea", DEFAULT_QUESTION)
    page.press("#vita-input textarea", "Enter")
    page.wait_for_function("document.querySelector('#vita-stats').innerText.includes('end of answer')", timeout=60_000)
    bots = page.locator('#vita-chat [data-testid="bot"]')
    assert bots.last.inner_text().strip() == expected
    users = page.locator('#vita-chat [data-testid="user"]')
    assert DEFAULT_QUESTION in users.last.inner_text()
    assert page.locator("#vita-chat [data-testid='user'] img").count() >= 1  # the upload is shown in the chat
    stats = page.inner_text("#vita-stats")
    assert "image 49" in stats and "12" in stats, stats
    states = page.evaluate("window.__states")
    assert states[-1] == expected
    assert all(expected.startswith(s) for s in states), states  # only ever a prefix of the answer
    print(f"\nanswer states seen by the page: {len(states)}")
    assert page.external_requests == []  # fonts, scripts, analytics: nothing from outside
    ARTIFACT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACT))


def _speak_into_the_microphone(page) -> None:
    """A recording (Chromium's fake microphone) is sent as audio: this composition has no audio encoder
    (+audio=none), so the chat says so, and the tab goes on."""
    page.click("#vita-input [data-testid=microphone-button]")
    page.click("#vita-input button[aria-label='Start recording']")
    page.wait_for_function("document.querySelector('#vita-input').innerText.includes('0:01')", timeout=30_000)
    page.click("#vita-input button[aria-label='Stop recording']")
    page.click("#vita-input button[aria-label='Attach audio']", timeout=30_000)
    page.wait_for_selector("#vita-input button[aria-label='Remove file']", timeout=30_000)
    page.press("#vita-input textarea", "Enter")
    page.wait_for_function(
        "document.querySelector('#vita-chat').innerText.includes('no audio encoder is configured')", timeout=60_000
    )
    note = page.locator('#vita-chat [data-testid="bot"]').last.inner_text()
    assert "audios were given but no audio encoder is configured; add +audio=<option>" in note, note


def _readme_client_example_works(url: str) -> None:
    """The README's gradio_client example, as written but for the port, against the same app."""
    section = (ROOT / "README.md").read_text().split("\n## Demo\n", 1)[1].split("\n## ", 1)[0]
    code = next(b for b in re.findall(r"```python\n(.*?)```", section, flags=re.S) if "gradio_client" in b)
    code = code.replace("http://127.0.0.1:7860/", url + "/")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "purple", done.stdout
