"""The FastAPI app: OpenAI's ``/v1/chat/completions`` and ``/v1/models``, ``/health`` and ``/metrics``.

A handler checks the key and the body (size, JSON, schema), saves the media, and hands a job to the
:class:`~vita_framework.serve.scheduler.Scheduler`; it answers once the job is prepared, so an undecodable image
or a prompt too long for the context is a 400, never a broken stream. A stream is server-sent events ending with
``data: [DONE]``. A client that goes away (its connection closes, or Ray Serve cancels the call) sets its job's
cancel event: its row stops within one decode step and its batch-mates go on. Every error is OpenAI's error
object; an unexpected one is a 500 whose body holds no traceback (the log does).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .chat import ChatRequest
from .continuous import ContinuousEngine, make_engine
from .metrics import Metrics
from .options import ServeOptions
from .protocol import APIError, MediaStore, chunk, completion, parse_chat, usage
from .scheduler import Job, QueueFull

log = logging.getLogger("vita_framework.serve")


def create_app(pipeline: Any, options: ServeOptions | None = None, *, model_name: str = "vita",
               replica: str | None = None, ready_message: str | None = None) -> Any:
    """The ASGI app serving ``pipeline`` (its engine thread starts and stops with the app's lifespan)."""
    options = options or ServeOptions()
    replica = replica or f"{socket.gethostname()}:{os.getpid()}"
    pipeline.set_encoder_cache(options.encoder_cache_mb)
    pipeline.set_prefix_cache(options.prefix_cache_mb)
    metrics = Metrics()
    scheduler = make_engine(pipeline, max_batch_size=options.max_batch_size, batch_wait_ms=options.batch_wait_ms,
                            max_queue=options.max_queue, metrics=metrics)
    metrics.watch(scheduler.queue_length, lambda: pipeline.encoder_cache, lambda: pipeline.prefix_store)
    headers = {"X-Vita-Replica": replica}

    @asynccontextmanager
    async def lifespan(app: Any):
        scheduler.start()
        log.info("batching: %s", "the LLM engine's continuous batching (vLLM's async engine)"
                 if isinstance(scheduler, ContinuousEngine) else
                 f"dynamic, up to {options.max_batch_size} rows, waiting at most {options.batch_wait_ms:g} ms")
        if ready_message:
            log.info(ready_message)
        yield
        scheduler.stop()

    app = FastAPI(title="vita_framework", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pipeline, app.state.scheduler, app.state.metrics = pipeline, scheduler, metrics

    def error_response(error: APIError) -> Any:
        if error.status != 499:
            metrics.requests.labels(str(error.status)).inc()
        return JSONResponse(error.body(), status_code=error.status, headers={**headers, **error.headers})

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> Any:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> Any:
        return error_response(APIError(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Any:
        return error_response(APIError(400, "the request is not valid"))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Any:
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return error_response(APIError(500, "internal server error"))

    def check_key(request: Request) -> None:
        if options.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), str(options.api_key).encode()):
            raise APIError(401, "a valid API key is required: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    async def health() -> Any:
        if not scheduler.alive:
            return JSONResponse({"status": "engine stopped"}, status_code=503, headers=headers)
        return JSONResponse({"status": "ok", "queue": scheduler.queue_length()}, headers=headers)

    @app.get("/metrics")
    async def prometheus() -> Any:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type, headers=headers)

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        check_key(request)
        return JSONResponse({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": 0, "owned_by": "vita_framework"}]}, headers=headers)

    async def read_body(request: Request) -> bytes:
        limit = options.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"the request body has {declared} bytes; this server accepts at most {limit} "
                                "(serve.max_request_bytes)", code="request_too_large")
        body, size = [], 0
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise APIError(413, f"the request body exceeds {limit} bytes (serve.max_request_bytes)",
                               code="request_too_large")
            body.append(piece)
        return b"".join(body)

    async def watch_disconnect(request: Request, job: Job) -> None:
        while True:
            message = await request.receive()
            if message.get("type") == "http.disconnect":
                job.cancel.set()
                return

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        check_key(request)
        raw = await read_body(request)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
        media = MediaStore(options.allow_local_files)
        try:
            params = await run_in_threadpool(parse_chat, body, modalities=pipeline.modalities, media=media)
            if params.model is not None and params.model != model_name:
                raise APIError(404, f"the model '{params.model}' does not exist; this server serves "
                                    f"'{model_name}' (GET /v1/models)", param="model", code="model_not_found")
            chat = ChatRequest(params.messages, modalities=pipeline.modalities, tokenizer=pipeline.llm.tokenizer)
            job = Job(chat, params, media, asyncio.get_running_loop())
            scheduler.submit(job)
        except QueueFull as exc:
            media.cleanup()
            raise APIError(429, str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after_s)}) \
                from None
        except BaseException:
            media.cleanup()
            raise
        watcher = asyncio.create_task(watch_disconnect(request, job))
        try:
            kind, payload = await job.events.get()
            if kind == "error":
                return error_response(payload)
            if params.stream:
                watcher.cancel()
                return StreamingResponse(stream(job, payload), media_type="text/event-stream",
                                         headers={**headers, "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
            while kind not in ("done", "error"):
                kind, payload = await job.events.get()
            if kind == "error":
                return error_response(payload)
            finish(job, payload)
            return JSONResponse(completion(f"chatcmpl-{uuid.uuid4().hex}", model_name, payload.text,
                                           payload.finish_reason, usage(job.tokens, payload.completion_tokens)),
                                headers=headers)
        except asyncio.CancelledError:  # the caller went away (Ray Serve cancels the call)
            job.cancel.set()
            raise
        finally:
            watcher.cancel()

    def finish(job: Job, outcome: Any) -> None:
        metrics.requests.labels("200").inc()
        metrics.prompt_tokens.inc(job.tokens.get("total", 0))
        metrics.completion_tokens.inc(outcome.completion_tokens)
        if outcome.first_token_at is not None:
            metrics.ttft.observe(max(0.0, outcome.first_token_at - job.arrived))
        metrics.latency.observe(time.perf_counter() - job.arrived)

    async def stream(job: Job, tokens: dict[str, int]):
        id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def event(body: dict[str, Any]) -> str:
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        try:
            yield event(chunk(id, model_name, created, {"role": "assistant", "content": ""}))
            while True:
                kind, payload = await job.events.get()
                if kind == "text":
                    yield event(chunk(id, model_name, created, {"content": payload}))
                elif kind == "done":
                    finish(job, payload)
                    yield event(chunk(id, model_name, created, {}, payload.finish_reason))
                    if job.params.include_usage:
                        yield event(chunk(id, model_name, created, None,
                                          usage_body=usage(tokens, payload.completion_tokens)))
                    break
                elif kind == "error":
                    metrics.requests.labels(str(payload.status)).inc()
                    yield event(payload.body())
                    break
            yield "data: [DONE]\n\n"
        finally:  # finished, or abandoned by a client that went away: either way nothing more is generated
            job.cancel.set()

    return app
