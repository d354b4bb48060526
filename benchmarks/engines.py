"""LLM engines side by side: the same 32 mixed requests through ``llm=qwen2`` (transformers) and ``llm=vllm``,
one by one and batched, new tokens per second.

Run from the repository root with the vLLM venv (it has both backends; ``scripts/make-vllm-venv .venv-vllm``)::

    HF_HUB_OFFLINE=1 .venv-vllm/bin/python benchmarks/engines.py [--new-tokens 64] [--batch-sizes 32 8] [--threads 2]

The model is a mid-size random LLM (Qwen2, hidden 512, 8 layers, 8 heads of 64, 4 KV heads; head_dim 64 as
vLLM's CPU attention needs >= 32) behind random VITA-1.5 encoders (InternViT-tiny at 448 px, one tile per
image; whale; mlp2x_gelu), saved once as a bundle (``--bundle-dir``) that both backends load. The 32 requests:
14 text questions of different lengths, 10 with an image, 5 spoken questions (audio) and 3 videos (4 frames).
Every row generates exactly ``--new-tokens`` tokens (no eos, no stop tokens), so every run does the same work.

For each backend: a warm-up (2 requests), then ``pipeline.generate`` for each request in turn (sequential) and
``pipeline.generate_batch(requests, batch_size=...)`` for each ``--batch-sizes`` (batched: transformers pads
each batch's rows to its longest, vLLM schedules them with continuous batching and paged attention). Each
figure is new tokens / wall time and includes the encoders (the same front half for both). Transformers runs
first, then vLLM (engine core in its own process unless ``--in-process``), so neither competes with the other
for the cores. Target: vLLM batched >= 2x transformers batched, each at its best batch size. The table also
gives how many batched rows have the same greedy ids in both (the head is scaled up so random logits are not
near ties; float differences may still flip a few).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"
GOLDEN_CKPT = GOLDEN / "ckpt"
sys.path.insert(0, str(ROOT / "tests"))
from vllm_side import frames_dir  # noqa: E402  the parity script's golden frame directory

MID = ["llm.arch.hidden_size=512", "llm.arch.num_hidden_layers=8", "llm.arch.intermediate_size=1376",
       "llm.arch.num_attention_heads=8", "llm.arch.num_key_value_heads=4"]
BASE = ["+experiment=vita15", "audio=whale", "lazy=[]", "device=cpu", "dtype=float32", "vision.max_tiles=1",
        "video.max_frames=4"]


def make_bundle(out: Path) -> Path:
    """Random VITA-1.5 composition with the mid-size LLM, saved as a bundle (once)."""
    import torch

    import vita_framework
    from vita_framework.saving import save_bundle

    if (out / "model.safetensors").is_file():
        return out
    torch.manual_seed(0)
    pipe = vita_framework.build([*BASE, "checkpoint=null", f"+llm.tokenizer={GOLDEN_CKPT}", *MID])
    with torch.no_grad():
        pipe.llm.model.lm_head.weight.mul_(40.0)
    pipe.llm.generation_defaults = {"bos_token_id": 400, "eos_token_id": [402, 400], "pad_token_id": 400}
    save_bundle(pipe, out, source=GOLDEN_CKPT, claims=pipe.claims)
    train = out / "audio-encoder-tiny" / "train.yaml"  # the golden whale adapts to width 64; ours to 512
    train.write_text(train.read_text().replace("llm_embed_dim: 64", "llm_embed_dim: 512"))
    return out


def make_requests(work: Path) -> list:
    from vita_framework.request import Request

    images = [GOLDEN / "case2_image5" / "source.png", GOLDEN / "case3_image_audio" / "source.png",
              ROOT / "vita_framework" / "assets" / "sample.png"]
    audio = GOLDEN / "case3_image_audio" / "audio.wav"
    video = frames_dir(work)
    texts = ["What is the capital of France?", "List three colours.", "Count from one to ten.",
             "Write a short poem about the sea, the wind and the light on the water at dusk.",
             "Explain in simple words why the sky is blue during the day and red at sunset.",
             "Tell me a story about a cat who wanted to fly.", "Translate 'good morning' into French and German.",
             "What is two plus two?", "Name a fruit that is yellow.",
             "Describe the water cycle in a few sentences, from evaporation to rain and rivers.",
             "Give me a recipe for pancakes.", "Why do cats purr?", "What day comes after Monday?",
             "Summarise the plot of a detective story in which the butler did not do it, in detail."]
    questions = ["What is in the picture?", "Describe this image.", "What shapes do you see?",
                 "Is there a person in this picture?", "What colour is the largest shape?"]
    requests = [Request(t) for t in texts]
    requests += [Request(questions[i % 5], images=[images[i % 3]]) for i in range(10)]
    requests += [Request("", audios=[audio]) for _ in range(5)]
    requests += [Request("What is happening in this video?", videos=[video], video_fps=10) for _ in range(3)]
    order = [i for pair in zip(range(0, 14), range(14, 28)) for i in pair] + list(range(28, 32))
    return [requests[i] for i in order]  # interleaved, so every batch mixes modalities


def measure(name: str, pipe, requests: list, gen: dict, batch_sizes: list[int]) -> dict:
    pipe.generate_batch(requests[:2], batch_size=2, **gen)  # warm-up
    t0 = time.perf_counter()
    sequential = [pipe.generate(r, **gen).rows[0] for r in requests]
    seq_s = time.perf_counter() - t0
    print(f"{name}: sequential {seq_s:.1f} s", file=sys.stderr, flush=True)
    out = {"sequential": sum(r.tokens_out for r in sequential) / seq_s, "seq_s": seq_s,
           "seq_ids": [r.generated_ids for r in sequential], "batched": {}}
    for size in batch_sizes:
        t0 = time.perf_counter()
        batched = pipe.generate_batch(requests, batch_size=size, **gen).rows
        batch_s = time.perf_counter() - t0
        print(f"{name}: batched ({size}) {batch_s:.1f} s", file=sys.stderr, flush=True)
        assert all(not r.error for r in batched), [r.error for r in batched if r.error]
        out["batched"][size] = (sum(r.tokens_out for r in batched) / batch_s, batch_s)
        out.setdefault("ids", [r.generated_ids for r in batched])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 8],
                        help="batched runs: generate_batch(requests, batch_size=...) for each")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of each engine (torch threads; vLLM's VLLM_CPU_OMP_THREADS_BIND 0..N-1). "
                             "On a shared machine use 1: two threads waiting on a busy core run ~10x slower")
    parser.add_argument("--in-process", action="store_true", help="vLLM's engine core in this process")
    parser.add_argument("--bundle-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                        / "vita_framework" / "bench-engines-mid")
    args = parser.parse_args()
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        sys.exit("vLLM is not installed here: run with the vLLM venv (scripts/make-vllm-venv .venv-vllm; "
                 ".venv-vllm/bin/python benchmarks/engines.py)")
    import torch

    import vita_framework

    torch.set_num_threads(args.threads)  # transformers and the encoders
    cores = "0" if args.threads == 1 else f"0-{args.threads - 1}"
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cores)  # vLLM's CPU worker: as many threads, pinned
    bundle = make_bundle(args.bundle_dir)
    requests = make_requests(args.bundle_dir)
    n = args.new_tokens
    gen = {"max_new_tokens": n, "min_new_tokens": n, "eos_token_id": [], "stop_tokens": []}
    overrides = [*BASE, f"checkpoint={bundle}"]
    results = {}
    pipe = vita_framework.build([*overrides, "llm=qwen2"])
    results["qwen2 (transformers)"] = measure("qwen2", pipe, requests, gen, args.batch_sizes)
    del pipe
    pipe = vita_framework.build([*overrides, "llm=vllm", f"llm.engine_process={str(not args.in_process).lower()}",
                                 "llm.cpu_kvcache_space_gib=2", "llm.max_model_len=4096"])
    results["vllm"] = measure("vllm", pipe, requests, gen, args.batch_sizes)
    pipe.llm.close()

    kinds = {"text": 14, "image": 10, "audio": 5, "video": 3}
    print(f"\n32 requests ({', '.join(f'{v} {k}' for k, v in kinds.items())}), {n} new tokens each, "
          f"mid-size random Qwen2 512x8 (head_dim 64), threads {args.threads} per engine, "
          f"load average {os.getloadavg()[0]:.2f}")
    sizes = args.batch_sizes
    head = "".join(f"{f'batched {b} tok/s':>17}" for b in sizes)
    print(f"{'engine':22} {'sequential tok/s':>17}{head}")
    for name, r in results.items():
        cells = "".join(f"{r['batched'][b][0]:17.1f}" for b in sizes)
        print(f"{name:22} {r['sequential']:17.1f}{cells}")
    print(f"{'(wall s)':22} " + "  ".join(f"{name}: seq {r['seq_s']:.1f}, " + ", ".join(
        f"b{b} {r['batched'][b][1]:.1f}" for b in sizes) for name, r in results.items()))
    hf, vl = results["qwen2 (transformers)"], results["vllm"]
    best_hf = max(hf["batched"][b][0] for b in sizes)
    best_vl = max(vl["batched"][b][0] for b in sizes)
    ratio = best_vl / best_hf
    print(f"vllm batched / transformers batched (best batch size of each) = {ratio:.2f} (target >= 2) "
          f"{'PASS' if ratio >= 2 else 'FAIL'}")
    print(f"vllm sequential / transformers sequential = {vl['sequential'] / hf['sequential']:.2f}")
    same = sum(a == b for a, b in zip(hf["ids"], vl["ids"]))
    print(f"batched rows with the same greedy ids in both engines: {same}/{len(hf['ids'])}; "
          f"vllm batched = vllm sequential on {sum(a == b for a, b in zip(vl['ids'], vl['seq_ids']))}/32")


if __name__ == "__main__":  # vLLM's engine core process is started with spawn: this guard is required
    main()
