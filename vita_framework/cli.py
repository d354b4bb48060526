"""The CLI's job body: build, run, stream, summarise, write ``result.json``. A thin shell over the API."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from .errors import VitaError
from .peak_memory import PeakMemory
from .schema import as_path_list

SAMPLE_IMAGE = Path(__file__).resolve().parent / "assets" / "sample.png"
log = logging.getLogger(__name__)
PEAK_MEMORY = PeakMemory()  # restarted by every job: a sweep runs several jobs in one process


def run_job(cfg: Any) -> float | None:
    """Run one job; returns the eval score (for Hydra sweepers) or None.

    A single run prints framework errors as ``error: ...`` and exits with status 2. In a multirun a failed
    job is recorded as failed in its result.json and the sweep goes on (Hydra would otherwise stop).
    """
    multirun = _is_multirun()
    PEAK_MEMORY.start()
    previous, warnings.showwarning = warnings.showwarning, _log_warning
    try:
        payload = _run(cfg)
        return (payload.get("eval") or {}).get("score")
    except VitaError as exc:
        if os.environ.get("VITA_DEBUG"):
            raise
        log.error("error: %s", exc)
        if not multirun:
            sys.exit(2)
        _write_failure(exc)
    except Exception as exc:
        if not multirun:
            raise
        log.exception("job failed with an unexpected error")
        _write_failure(exc)
    finally:
        PEAK_MEMORY.stop()
        warnings.showwarning = previous
    return float("nan")


def _log_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """Warnings of a job go to its log (console and the job's log file) as one line, without source lines."""
    log.warning("warning: %s", message)


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _write_failure(exc: BaseException) -> None:
    payload = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "rows": [], "timings": {}}
    payload.update(_hydra_meta())
    _write_json(_output_dir(), payload)


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
                "overrides": list(hc.overrides.task), "job_num": hc.job.get("num")}
    except ValueError:
        return {"choices": {}, "overrides": [], "job_num": None}


def request_fields(cfg: Any) -> dict[str, Any]:
    """The request's inputs and options from the config, by the modality table's keys."""
    from .plugin_manager import get_modalities

    table = get_modalities()
    fields: dict[str, Any] = {key: as_path_list(cfg.get(key)) for key in table.request_keys()}
    fields.update({key: cfg.get(key) for key in table.request_options() if cfg.get(key) is not None})
    return fields


def default_inputs(cfg: Any) -> tuple[str | None, dict[str, Any]]:
    """The prompt and request fields; the shipped sample image when the user gave no prompt and no input at all
    (and a vision encoder is configured)."""
    prompt, fields = cfg.get("prompt"), request_fields(cfg)
    given = any(v for k, v in fields.items() if isinstance(v, list))
    if prompt is None and not given and cfg.get("vision") is not None:
        fields["images"] = [str(SAMPLE_IMAGE)]
    return prompt, fields


def default_bundle_note() -> str:
    """What to expect from the embedded bundle, from its ``bundle_info.json`` (so the note never goes stale)."""
    from .weights import default_bundle_path, read_bundle_info

    info = read_bundle_info(default_bundle_path())
    if info.get("weights") == "trained":
        return (f"note: running the embedded tiny default bundle, trained on synthetic shapes (data "
                f"{info.get('data', 'unknown')}): it answers questions about simple shape scenes only.")
    return "note: running the embedded tiny default bundle (random weights): answers are noise."


def _peak_memory_mb() -> float:
    """This job's peak (GPU memory on CUDA, else host RSS), since ``run_job`` started; see ``PEAK_MEMORY.method``."""
    return PEAK_MEMORY.peak_mb()


def _run(cfg: Any) -> dict[str, Any]:
    from .builder import COMPONENT_CACHE, build_pipeline
    from .validation import validate_run

    validate_run(cfg)  # config, generation, checkpoint and inputs: all problems at once, before any loading
    batch = dataset = None
    if cfg.get("requests"):
        from .requests_io import read_requests

        batch = read_requests(cfg.requests)  # malformed lines fail here, before any model is built
    eval_cfg = cfg.get("eval") or {}
    if eval_cfg.get("dataset"):
        from .evaluation import read_dataset

        dataset = read_dataset(eval_cfg.dataset, eval_cfg.get("max_items"))
    t0 = time.perf_counter()
    pipeline = build_pipeline(cfg, cache=COMPONENT_CACHE)
    build_s = time.perf_counter() - t0
    want_scores = bool((cfg.get("output") or {}).get("scores", False))
    if dataset is not None:
        from .evaluation import score

        requests, answers = dataset
        result = pipeline.generate_batch(requests, batch_size=int(cfg.get("batch_size", 8)), output_scores=False,
                                         seed=_seed(cfg))
        scores = score([None if r.error else r.text for r in result.rows], answers)
        metric = str(eval_cfg.get("metric", "exact"))
        scores.update(metric=metric, score=scores[metric], dataset=str(eval_cfg.dataset))
        for row, answer in zip(result.rows, answers):
            row.expected = answer
        log.info("eval: exact %.3f, contains %.3f over %d items", scores["exact"], scores["contains"], scores["n"])
        return _write_outputs(result, build_s, pipeline, extra={"eval": scores})
    if batch is not None:
        result = pipeline.generate_batch(batch, batch_size=int(cfg.get("batch_size", 8)), progress=True,
                                         seed=_seed(cfg), output_scores=want_scores)
        for i, row in enumerate(result.rows):
            print(f"[{i}] " + (f"error: {row.error}" if row.error else row.text))
        return _write_outputs(result, build_s, pipeline)
    prompt, fields = default_inputs(cfg)
    streamer = None
    if cfg.get("stream", True):
        from transformers import TextStreamer

        streamer = TextStreamer(pipeline.llm.tokenizer, skip_prompt=True, skip_special_tokens=True)
    if cfg.get("checkpoint") == "default":
        log.info(default_bundle_note())
    result = pipeline.generate(prompt, streamer=streamer, output_scores=want_scores, seed=_seed(cfg), **fields)
    if streamer is None:
        print(result.text)
    return _write_outputs(result, build_s, pipeline)


def _seed(cfg: Any) -> int | None:
    """The CLI is reproducible: every call generates with the run's ``seed`` (None: fresh randomness)."""
    seed = cfg.get("seed")
    return None if seed is None else int(seed)


def _write_outputs(result: Any, build_s: float, pipeline: Any, extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    from .plugins import listing

    out_dir = _output_dir()
    payload = {"status": "ok", **result.to_dict(), **(extra or {})}
    payload["timings"]["build_s"] = build_s
    payload["components_reused"] = list(getattr(pipeline, "reused_components", []))
    payload["peak_memory_mb"] = _peak_memory_mb()
    payload["peak_memory_method"] = PEAK_MEMORY.method
    caches = {name: cache.stats() for name, cache in (("encoder", getattr(pipeline, "encoder_cache", None)),
                                                      ("prefix", getattr(pipeline, "prefix_store", None)))
              if cache is not None}
    if caches:  # encoder_cache_mb / prefix_cache_mb set: how much they saved
        payload["caches"] = caches
    payload.update(_hydra_meta())
    payload["plugins"] = {row["plugin"]: {"package": row["package"], "version": row["version"]}
                          for row in listing()}
    if result.scores is not None:
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        scores = result.scores
        if isinstance(scores, list):  # batch mode: one tensor per chunk; pad steps to the longest chunk
            import torch

            steps = max(s.shape[1] for s in scores)
            scores = torch.cat([torch.nn.functional.pad(s, (0, 0, 0, steps - s.shape[1]), value=float("nan"))
                                for s in scores])
        save_file({"scores": scores.contiguous()}, str(out_dir / "scores.safetensors"))
        payload["scores_file"] = "scores.safetensors"
    _write_json(out_dir, payload)
    log.info(summary(payload))
    return payload


def _write_json(out_dir: Path, payload: dict[str, Any]) -> None:
    """result.json appears complete or not at all (a sweep collector may read it at any time)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out_dir / "result.json")


def summary(payload: dict[str, Any]) -> str:
    """The closing line on stderr; rows that failed (batch mode) have no token counts and are only counted."""
    rows, t = payload["rows"], payload.get("timings") or {}
    memory = f"peak memory: {payload.get('peak_memory_mb', 0.0):.0f} MB"
    done = [r for r in rows if not r.get("error")]
    if len(rows) == 1 and done:
        row = rows[0]
        tokens_in = ", ".join(f"{k} {v}" for k, v in row["tokens_in"].items() if k != "total" and v)
        return (f"\n-- tokens in: {row['tokens_in'].get('total', 0)} ({tokens_in}); tokens out: {row['tokens_out']}; "
                f"time to first token: {t.get('time_to_first_token_s', 0.0) * 1000:.0f} ms; "
                f"decode: {t.get('decode_tokens_per_s', 0.0):.1f} tokens/s; {memory}")
    failed = len(rows) - len(done)
    counted = f"{len(rows)} request{'s' if len(rows) != 1 else ''} ({failed} failed)"
    if not done:
        return f"\n-- {counted}: no answers (each row's error is in result.json); {memory}"
    out = sum(r["tokens_out"] for r in done)
    return (f"\n-- {counted}; tokens in: {sum(r['tokens_in'].get('total', 0) for r in done)}; tokens out: {out}; "
            f"{out / max(t.get('total_s', 0.0), 1e-9):.1f} new tokens/s; {memory}")


def output_dir_problem(path: str | os.PathLike, setting: str = "hydra.run.dir") -> str | None:
    """Why results cannot be written under ``path`` (created if missing, then a probe file written and removed),
    or None; ``setting`` is the option to change. Run before any model work, so a bad output dir costs nothing."""
    import tempfile

    target = Path(path).expanduser()
    try:
        blocker = next((p for p in (target, *target.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            where = "is" if blocker == target else f"lies under '{blocker}', which is"
            return f"output directory '{target}' {where} a file, not a directory; choose another {setting}=<dir>"
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".vita-probe-"):
            pass
    except OSError as exc:
        return (f"output directory '{target}' cannot be written ({exc.strerror or exc}); choose a writable "
                f"{setting}=<dir>")
    return None
