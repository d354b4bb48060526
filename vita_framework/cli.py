"""The CLI's job body: build, run, stream, summarise, write ``result.json``. A thin shell over the API."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from .errors import VitaError
from .schema import as_path_list

SAMPLE_IMAGE = Path(__file__).resolve().parent / "assets" / "sample.png"


def run_job(cfg: Any) -> dict[str, Any]:
    """Run one configured request; framework errors print ``error: ...`` and exit with status 2."""
    try:
        return _run(cfg)
    except VitaError as exc:
        if os.environ.get("VITA_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _output_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under a Hydra app
        return Path.cwd()


def _hydra_meta() -> dict[str, Any]:
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        hc = HydraConfig.get()
        return {"choices": OmegaConf.to_container(hc.runtime.choices),
                "overrides": list(hc.overrides.task)}
    except ValueError:
        return {"choices": {}, "overrides": []}


def default_inputs(cfg: Any) -> tuple[str | None, list[str]]:
    """The shipped sample image and default question when the user gave neither prompt nor images."""
    prompt, images = cfg.get("prompt"), as_path_list(cfg.get("images"))
    if prompt is None and not images and cfg.get("vision") is not None and not cfg.get("audios"):
        return None, [str(SAMPLE_IMAGE)]
    return prompt, images


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(cfg: Any) -> dict[str, Any]:
    from .builder import build_pipeline

    batch = None
    if cfg.get("requests"):
        from .requests_io import read_requests

        batch = read_requests(cfg.requests)  # malformed lines fail here, before any model is built
    t0 = time.perf_counter()
    pipeline = build_pipeline(cfg)
    build_s = time.perf_counter() - t0
    want_scores = bool((cfg.get("output") or {}).get("scores", False))
    if batch is not None:
        result = pipeline.generate_batch(batch, batch_size=int(cfg.get("batch_size", 8)), progress=True,
                                         output_scores=want_scores)
        for i, row in enumerate(result.rows):
            print(f"[{i}] " + (f"error: {row.error}" if row.error else row.text))
        return _write_outputs(result, build_s)
    prompt, images = default_inputs(cfg)
    streamer = None
    if cfg.get("stream", True):
        from transformers import TextStreamer

        streamer = TextStreamer(pipeline.llm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    if cfg.get("checkpoint") == "default":
        print("note: running the embedded tiny default bundle (random weights): answers are noise.", file=sys.stderr)
    result = pipeline.generate(
        prompt, images=images, audios=as_path_list(cfg.get("audios")), videos=as_path_list(cfg.get("videos")),
        video_fps=cfg.get("video_fps"), streamer=streamer,
        output_scores=want_scores,
    )
    if streamer is None:
        print(result.text)
    return _write_outputs(result, build_s)


def _write_outputs(result: Any, build_s: float) -> dict[str, Any]:
    from .plugins import listing

    out_dir = _output_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = result.to_dict()
    payload["timings"]["build_s"] = build_s
    payload["peak_memory_mb"] = _peak_memory_mb()
    payload.update(_hydra_meta())
    payload["plugins"] = {row["plugin"]: {"package": row["package"], "version": row["version"]}
                          for row in listing()}
    if result.scores is not None:
        from safetensors.torch import save_file

        save_file({"scores": result.scores.contiguous()}, str(out_dir / "scores.safetensors"))
        payload["scores_file"] = "scores.safetensors"
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out_dir / "result.json")
    print(summary(payload), file=sys.stderr)
    return payload


def summary(payload: dict[str, Any]) -> str:
    rows, t = payload["rows"], payload["timings"]
    if len(rows) > 1:
        done = [r for r in rows if not r.get("error")]
        out = sum(r["tokens_out"] for r in done)
        return (f"\n-- {len(rows)} requests ({len(rows) - len(done)} failed); tokens in: "
                f"{sum(r['tokens_in'].get('total', 0) for r in done)}; tokens out: {out}; "
                f"{out / max(t['total_s'], 1e-9):.1f} new tokens/s; peak memory: {payload['peak_memory_mb']:.0f} MB")
    row = rows[0]
    tokens_in = ", ".join(f"{k} {v}" for k, v in row["tokens_in"].items() if k != "total" and v)
    return (f"\n-- tokens in: {row['tokens_in']['total']} ({tokens_in}); tokens out: {row['tokens_out']}; "
            f"time to first token: {t['time_to_first_token_s'] * 1000:.0f} ms; "
            f"decode: {t['decode_tokens_per_s']:.1f} tokens/s; peak memory: {payload['peak_memory_mb']:.0f} MB")
