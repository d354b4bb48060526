"""For a server on ``llm=vllm``: one request from :class:`~vita_framework.request.Request` to streamed text,
with vLLM's continuous batching doing the batching (no batcher of the framework's in between).

::

    from vita_plugins.llm.vllm.serving import astream_request

    if getattr(pipeline.llm, "continuous_batching", False):      # llm=vllm, llm.engine=async (auto in a server)
        async for update in astream_request(pipeline, request, generation={"max_new_tokens": 64}, seed=0):
            send(update.text)                                      # new text since the previous update
        # the last update has finished=True, finish_reason, and the row's ids and token counts

``python -m vita_framework.serve ... llm=vllm llm.engine=async`` needs none of this: its
:class:`~vita_framework.serve.continuous.ContinuousEngine` hands every request to ``agenerate`` itself. This
helper is for servers of your own.

Encoding (``pipeline.prepare``) runs in a worker thread so the event loop keeps serving; leaving the loop early
aborts the request in vLLM (see :meth:`VLLMBackbone.agenerate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from vita_framework.serve.continuous import fuse_request


@dataclass
class StreamUpdate:
    """New ``text`` (decoded, special tokens skipped) and ``token_ids`` since the previous update; the totals so
    far in ``generated_ids``; ``tokens_in`` by modality (from the prepared request); ``logprobs`` of the new
    steps when asked for."""

    text: str
    token_ids: list[int]
    generated_ids: list[int]
    finished: bool
    finish_reason: str | None = None
    tokens_in: dict[str, int] = field(default_factory=dict)
    logprobs: Any = None


async def astream_request(pipeline: Any, request: Any, *, generation: dict[str, Any] | None = None,
                          seed: int | None = None, output_scores: bool = False) -> AsyncIterator[StreamUpdate]:
    """Prepare, fuse and generate ``request`` (a :class:`~vita_framework.request.Request`), yielding text as it
    comes. ``generation`` overrides the pipeline's generation options for this request."""
    prepared = await asyncio.to_thread(pipeline.prepare, request)
    fused = await asyncio.to_thread(fuse_request, pipeline, prepared)
    options = {**pipeline.generation_options, **(generation or {})}
    config = pipeline.llm.generation_config(options)
    eos = set(config.eos_token_id or [])
    tokenizer = pipeline.llm.tokenizer
    ids: list[int] = []
    shown = ""
    stream = pipeline.llm.agenerate(fused, config, seed=seed, output_scores=output_scores)
    try:
        async for delta in stream:
            ids += delta.token_ids
            text = tokenizer.decode([i for i in ids if i not in eos], skip_special_tokens=True)
            # hold back an incomplete multi-byte character until the next ids complete it
            new = text[len(shown):] if not text.endswith("\ufffd") or delta.finished else ""
            shown += new
            yield StreamUpdate(new, delta.token_ids, list(ids), delta.finished, delta.finish_reason,
                               dict(prepared.tokens), delta.logprobs)
    finally:
        await stream.aclose()  # left early: the request is aborted now, not when the generator is collected
