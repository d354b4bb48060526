"""The Gradio page: a chat with history and uploads (image, audio from a file or the microphone, video), the
answer streaming token by token, a Stop button, sliders for max new tokens and temperature, and a panel with
the composition and the last answer's figures. The chat logic lives in :mod:`~.chat`; this module only lays out
components and wires events (Gradio is imported here, never when the package is imported).

Every event has an API name, so ``gradio_client`` drives the page as a browser does: ``/chat`` (streams),
``/stop``, ``/clear``. The chat event has no concurrency limit: several tabs ask at once and the server's
scheduler batches them; the same tab asking again while answered gets a note in its chat.
"""

# no ``from __future__ import annotations`` here: Gradio finds the ``gr.Request`` parameter of a handler by its
# annotation, which must be the class itself (``gr`` is imported inside create_demo)
import html
import os
from typing import Any

from .chat import DemoChat
from .panels import composition_markdown, stats_markdown

TITLE = "vita_framework demo"


def _gradio() -> Any:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no version check, no telemetry: nothing leaves the machine
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio as gr

    return gr


def create_demo(chat: DemoChat, composition: list[dict[str, str]], *, model_name: str = "vita") -> Any:
    """The ``gr.Blocks`` of the page over ``chat`` (whose scheduler the caller starts and stops)."""
    gr = _gradio()
    token_cap = max(chat.default_max_tokens, min(chat.pipeline.max_length or 4096, 4096))
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"## {TITLE}: `{model_name}`\nUpload an image, a recording (or use the microphone) or a video, "
            "and ask about it. Without a question, an image is described."
        )
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Chat",
                    elem_id="vita-chat",
                    height=520,
                    buttons=["copy"],
                    feedback_options=None,
                    allow_file_downloads=False,
                    render_markdown=False,
                )
                box = gr.MultimodalTextbox(
                    elem_id="vita-input",
                    show_label=False,
                    file_count="multiple",
                    sources=["upload", "microphone"],  # no file_types: any other file gets a note in the chat
                    placeholder="Ask about your files (Enter sends; Shift+Enter: a new line)",
                )
                with gr.Row():
                    stop = gr.Button("Stop", elem_id="vita-stop", variant="stop")
                    clear = gr.Button("Clear", elem_id="vita-clear")
            with gr.Column(scale=2):
                gr.Markdown(composition_markdown(composition), elem_id="vita-composition")
                stats = gr.Markdown(stats_markdown(None), elem_id="vita-stats")
                max_tokens = gr.Slider(
                    1,
                    token_cap,
                    value=chat.default_max_tokens,
                    step=1,
                    label="Max new tokens",
                    elem_id="vita-max-tokens",
                )
                temperature = gr.Slider(
                    0.0,
                    2.0,
                    value=chat.default_temperature,
                    step=0.05,
                    label="Temperature (0: greedy)",
                    elem_id="vita-temperature",
                )

        async def respond(message: Any, limit: float, temp: float, request: gr.Request):
            text, files = _message(message)
            async for display, clear_input, session in chat.respond(
                _session(request), text, files, int(limit), float(temp)
            ):
                yield (
                    page_chat(display),
                    gr.MultimodalTextbox(value=None) if clear_input else gr.skip(),
                    stats_markdown(session.stats, running=session.job is not None),
                )

        async def cancel(request: gr.Request) -> None:
            chat.cancel(_session(request))

        async def reset(request: gr.Request) -> tuple:
            chat.clear(_session(request))
            return [], gr.MultimodalTextbox(value=None), stats_markdown(None)

        async def emptied(request: gr.Request) -> str:  # the chat's own trash button: a new conversation
            chat.clear(_session(request))
            return stats_markdown(None)

        async def forget(request: gr.Request) -> None:
            chat.sessions.forget(_session(request))

        box.submit(
            respond,
            [box, max_tokens, temperature],
            [chatbot, box, stats],
            api_name="chat",
            concurrency_limit=None,
            trigger_mode="multiple",
            show_progress="hidden",
        )
        stop.click(cancel, None, None, api_name="stop", concurrency_limit=None, show_progress="hidden")
        clear.click(reset, None, [chatbot, box, stats], api_name="clear", concurrency_limit=None)
        chatbot.clear(emptied, None, [stats], api_name=False, concurrency_limit=None)
        demo.unload(forget)
    return demo


def launch(demo: Any, host: str, port: int, *, max_threads: int = 40) -> str:
    """Start the page's server in the background on ``host:port``; returns its URL."""
    demo.queue(default_concurrency_limit=None)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        quiet=True,
        prevent_thread_lock=True,
        show_error=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        max_threads=max_threads,
        footer_links=[],
    )
    return str(url).rstrip("/")


def page_chat(display: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat for the page: a copy (Gradio may hold it while the answer grows) whose text is HTML-escaped, as
    the page shows messages as HTML (sanitised): ``<option>`` in a note or ``<b>`` in an answer stays visible
    text instead of being taken for a tag. A ``gradio_client`` caller gets the escaped text (``html.unescape``)."""
    return [
        {
            **m,
            "content": [
                {"type": "text", "text": html.escape(p["text"], quote=False)} if p.get("type") == "text" else dict(p)
                for p in m["content"]
            ],
        }
        for m in display
    ]


def _session(request: Any) -> str | None:
    return getattr(request, "session_hash", None)


def _message(message: Any) -> tuple[str, list[str]]:
    """A MultimodalTextbox value (``{"text", "files"}``; files as paths or file dicts) -> (text, paths)."""
    if isinstance(message, str):
        return message, []
    message = message or {}
    files = []
    for item in message.get("files") or []:
        path = item.get("path") if isinstance(item, dict) else getattr(item, "path", item)
        if path:
            files.append(str(path))
    return str(message.get("text") or ""), files
