"""OpenAI's chat-completions schema: the request body parsed and checked, errors as OpenAI's error object, and
the response bodies (a completion, a stream chunk, usage).

Every mistake in a body is an :class:`APIError` (400 unless said otherwise) naming the parameter
(``messages[0].content[1].image_url.url``). Media parts arrive as ``data:`` URLs (``file://`` only with
``serve.allow_local_files=true``); their bytes are written to a per-request temporary directory
(:class:`MediaStore`) and read by the modality's own loader, with its checks (pixel limits, audio length).
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlparse

from .chat import ROLES, ChatMessage, MediaPart, TextPart

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An HTTP error with OpenAI's body: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


@dataclass
class ChatParams:
    messages: list[ChatMessage]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False

    def generation(self) -> dict[str, Any]:
        """Generation options of this request: temperature 0 is greedy, > 0 samples; unset keeps the server's."""
        options: dict[str, Any] = {}
        if self.temperature is not None:
            options["do_sample"] = self.temperature > 0
            if self.temperature > 0:
                options["temperature"] = float(self.temperature)
        if self.top_p is not None:
            options["top_p"] = float(self.top_p)
        return options


class MediaStore:
    """Where a request's media bytes live until its inputs are loaded; :meth:`cleanup` removes them."""

    def __init__(self, allow_local_files: bool = False) -> None:
        self.allow_local_files = allow_local_files
        self._dir: Path | None = None
        self.params: dict[str, str] = {}  # saved path -> the request parameter it came from

    def save(self, data: bytes, suffix: str, param: str) -> str:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="vita-serve-"))
        path = self._dir / f"{len(self.params)}{suffix}"
        path.write_bytes(data)
        self.params[str(path)] = param
        return str(path)

    def explain(self, message: str) -> tuple[str, str | None]:
        """A loader's error about a saved file, naming the request's parameter instead of the temporary path."""
        param = None
        for path, name in self.params.items():
            if path in message:
                message, param = message.replace(f"'{path}'", name).replace(path, name), param or name
        return message, param

    def cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def parse_chat(body: Any, *, modalities: Any, media: MediaStore) -> ChatParams:
    """A chat-completions body -> :class:`ChatParams` (media saved through ``media``)."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list of messages", "messages")
    parsed = [_message(m, f"messages[{i}]", modalities, media) for i, m in enumerate(messages)]
    for i, message in enumerate(parsed):
        if message.role == "system" and i != 0:
            raise bad("a system message may only come first", f"messages[{i}].role")
    if parsed[-1].role != "user":
        raise bad("the last message must be a user message", f"messages[{len(parsed) - 1}].role")
    for key in ("tools", "functions", "tool_choice", "function_call"):
        if body.get(key) not in (None, [], "none"):
            raise bad(f"'{key}' is not supported by this server", key, "unsupported_parameter")
    if body.get("logprobs"):
        raise bad("'logprobs' is not supported by this server", "logprobs", "unsupported_parameter")
    response_format = body.get("response_format")
    if response_format not in (None, {"type": "text"}):
        raise bad("only response_format {'type': 'text'} is supported", "response_format", "unsupported_parameter")
    n = body.get("n")
    if n is not None and n != 1:
        raise bad("only n=1 is supported", "n", "unsupported_parameter")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad("'model' must be a string", "model")
    params = ChatParams(parsed, model=model)
    limit = body.get("max_completion_tokens")
    name = "max_completion_tokens"
    if limit is None:
        limit, name = body.get("max_tokens"), "max_tokens"
    if limit is not None:
        params.max_tokens = _integer(limit, name, minimum=1)
    params.temperature = _number(body.get("temperature"), "temperature", 0.0, 2.0)
    params.top_p = _number(body.get("top_p"), "top_p", 0.0, 1.0, exclusive_low=True)
    if body.get("seed") is not None:
        params.seed = _integer(body["seed"], "seed", minimum=-(2**63))
    params.stop = _stop(body.get("stop"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise bad("'stream' must be true or false", "stream")
    params.stream = bool(stream)
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad("'stream_options' must be an object", "stream_options")
        params.include_usage = bool(options.get("include_usage", False))
    return params


def _message(raw: Any, where: str, modalities: Any, media: MediaStore) -> ChatMessage:
    if not isinstance(raw, dict):
        raise bad("each message must be an object with 'role' and 'content'", where)
    role = raw.get("role")
    role = "system" if role == "developer" else role
    if role not in ROLES:
        raise bad(f"role {raw.get('role')!r} is not supported; use one of {', '.join(ROLES)}", f"{where}.role")
    content = raw.get("content")
    if isinstance(content, str):
        return ChatMessage(role, [TextPart(content)])
    if not isinstance(content, list):
        raise bad("'content' must be a string or a list of content parts", f"{where}.content")
    parts = [_part(p, f"{where}.content[{j}]", role, modalities, media) for j, p in enumerate(content)]
    return ChatMessage(role, parts)


def _part(raw: Any, where: str, role: str, modalities: Any, media: MediaStore) -> TextPart | MediaPart:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise bad("each content part must be an object with a 'type'", where)
    kind = raw["type"]
    if kind == "text":
        if not isinstance(raw.get("text"), str):
            raise bad("a text part needs 'text' (a string)", f"{where}.text")
        return TextPart(raw["text"])
    names = {f"{m.name}_url": m.name for m in modalities}
    if kind not in names and kind != "input_audio":
        valid = ", ".join(["text", "input_audio", *names])
        raise bad(f"unknown content part type '{kind}'; valid: {valid}", f"{where}.type", "invalid_content_part")
    if role != "user":
        raise bad(f"'{kind}' parts are accepted in user messages only", f"{where}.type")
    if kind == "input_audio":
        audio = raw.get("input_audio")
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise bad("an input_audio part needs input_audio.data (base64) and input_audio.format",
                      f"{where}.input_audio")
        fmt = str(audio.get("format") or "wav").lower()
        if not fmt.isalnum():
            raise bad(f"input_audio.format {fmt!r} is not a file format", f"{where}.input_audio.format")
        data = _base64(audio["data"], f"{where}.input_audio.data")
        return MediaPart("audio", media.save(data, f".{fmt}", f"{where}.input_audio.data"))
    value = raw.get(kind)
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise bad(f"a {kind} part needs {kind}.url", f"{where}.{kind}")
    return MediaPart(names[kind], _url_source(url, f"{where}.{kind}.url", media))


def _url_source(url: str, param: str, media: MediaStore) -> str:
    if url.startswith("data:"):
        header, sep, payload = url[5:].partition(",")
        if not sep:
            raise bad("a data: URL needs a comma before its data", param, "invalid_data_url")
        mime, *flags = header.split(";")
        data = _base64(payload, param) if "base64" in flags else unquote_to_bytes(payload)
        if not data:
            raise bad("the data: URL holds no data", param, "invalid_data_url")
        return media.save(data, mimetypes.guess_extension(mime.strip().lower() or "") or ".bin", param)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if not media.allow_local_files:
            raise bad("file:// URLs are disabled; send the file as a data: URL, or start the server with "
                      "serve.allow_local_files=true", param, "local_files_disabled")
        if parsed.netloc not in ("", "localhost"):
            raise bad("file:// URLs must name a local path (file:///path)", param)
        return unquote(parsed.path)
    raise bad(f"URL scheme '{parsed.scheme or url[:16]}' is not accepted: send a data: URL (base64)"
              + (" or a file:// URL" if media.allow_local_files else ""), param, "unsupported_url")


def _base64(text: str, param: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad("the data is not valid base64", param, "invalid_base64") from None


def _integer(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value >= 2**64:
        raise bad(f"'{name}' must be an integer >= {minimum}; got {value!r}", name)
    return value


def _number(value: Any, name: str, low: float, high: float, *, exclusive_low: bool = False) -> float | None:
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value <= high and \
        (value > low if exclusive_low else value >= low)
    if not ok:
        interval = f"{'(' if exclusive_low else '['}{low}, {high}]"
        raise bad(f"'{name}' must be a number in {interval}; got {value!r}", name)
    return float(value)


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise bad("'stop' must be a string or a list of up to 4 non-empty strings", "stop")
    return list(stops)


# -- response bodies ---------------------------------------------------------------------------------------
def usage(tokens: dict[str, int], completion_tokens: int) -> dict[str, Any]:
    prompt = int(tokens.get("total", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            # extension: the prompt's positions by modality (text, image, video, audio, a plugin's own)
            "prompt_tokens_by_modality": {k: int(v) for k, v in tokens.items() if k != "total"}}


def completion(id: str, model: str, text: str, finish_reason: str, usage_body: dict[str, Any],
               created: int | None = None) -> dict[str, Any]:
    return {"id": id, "object": "chat.completion", "created": created or int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage_body}


def chunk(id: str, model: str, created: int, delta: dict[str, Any] | None, finish_reason: str | None = None,
          usage_body: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]
    body = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if usage_body is not None:
        body["usage"] = usage_body
    return body
