"""Full-size VITA-1.5 on one GPU (random weights, bfloat16): time to first token, decode ms/token, HBM bound.

Run from the repository root, on a machine with a CUDA device::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu.py [--new-tokens 64] [--trials 3] [--warmup 1]
        [--hbm-gbps 4800] [--vocab 151665]

and, to exercise the same code on a CPU with tiny dimensions (perf_counter instead of CUDA events)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu.py --device cpu --tiny --new-tokens 4

Without CUDA (and without ``--device cpu``) it prints ``no CUDA device: nothing measured`` and exits with status 0.

The pipeline is built through the framework (``vita_framework.build``) with ``+experiment=vita15 checkpoint=null``
and the full-size architecture of vita-1.5-spec.md as ``vision.arch.*`` / ``llm.arch.*`` overrides: InternViT-300M
(hidden 1024, 24 layers, 16 heads, MLP 4096, 448 px tiles, patch 14, sdpa attention), the mlp2x_gelu projector
(4096 -> 3584 -> 3584) and Qwen2.5-7B (hidden 3584, 28 layers, 28 heads, 4 KV heads, MLP 18944, rope_theta 1e6).
Building happens under ``torch.device(<device>)`` with bfloat16 as the default dtype, so the ~8B random parameters
are created and initialised on the GPU, in bfloat16 (seconds, not minutes). The tokenizer is the golden tiny
checkpoint's (the one ``tests/data/golden`` was made with), so the request has case 2's exact shape; the LLM's
vocabulary is then resized to ``--vocab`` (151665, the real ``len(tokenizer)``) so the embedding and the lm_head
have their real size (1.09 GB of bfloat16 read per token for the lm_head alone).

The request is golden case 2: ``tests/data/golden/case2_image5/source.png`` (760x700 -> 5 tiles of 448 px, 1280
image positions) with its question, 1538 positions in all with this tokenizer (the real Qwen2.5 tokenizer writes
the same prompt in fewer text tokens, ~1435 positions). Each trial runs, on the GPU timeline (CUDA events):

* ``prepare``: ``pipeline.prepare`` -- image load, tiling (on the CPU), InternViT, projector, prompt and tokenise;
* ``fuse``: ``fusion.fuse`` -- text embedding and the splice of the 1280 image rows;
* then generation of exactly ``--new-tokens`` greedy tokens, two ways, alternating from trial to trial:
  ``framework``: the LLM backbone's ``generate`` (transformers ``GenerationMixin.generate`` with our logits
  processors), an event recorded as each token reaches the streamer; ``bare``: a plain loop of model forwards
  over a DynamicCache with argmax, an event after each token -- the floor of eager PyTorch without
  ``generate``'s per-step machinery.

Time to first token = start of ``prepare`` to the first new token (prefill included); decode ms/token = (last
token - first token) / (new tokens - 1). The bound is the bytes of LLM weights one decode step must read (every
LLM parameter except the input embedding table, of which one row is read) divided by the peak HBM bandwidth
(``--hbm-gbps``; by default from the device name: H200 4800, H100 SXM 3350, H100 NVL 3900, H100 PCIe 2000,
A100 80GB 2039, A100 40GB 1555 GB/s). ratio = measured decode ms/token / bound (1.0 = bandwidth-bound; eager
batch-1 decoding is usually launch-bound well above it). The KV cache read per step is printed beside it.
Medians over ``--trials`` after ``--warmup``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden"
CASE = GOLDEN / "case2_image5"

# vita-1.5-spec.md: InternViT-300M-448px, mlp2x_gelu 4096 -> 3584, Qwen2.5-7B
FULL = ["vision.arch.hidden_size=1024", "vision.arch.num_hidden_layers=24", "vision.arch.num_attention_heads=16",
        "vision.arch.intermediate_size=4096", "vision.arch.image_size=448", "vision.arch.patch_size=14",
        "vision.attn_implementation=sdpa",
        "llm.arch.hidden_size=3584", "llm.arch.num_hidden_layers=28", "llm.arch.num_attention_heads=28",
        "llm.arch.num_key_value_heads=4", "llm.arch.intermediate_size=18944", "llm.arch.rope_theta=1000000.0",
        "llm.arch.rms_norm_eps=1e-06", "llm.arch.max_position_embeddings=32768"]
# the shipped tiny defaults of conf/vision/internvit.yaml and conf/llm/qwen2.yaml (448 px tiles, 256 tokens each)
TINY: list[str] = []
VOCAB = 151665  # len(tokenizer) of VITA-1.5 (the checkpoint's 152064 rows are resized to it)

# peak HBM bandwidth, GB/s, by a substring of torch.cuda.get_device_name (first match wins)
HBM_GBPS = (("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0),
            ("A100-SXM4-40GB", 1555.0), ("A100-PCIE-40GB", 1555.0), ("A100", 2039.0))
CPU_GBPS = 20.0  # nominal, for the --device cpu code path only


class Clock:
    """Timestamps on the device's timeline: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def ms(self, a, b) -> float:
        """Milliseconds from mark ``a`` to mark ``b`` (after ``sync``)."""
        return a.elapsed_time(b) if self.cuda else (b - a) * 1e3


class TokenClock:
    """A transformers streamer that marks the time of every new token (the first ``put`` is the prompt)."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.marks, self._prompt_seen = clock, [], False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
        else:
            self.marks.append(self.clock.mark())

    def end(self) -> None:
        pass


@contextlib.contextmanager
def created_on(device: torch.device, dtype: torch.dtype):
    """New tensors on ``device`` in ``dtype`` (random init where the weights will live, no fp32 CPU copy)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build(args, device: torch.device, dtype_name: str):
    import vita_framework

    overrides = ["+experiment=vita15", "checkpoint=null", f"+llm.tokenizer={GOLDEN / 'ckpt'}",
                 f"dtype={dtype_name}", f"device={device}", *(TINY if args.tiny else FULL)]
    torch.manual_seed(0)
    with warnings.catch_warnings(), created_on(device, getattr(torch, dtype_name)):
        warnings.simplefilter("ignore")  # checkpoint=null warns loudly about random weights
        pipe = vita_framework.build(overrides)
        model = pipe.llm.model
        if args.vocab and args.vocab != model.get_input_embeddings().weight.shape[0]:
            # the tokenizer's ids stay valid (rows are kept); the tables get the real model's size
            model.resize_token_embeddings(args.vocab, mean_resizing=False)
    return pipe


def decode_bytes(model) -> tuple[int, int]:
    """(bytes of LLM weights read per decode step, bytes of KV cache per position)."""
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is embed
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if p is not embed)
    weights += (embed.numel() if tied else embed.shape[1]) * embed.element_size()  # one row, or all as lm_head
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim * embed.element_size()
    return weights, kv


def bare_decode(model, embeds, new_tokens: int, clock: Clock) -> list:
    """Prefill, then a plain greedy loop of forwards over a DynamicCache; a mark after each new token."""
    from transformers import DynamicCache

    marks = []
    cache = DynamicCache(config=model.config)
    # transformers 5.x renamed past_key_values to cache (the old name warns)
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1, **{key: cache})
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    marks.append(clock.mark())
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, use_cache=True, **{key: cache})
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        marks.append(clock.mark())
    return marks


def trial(pipe, question: str, source: Path, mode: str, new_tokens: int, clock: Clock, gen_config) -> dict:
    from vita_framework.request import Request

    clock.sync()
    t0 = clock.mark()
    prepared = pipe.prepare(Request(question, images=[source]))
    t1 = clock.mark()
    with torch.inference_mode():
        ids = torch.tensor([prepared.input_ids], device=pipe.llm.device)
        fused = pipe.fusion.fuse(ids, torch.ones_like(ids), pipe.llm.embed, prepared.features, pipe.placeholder_ids)
        t2 = clock.mark()
        if mode == "framework":
            streamer = TokenClock(clock)
            out = pipe.llm.generate(fused, gen_config, streamer=streamer)
            marks = streamer.marks
            assert out.sequences.shape[1] == new_tokens, f"generated {out.sequences.shape[1]} != {new_tokens}"
        else:
            marks = bare_decode(pipe.llm.model, fused.inputs_embeds, new_tokens, clock)
    clock.sync()
    assert len(marks) == new_tokens, f"{len(marks)} token marks for {new_tokens} new tokens"
    return {"prepare ms": clock.ms(t0, t1), "fuse ms": clock.ms(t1, t2), "prefill ms": clock.ms(t2, marks[0]),
            "TTFT ms": clock.ms(t0, marks[0]),
            "decode ms/tok": clock.ms(marks[0], marks[-1]) / (new_tokens - 1),
            "positions": int(fused.inputs_embeds.shape[1])}


def bandwidth(args, device: torch.device) -> tuple[float, str]:
    if args.hbm_gbps:
        return args.hbm_gbps, "from --hbm-gbps"
    if device.type != "cuda":
        return CPU_GBPS, "nominal CPU figure, not a measurement (pass --hbm-gbps)"
    name = torch.cuda.get_device_name(device)
    for key, gbps in HBM_GBPS:
        if key in name:
            return gbps, f"peak HBM of {key} (by device name; --hbm-gbps to change)"
    return 0.0, f"unknown device '{name}': pass --hbm-gbps"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="the shipped tiny dimensions (exercise the code path)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3, help="per generation mode, after the warm-up")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--hbm-gbps", type=float, default=None, help="peak memory bandwidth, GB/s")
    parser.add_argument("--vocab", type=int, default=VOCAB, help="LLM vocabulary rows (0: the tokenizer's)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    if args.new_tokens < 2 or args.trials < 1 or args.warmup < 0:
        parser.error("--new-tokens must be >= 2, --trials >= 1, --warmup >= 0")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing measured (run on a GPU machine, or --device cpu --tiny to exercise the code)")
        return 0
    if device.type == "cpu" and not args.tiny:
        parser.error("--device cpu needs --tiny (full size on a CPU would take minutes per token)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(args.threads)
    dtype_name = "bfloat16" if device.type == "cuda" else "float32"
    clock = Clock(device)

    t_build = time.perf_counter()
    pipe = build(args, device, dtype_name)
    clock.sync()
    build_s = time.perf_counter() - t_build
    model = pipe.llm.model
    n_llm = sum(p.numel() for p in model.parameters())
    n_vision = sum(p.numel() for p in pipe.vision.parameters())
    n_proj = sum(p.numel() for p in pipe.projector.parameters())
    weight_bytes, kv_per_pos = decode_bytes(model)
    gbps, source_of_gbps = bandwidth(args, device)
    bound_ms = weight_bytes / (gbps * 1e9) * 1e3 if gbps else float("nan")

    question = json.loads((CASE / "meta.json").read_text())["question"]
    source = CASE / "source.png"
    n = args.new_tokens
    gen_config = pipe.llm.generation_config({**pipe.generation_options, "max_new_tokens": n, "min_new_tokens": None,
                                             "eos_token_id": [], "stop_tokens": [], "do_sample": False})
    modes = ("framework", "bare")
    samples: dict[str, list[dict]] = {m: [] for m in modes}
    for rep in range(args.warmup + args.trials):  # alternate, reversing the order every other trial
        for mode in modes if rep % 2 == 0 else modes[::-1]:
            result = trial(pipe, question, source, mode, n, clock, gen_config)
            if rep >= args.warmup:
                samples[mode].append(result)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    timer = "CUDA events" if clock.cuda else "perf_counter"
    cfg = model.config
    positions = samples["framework"][0]["positions"]
    print(f"device {name} ({device}), {dtype_name}, {'TINY dims' if args.tiny else 'full-size VITA-1.5 dims'}, "
          f"random weights; timer {timer}; torch threads={torch.get_num_threads()} trials={args.trials} "
          f"warmup={args.warmup} new_tokens={n}")
    print(f"params: vision {n_vision / 1e6:.1f}M, projector {n_proj / 1e6:.1f}M, LLM {n_llm / 1e9:.3f}B "
          f"(hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, vocab {cfg.vocab_size}); build {build_s:.1f} s")
    print(f"request: golden case 2, {positions} positions (5 tiles x {pipe.vision.tokens_per_tile} image + text)")
    print(f"bandwidth {gbps:.0f} GB/s ({source_of_gbps}); LLM weights read per decode token "
          f"{weight_bytes / 1e9:.3f} GB -> bound {bound_ms:.3f} ms/token; KV cache read per token "
          f"{kv_per_pos * (positions + n / 2) / 1e6:.1f} MB (not in the bound)")
    if device.type == "cuda":
        print(f"peak GPU memory allocated {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    columns = ["prepare ms", "fuse ms", "prefill ms", "TTFT ms", "decode ms/tok"]
    print(f"{'generation':<11}" + "".join(f"{c:>15}" for c in columns) + f"{'ratio to bound':>16}")
    for mode in modes:
        med = {c: statistics.median(s[c] for s in samples[mode]) for c in columns}
        ratio = med["decode ms/tok"] / bound_ms if gbps else float("nan")
        print(f"{mode:<11}" + "".join(f"{med[c]:>15.3f}" for c in columns) + f"{ratio:>16.2f}")
    for mode in modes:
        med = statistics.median(s["decode ms/tok"] for s in samples[mode])
        ratio = med / bound_ms if gbps else float("nan")
        print(f"ratio {mode} decode / HBM bound = {ratio:.2f} ({med:.3f} ms/token vs {bound_ms:.3f} ms/token)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
