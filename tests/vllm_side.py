"""The llm=vllm parity cases, run in whichever venv starts this script (tests/test_vllm.py drives it).

    python tests/vllm_side.py bundle OUT_DIR                       # main venv: the test checkpoint
    python tests/vllm_side.py run BUNDLE OUT_DIR --backends qwen2 vllm [--async]

``bundle`` writes a tiny omni-modal bundle vLLM's CPU attention can run (head_dim 32): the golden checkpoint's
InternViT, whale audio encoder and projector, with a random Qwen2 LLM (hidden 64, 2 heads, 1 KV head; its head
scaled up so greedy choices are far from ties), saved with ``vita_framework.saving.save_bundle``.

``run`` answers the same requests (text, image, audio, video, and all of them in one batch) with each backend,
greedy (penalty 1.0), in VITA's demo mode (the checkpoint's penalty 1.05, stop at <|im_start|>) and with stop ids
that end rows early, and writes
``results.json`` (ids and texts per backend, mode and case, timings; with ``--checks`` the bad-input messages and
the prepared model directory) and ``scores.safetensors``
(``{backend}/{mode}/{case}``: the per-step scores as the backend returns them). ``--async`` also answers the
cases through ``llm.engine=async``: ``agenerate`` from four concurrent tasks on this script's event loop, one
of them abandoned after two updates (its request must be aborted, the others unaffected), and one request
through ``vita_plugins.llm.vllm.serving.astream_request`` (what a server calls).
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
#: per-call generation options of each mode (demo: the checkpoint's penalty 1.05; stop: rows end at other ids)
MODES = {"greedy": {"repetition_penalty": 1.0}, "demo": {},
         "stop": {"repetition_penalty": 1.0, "eos_token_id": [285, 0]}}


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


def run(bundle: Path, out: Path, backends: list[str], use_async: bool, checks: bool = False) -> None:
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
        pipe = vita_framework.build([*BASE, f"checkpoint={bundle}", *extra])
        results["timings"][f"{backend}_build_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        got: dict = {}
        for mode, generation in MODES.items():
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
    if checks:
        results["checks"] = run_checks(bundle)
    save_file(scores, str(out / "scores.safetensors"))
    (out / "results.json").write_text(json.dumps(results, indent=1))


def run_async(bundle: Path, requests: dict[str, list[dict]]) -> dict:
    """The four single-modality cases as concurrent agenerate calls on llm.engine=async, plus one abandoned."""
    import asyncio

    import vita_framework
    from vita_framework.request import Request

    t0 = time.perf_counter()
    pipe = vita_framework.build([*BASE, f"checkpoint={bundle}", *VLLM, "llm.engine=async",
                                 "generation.repetition_penalty=1.0"])
    build_s = time.perf_counter() - t0
    assert pipe.llm.continuous_batching
    config = pipe.llm.generation_config(dict(pipe.generation_options))

    from vita_framework.serve.continuous import fuse_request

    def fused_row(item: dict):
        return fuse_request(pipe, pipe.prepare(Request(**item)))

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

    async def served(item: dict) -> dict:  # the helper a server uses: Request in, text pieces out
        from vita_plugins.llm.vllm.serving import astream_request

        pieces, last = [], None
        async for update in astream_request(pipe, Request(**item), seed=0):
            pieces.append(update.text)
            last = update
        return {"ids": last.generated_ids, "text": "".join(pieces), "tokens_in": last.tokens_in,
                "finished": last.finished}

    async def main() -> dict:
        names = ["text", "image", "audio", "video"]
        t1 = time.perf_counter()
        answers = await asyncio.gather(*(answer(requests[n][0]) for n in names),
                                       abandoned(requests["text"][0]), served(requests["image"][0]))
        return {"answers": dict(zip(names, answers[:4])), "abandoned_tokens": answers[4], "served": answers[5],
                "concurrent_s": time.perf_counter() - t1, "build_s": build_s}

    result = asyncio.run(main())
    # the synchronous API on the async engine too
    result["sync_text_ids"] = pipe.generate(**requests["text"][0], seed=0).rows[0].generated_ids
    pipe.llm.close()
    return result


def run_checks(bundle: Path) -> dict:
    """Bad input in the vLLM venv: the golden checkpoint's head_dim 16, timm; and the prepared model directory."""
    import vita_framework
    from vita_framework.errors import VitaError

    found: dict = {}
    for name, overrides in {
        "head_dim_16": ["+experiment=vita15", f"checkpoint={GOLDEN_CKPT}", "audio=none", *VLLM, "device=cpu"],
        "timm": ["+vision=timm", "+audio=none", "checkpoint=null", "device=cpu"],
    }.items():
        try:
            vita_framework.build(overrides)
            found[name] = "built without an error"
        except VitaError as exc:
            found[name] = str(exc)
    pipe = vita_framework.build([*BASE, f"checkpoint={bundle}", *VLLM])
    text = cases(Path(os.environ["VITA_CACHE_DIR"]))["text"][0]
    found["stream"] = "".join(p for p in pipe.stream(**text, seed=0) if isinstance(p, str))
    stream = pipe.stream(**text, seed=0, generation={"max_new_tokens": 2000, "eos_token_id": []})
    next(stream)
    t0 = time.perf_counter()
    stream.close()  # abandoned: the requests are aborted within a step
    found["abandon_s"] = time.perf_counter() - t0
    sampling = {"do_sample": True, "temperature": 2.0, "top_p": 1.0, "top_k": 0}  # flat: seeds must matter
    found["sampling"] = [pipe.generate(**text, seed=seed, generation=sampling).rows[0].generated_ids
                         for seed in (3, 3, 4)]
    try:
        pipe.generate(**text, generation={"num_beams": 2})
        found["beams"] = "accepted"
    except VitaError as exc:
        found["beams"] = str(exc)
    model_dir = pipe.llm.model_dir
    config = json.loads((model_dir / "config.json").read_text())
    config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    found["model_dir"] = {"model.safetensors": {"link": (model_dir / "model.safetensors").is_symlink()},
                          "config.json": config}
    pipe.llm.close()
    return found


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
    go.add_argument("--checks", action="store_true")
    args = parser.parse_args()
    if args.command == "bundle":
        make_bundle(args.out)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        os.environ["VITA_CACHE_DIR"] = str(args.out / "cache")  # the prepared vLLM model dirs: not the user's
        run(args.bundle, args.out, args.backends, args.use_async, args.checks)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
