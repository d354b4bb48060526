"""The OpenAI-compatible server under load: throughput and latency by concurrency, a long soak, and the encoder
cache on a conversation's second turn.

Run from the repository root (needs the ``serve`` extra)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve.py [--requests 64] [--concurrency 1,4,8,16]
        [--new-tokens 32] [--models default,mid-512x8] [--soak 500] [--soak-concurrency 32]

For each model (the embedded default bundle; a random mid-size LLM, 8 layers of width 512) it starts
``python -m vita_framework.serve`` in its own process (``serve.port=0``, every row generating exactly
``--new-tokens`` tokens: no eos, no stop tokens), then sends ``--requests`` streaming requests, half text and
half with a 224-px synthetic image, from ``c`` client threads for each ``c`` of ``--concurrency``, and reports
(the median of ``--repeats`` interleaved runs of each level) requests/s, generated tokens/s, p50/p99 latency and
time to first token (client side: request sent to first content event, or the end of an empty answer). Every
run's text prompts are new (numbered) and the encoder cache is off (every image is encoded), as for new users'
requests; ``mid-512x8/no-prefix`` is the mid-size model with ``serve.prefix_cache_mb=0`` (plain left-padded
prefill, no shared system-prompt states), side by side. Target: tokens/s at concurrency 8 >= 3x
concurrency 1 on the mid-size model.

Then, on the default model: ``--soak`` requests at ``--soak-concurrency``, counting lost requests (no answer or
a broken stream) and 5xx, and the server's resident memory before (after the warm-up runs) and after (target:
0 lost, 0 5xx, RSS growth < 5 %); and a two-turn conversation about a 448-px image (5 tiles), the second turn
re-sending the conversation with the image (as OpenAI clients do), with the encoder cache and without
(``serve.encoder_cache_mb=0``): median time to first token of each turn over ``--conversations`` fresh images
(target with the cache: turn 2 <= 0.5x turn 1). ``rows/batch`` is the mean batch the server formed (its metrics).

Wall times mean something only on an otherwise idle machine: with more busy processes than cores, torch's threads
wait on each other at every op (try ``--threads 1``) and clients resubmit late, so batches fragment.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
BASE = ["+vision=internvit", "+audio=none", "device=cpu", "dtype=float32"]
MODELS = {
    "default": BASE,
    # a random mid-size LLM; its random tower's tile is the 224 px of the images sent (not 448: 4x the pixels)
    "mid-512x8": [*BASE, "checkpoint=null", "vision.arch.image_size=224", "llm.arch.hidden_size=512",
                  "llm.arch.num_hidden_layers=8",
                  "llm.arch.intermediate_size=1376", "llm.arch.num_attention_heads=8",
                  "llm.arch.num_key_value_heads=4"],
}
MODELS["mid-512x8/no-prefix"] = [*MODELS["mid-512x8"], "serve.prefix_cache_mb=0"]  # plain left-padded prefill
MODELS["mid-1024x8"] = [*MODELS["mid-512x8"], "llm.arch.hidden_size=1024", "llm.arch.intermediate_size=2816",
                        "llm.arch.num_attention_heads=16", "llm.arch.num_key_value_heads=8"]  # ~4x the weights
TEXTS = ["What is the capital of France?", "Write a short poem about the sea.", "List three colours.",
         "Explain why the sky is blue.", "Count from one to ten.", "Tell me a story.", "Hi.", "Name a shape."]


class Server:
    """``python -m vita_framework.serve`` in a child process, on a free port."""

    def __init__(self, overrides: list[str], log_dir: str, threads: int = 2) -> None:
        cmd = [sys.executable, "-m", "vita_framework.serve", *overrides, "serve.port=0",
               f"hydra.run.dir={log_dir}"]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + 300
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("the server exited:\n" + "".join(lines[-20:]))
            lines.append(line)
            found = re.search(r"serving '[^']*' on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        else:
            raise RuntimeError("the server did not start")
        import threading

        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()  # drain its log

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def batches(self) -> tuple[float, float]:
        """(rows, batches) generated so far, from the server's metrics."""
        parsed = urlparse(self.url)
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        found = dict(re.findall(r"^vita_batch_size_(sum|count) (\S+)$", text, flags=re.M))
        return float(found.get("sum", 0)), float(found.get("count", 0))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def png_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def workload(n: int, tag: str = "") -> list[list[dict]]:
    """``n`` requests, half text, half an image and its question. With a ``tag``, every text request is new (it
    starts with the tag and its number): a rerun shares no more of its prompts with earlier runs than new users'
    requests would (the system prompt), so neither the prefix cache nor anything else can replay earlier work."""
    from vita_training import synthetic

    scenes = synthetic.examples("heldout", max(1, n // 2), start=1000)
    out = []
    for i in range(n):
        if i % 2:
            scene = scenes[(i // 2) % len(scenes)]
            out.append([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(
                scene.image(224))}}, {"type": "text", "text": scene.question}]}])
        else:
            text = TEXTS[(i // 2) % len(TEXTS)]
            out.append([{"role": "user", "content": f"Request {tag}{i}: {text}" if tag else text}])
    return out


def stream_request(url: str, messages: list[dict], max_tokens: int | None = None) -> dict:
    """One streaming request: status, latency, time to first token, tokens, text, and whether it completed."""
    parsed = urlparse(url)
    body = {"model": None, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    body.pop("model")
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    t0 = time.perf_counter()
    out = {"status": 0, "ttft": None, "tokens": 0, "text": "", "done": False}
    try:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        out["status"] = response.status
        if response.status == 200:
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    out["done"] = True
                    break
                event = json.loads(data)
                if "error" in event:
                    out["status"] = 500
                    break
                for choice in event.get("choices", []):  # the first token: text, or the end of an empty answer
                    if (choice["delta"].get("content") or choice.get("finish_reason")) and out["ttft"] is None:
                        out["ttft"] = time.perf_counter() - t0
                    out["text"] += choice["delta"].get("content") or ""
                if event.get("usage"):
                    out["tokens"] = event["usage"]["completion_tokens"]
        else:
            response.read()
        conn.close()
    except (OSError, http.client.HTTPException, ValueError):
        pass
    out["latency"] = time.perf_counter() - t0
    return out


def load(url: str, requests: list[list[dict]], concurrency: int) -> dict:
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda m: stream_request(url, m), requests))
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200 and r["done"]]
    latencies = sorted(r["latency"] for r in ok)
    ttfts = sorted(r["ttft"] for r in ok if r["ttft"] is not None)
    return {"n": len(results), "ok": len(ok), "lost": sum(1 for r in results if not r["done"]),
            "5xx": sum(1 for r in results if r["status"] >= 500), "wall": wall, "rps": len(ok) / wall,
            "tps": sum(r["tokens"] for r in ok) / wall, "p50": _pct(latencies, 50), "p99": _pct(latencies, 99),
            "ttft50": _pct(ttfts, 50), "ttft99": _pct(ttfts, 99)}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


def conversation_ttft(url: str, count: int) -> tuple[float, float]:
    """Median time to first token of turn 1 and turn 2 over ``count`` fresh images (turn 2 re-sends the whole
    conversation, the image included, as OpenAI clients do)."""
    from vita_training import synthetic

    first, second = [], []
    for scene in synthetic.examples("heldout", count, start=5000 + int(time.time()) % 10000):
        image = {"type": "image_url", "image_url": {"url": png_url(scene.image(448))}}
        turn = [{"role": "user", "content": [image, {"type": "text", "text": "Describe this image."}]}]
        one = stream_request(url, turn, max_tokens=4)
        turn += [{"role": "assistant", "content": one["text"]}, {"role": "user", "content": scene.question}]
        two = stream_request(url, turn, max_tokens=4)
        first.append(one["ttft"])
        second.append(two["ttft"])
    return statistics.median(first), statistics.median(second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--models", default="default,mid-512x8,mid-512x8/no-prefix")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--soak", type=int, default=500, help="0 skips the soak run")
    parser.add_argument("--soak-concurrency", type=int, default=32)
    parser.add_argument("--conversations", type=int, default=5, help="0 skips the encoder-cache run")
    parser.add_argument("--batch-wait-ms", type=float, default=10)
    parser.add_argument("--threads", type=int, default=2, help="the server's torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each concurrency level (median reported)")
    args = parser.parse_args()
    n = args.new_tokens
    fixed = [f"generation.max_new_tokens={n}", f"generation.min_new_tokens={n}", "generation.eos_token_id=[]",
             "generation.stop_tokens=[]", f"serve.max_batch_size={args.max_batch_size}", "serve.max_queue=1024",
             f"serve.batch_wait_ms={args.batch_wait_ms}", "serve.encoder_cache_mb=0"]  # every image encoded
    requests = workload(args.requests)
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"load average {os.getloadavg()[0]:.2f}; {args.requests} requests (half with an image), {n} new tokens "
          "each, streaming")
    print(f"{'model':10} {'conc':>4} {'req/s':>7} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} {'ttft50':>7} "
          f"{'ttft99':>7} {'lost':>4} {'5xx':>4} {'rows/batch':>10}")
    tmp = tempfile.mkdtemp(prefix="vita-serve-bench-")
    for name in [m for m in args.models.split(",") if m]:
        server = Server([*MODELS[name], *fixed], f"{tmp}/{name.replace('/', '-')}", args.threads)
        try:
            load(server.url, requests[:4], 4)  # warm-up
            runs: dict[int, list[dict]] = {c: [] for c in levels}
            for _ in range(args.repeats):  # the levels interleaved, so slow spells of a shared machine hit them all
                for c in levels:
                    fresh = workload(args.requests, tag=f"{name}-{c}-{len(runs[c])}-")  # new prompts each run
                    before = server.batches()
                    r = load(server.url, fresh, c)
                    after = server.batches()
                    r["per_batch"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
                    runs[c].append(r)
            rows = {}
            for c in levels:  # the run of median throughput at each level
                rows[c] = r = sorted(runs[c], key=lambda run: run["tps"])[len(runs[c]) // 2]
                print(f"{name:10} {c:>4} {r['rps']:>7.2f} {r['tps']:>8.1f} {r['p50']:>7.3f} {r['p99']:>7.3f} "
                      f"{r['ttft50']:>7.3f} {r['ttft99']:>7.3f} {r['lost']:>4} {r['5xx']:>4} {r['per_batch']:>10.1f}")
            if 1 in rows and 8 in rows:
                ratio = rows[8]["tps"] / rows[1]["tps"]
                verdict = ("PASS" if ratio >= 3 else "FAIL") if name == "mid-512x8" else ""
                print(f"{name:10} throughput concurrency 8 / 1 = {ratio:.2f} (target >= 3 on mid-512x8) {verdict}")
            if name == "default" and args.soak:
                before = server.rss_mb()
                soak = workload(args.soak, tag="soak-")
                r = load(server.url, soak, args.soak_concurrency)
                after = server.rss_mb()
                growth = (after - before) / before * 100
                verdict = "PASS" if r["lost"] == 0 and r["5xx"] == 0 and growth < 5 else "FAIL"
                print(f"soak: {args.soak} requests at concurrency {args.soak_concurrency}: {r['ok']} ok, "
                      f"{r['lost']} lost, {r['5xx']} 5xx, {r['rps']:.1f} req/s, p99 {r['p99']:.2f} s; server RSS "
                      f"{before:.0f} -> {after:.0f} MB ({growth:+.1f} %) {verdict}")
        finally:
            server.stop()
    if args.conversations:
        for label, extra in (("cache", []), ("no cache", ["serve.encoder_cache_mb=0"])):
            server = Server([*BASE, "vision.max_tiles=6", f"serve.batch_wait_ms={args.batch_wait_ms}", *extra],
                            f"{tmp}/conv-{label}", args.threads)
            try:
                conversation_ttft(server.url, 1)  # warm-up
                one, two = conversation_ttft(server.url, args.conversations)
                verdict = ("PASS" if two <= 0.5 * one else "FAIL") if label == "cache" else ""
                print(f"5-tile conversation, {label:8}: ttft turn 1 {one * 1000:.1f} ms, turn 2 {two * 1000:.1f} ms, "
                      f"ratio {two / one:.2f} (target <= 0.5 with the cache) {verdict}")
            finally:
                server.stop()


if __name__ == "__main__":
    main()
