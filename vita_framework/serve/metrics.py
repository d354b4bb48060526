"""Prometheus metrics of one server (``GET /metrics``), in a registry of its own (several apps in one process,
as tests make, never collide). Labels are bounded: a request's status code, nothing per request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("vita_requests", "Chat completion requests by HTTP status", ["status"],
                                registry=registry)
        self.prompt_tokens = Counter("vita_prompt_tokens", "Prompt positions of answered requests",
                                     registry=registry)
        self.completion_tokens = Counter("vita_completion_tokens", "Tokens generated", registry=registry)
        self.queue_length = Gauge("vita_queue_length", "Requests waiting for a batch", registry=registry)
        self.running = Gauge("vita_running_requests", "Requests being prepared or generated", registry=registry)
        self.batch_size = Histogram("vita_batch_size", "Rows per generated batch", buckets=_BATCH_BUCKETS,
                                    registry=registry)
        self.ttft = Histogram("vita_time_to_first_token_seconds", "Arrival to first generated token",
                              buckets=_LATENCY_BUCKETS, registry=registry)
        self.latency = Histogram("vita_request_latency_seconds", "Arrival to the last byte of the answer",
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.cache_queries = Gauge("vita_encoder_cache_queries", "Items looked up in the encoder cache",
                                   registry=registry)
        self.cache_hits = Gauge("vita_encoder_cache_hits", "Items found in the encoder cache", registry=registry)
        self.cache_bytes = Gauge("vita_encoder_cache_bytes", "Bytes of features in the encoder cache",
                                 registry=registry)
        self.prefix = {name: Gauge(f"vita_prefix_cache_{name}", f"Prefix cache: {name}", registry=registry)
                       for name in ("queries", "hits", "entries", "bytes")}

    def watch(self, queue_length: Callable[[], int], cache: Callable[[], Any],
              prefix: Callable[[], Any] = lambda: None) -> None:
        """Gauges read when scraped: the queue's length, the encoder and prefix caches' statistics."""
        self.queue_length.set_function(queue_length)

        def stat(name: str, cache: Callable[[], Any] = cache) -> Callable[[], float]:
            return lambda: float((cache().stats() if cache() is not None else {}).get(name, 0))

        self.cache_queries.set_function(stat("queries"))
        self.cache_hits.set_function(stat("hits"))
        self.cache_bytes.set_function(stat("bytes"))
        for name, gauge in self.prefix.items():
            gauge.set_function(stat(name, prefix))

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
