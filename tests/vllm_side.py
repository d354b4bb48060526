"""The llm=vllm parity cases, run in whichever venv starts this script (tests/test_vllm.py drives it).

    python tests/vllm_side.py bundle OUT_DIR                       # main venv: the test checkpoint
    python tests/vllm_side.py run BUNDLE OUT_DIR --backends qwen2 vllm [--async]

``bundle`` writes a tiny omni-modal bundle vLLM's CPU attention can run (head_dim 32): the golden checkpoint's
InternViT, whale audio encoder and projector, with a random Qwen2 LLM (hidden 64, 2 heads, 1 KV head; its head
scaled up so greedy choices are far from ties), saved with ``vita_framework.saving.save_bundle``.

``run`` answers the same requests (text, image, audio, video, and all of them in one batch) with each backend,
greedy (penalty 1.0) and in VITA's demo mode (the checkpoint's penalty 1.05, stop at <|im_start|>), and writes
``results.json`` (ids and texts per backend, mode and case, timings) and ``scores.safetensors``
(``{backend}/{mode}/{case}``: the per-step scores as the backend returns them). ``--async`` also answers the
cases through ``llm.engine=async``: ``agenerate`` from four concurrent tasks on this script's event loop, one
of them abandoned after two updates (its request must be aborted, the others unaffected).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "golden"
GOLDEN_CKPT = GOLDEN / "ckpt"
IMAGE = GOLDEN / "case2_image5" / "source.png"
IMAGE2 = GOLDEN / "case3_image_audio" / "source.png"
AUDIO = GOLDEN / "case3_image_audio" / "audio.wav"
MAX_NEW = 24

#: the run's components: VITA-1.5's composition on the test bundle, small inputs
BASE = ("+experiment=vita15", "audio=whale", "lazy=[]", "dtype=float32", "device=cpu", "vision.max_tiles=2",
        "video.max_frames=4", f"generation.max_new_tokens={MAX_NEW}")
VLLM = ("llm=vllm", "llm.engine_process=false", "llm.cpu_kvcache_space_gib=1", "llm.max_model_len=4096")
MODES = {"greedy": ["generation.repetition_penalty=1.0"], "demo": []}  # demo: the checkpoint's 1.05


def frames_dir(out: Path) -> Path:
    """Golden case 4's frames as a frame directory (10 fps)."""
    import numpy as np
    from PIL import Image

    target = out / "frames"
    if not target.is_dir():
        target.mkdir(parents=True)
        for i, frame in enumerate(np.load(GOLDEN / "case4_video_sf" / "video_frames_u8.npz")["frames"]):
            Image.fromarray(frame).save(target / f"{i:03d}.png")
    return target


def cases(out: Path) -> dict[str, list[dict]]:
    video = {"prompt": "What is happening in this video?", "videos": [str(frames_dir(out))], "video_fps": 10}
    text = {"prompt": "Tell me a story about a cat."}
    image = {"prompt": "What is in the picture?", "images": [str(IMAGE)]}
    audio = {"prompt": "", "audios": [str(AUDIO)]}
    image_audio = {"prompt": "", "images": [str(IMAGE2)], "audios": [str(AUDIO)]}
    return {"text": [text], "image": [image], "audio": [audio], "video": [video],
            "mixed": [text, image, audio, video, image_audio]}


def make_bundle(out: Path) -> None:
    import torch

    import vita_framework
    from vita_framework.saving import save_bundle

    torch.manual_seed(0)
    base = vita_framework.build(["+experiment=vita15", f"checkpoint={GOLDEN_CKPT}", "audio=whale", "lazy=[]",
                                 "device=cpu", "dtype=float32"])
    llm = vita_framework.build(["checkpoint=null", "device=cpu", f"+llm.tokenizer={GOLDEN_CKPT}",
                                "llm.arch.hidden_size=64", "llm.arch.num_attention_heads=2",
                                "llm.arch.num_key_value_heads=1", "llm.arch.intermediate_size=128"]).llm
    with torch.no_grad():
        llm.model.lm_head.weight.mul_(40.0)  # logits std ~6: greedy picks are far from float32 ties
    llm.generation_defaults = dict(base.llm.generation_defaults)  # VITA's: penalty 1.05, eos 402 and 400
    base.llm = llm
    save_bundle(base, out, source=GOLDEN_CKPT, claims=base.claims)


def run(bundle: Path, out: Path, backends: list[str], use_async: bool) -> None:
    import torch
    from safetensors.torch import save_file

    import vita_framework

    torch.set_num_threads(2)
    requests = cases(out)
    results: dict = {"backends": {}, "timings": {}}
    scores: dict[str, torch.Tensor] = {}
    for backend in backends:
        t0 = time.perf_counter()
        extra = VLLM if backend == "vllm" else ()
        pipes = {mode: vita_framework.build([*BASE, f"checkpoint={bundle}", *extra, *over])
                 for mode, over in MODES.items()} if backend != "vllm" else None
        if backend == "vllm":  # one engine for both modes: the mode is a per-request option
            pipe = vita_framework.build([*BASE, f"checkpoint={bundle}", *extra])
            pipes = {mode: pipe for mode in MODES}
        results["timings"][f"{backend}_build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        got: dict = {}
        for mode, pipe in pipes.items():
            generation = {"repetition_penalty": 1.0} if mode == "greedy" else {}
            for case, reqs in requests.items():
                result = pipe.generate_batch(reqs, batch_size=len(reqs), output_scores=True, seed=0, **generation)
                errors = [row.error for row in result.rows if row.error]
                if errors:
                    raise SystemExit(f"{backend} {mode} {case}: {errors}")
                got.setdefault(mode, {})[case] = {"ids": [row.generated_ids for row in result.rows],
                                                  "texts": [row.text for row in result.rows],
                                                  "tokens": [row.tokens_in for row in result.rows]}
                scores[f"{backend}/{mode}/{case}"] = result.scores[0].contiguous()
        results["timings"][f"{backend}_generate_s"] = time.perf_counter() - t0
        results["backends"][backend] = got
        if backend == "vllm":
            pipe.llm.close()
    if use_async:
        results["async"] = run_async(bundle, requests)
    save_file(scores, str(out / "scores.safetensors"))
    (out / "results.json").write_text(json.dumps(results, indent=1))


def run_async(bundle: Path, requests: dict[str, list[dict]]) -> dict:
    """The four single-modality cases as concurrent agenerate calls on llm.engine=async, plus one abandoned."""
    import asyncio

    import torch

    import vita_framework
    from vita_framework.request import Request

    t0 = time.perf_counter()
    pipe = vita_framework.build([*BASE, f"checkpoint={bundle}", *VLLM, "llm.engine=async",
                                 "generation.repetition_penalty=1.0"])
    build_s = time.perf_counter() - t0
    assert pipe.llm.continuous_batching
    config = pipe.llm.generation_config(dict(pipe.generation_options))

    def fused_row(item: dict):
        prepared = pipe.prepare(Request(**item))
        ids = torch.tensor([prepared.input_ids])
        features = {s: prepared.features.get(s, []) for s in pipe.placeholder_ids}
        with torch.inference_mode():
            return pipe.fusion.fuse(ids, torch.ones_like(ids), pipe.llm.embed, features, pipe.placeholder_ids)

    async def answer(item: dict) -> dict:
        ids, steps, reason = [], 0, None
        async for delta in pipe.llm.agenerate(fused_row(item), config, seed=0):
            ids += delta.token_ids
            steps += 1
            reason = delta.finish_reason
        return {"ids": ids, "updates": steps, "finish_reason": reason}

    async def abandoned(item: dict) -> int:
        seen = 0
        stream = pipe.llm.agenerate(fused_row(item), config, seed=0)
        async for delta in stream:
            seen += len(delta.token_ids)
            if seen >= 2:
                break
        await stream.aclose()
        return seen

    async def main() -> dict:
        names = ["text", "image", "audio", "video"]
        t1 = time.perf_counter()
        answers = await asyncio.gather(*(answer(requests[n][0]) for n in names),
                                       abandoned(requests["text"][0]))
        return {"answers": dict(zip(names, answers[:4])), "abandoned_tokens": answers[4],
                "concurrent_s": time.perf_counter() - t1, "build_s": build_s}

    result = asyncio.run(main())
    # the synchronous API on the async engine too
    result["sync_text_ids"] = pipe.generate(**requests["text"][0], seed=0).rows[0].generated_ids
    pipe.llm.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("bundle")
    make.add_argument("out", type=Path)
    go = sub.add_parser("run")
    go.add_argument("bundle", type=Path)
    go.add_argument("out", type=Path)
    go.add_argument("--backends", nargs="+", default=["vllm", "qwen2"])
    go.add_argument("--async", dest="use_async", action="store_true")
    args = parser.parse_args()
    if args.command == "bundle":
        make_bundle(args.out)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        run(args.bundle, args.out, args.backends, args.use_async)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
