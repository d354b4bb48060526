"""Design-space sweeps: a training sweep gives one bundle and one score per job and a report (summary.csv,
summary.png), logged to MLflow; the inference sweep's collector writes the same report columns and logs to
TensorBoard. Trackers are read back with their own readers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from test_training_compositions import TINY

from vita_framework.weights import default_bundle_path, read_bundle_info

KINDS = ("shape", "colour", "count", "position", "describe")


def _png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (840, 576)
    assert 15_000 < path.stat().st_size < 2_000_000


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_training_sweep_reports_every_job_and_logs_it_to_mlflow(tmp_path, run_env):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vita_framework.train",
            "-m",
            "+vision=internvit,timm",
            "train=quick",
            *TINY,
            "hydra.callbacks.results.tracking=mlflow",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=run_env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(sweep / "summary.csv")
    assert list(rows[0]) == [
        "job",
        "status",
        "vision",
        "accuracy",
        *(f"accuracy_{k}" for k in KINDS),
        "accuracy_square",
        "accuracy_tall",
        "accuracy_wide",
        "visual_tokens",
        "ttft_ms",
        "params",
        "trained_params",
        "train_s",
        "bundle",
        "error",
    ]
    assert [(r["job"], r["status"], r["vision"], r["visual_tokens"]) for r in rows] == [
        ("0", "ok", "internvit", "49"),
        ("1", "ok", "timm", "196"),
    ]
    for n, row in enumerate(rows):
        result = json.loads((sweep / str(n) / "result.json").read_text())
        assert float(row["accuracy"]) == result["accuracy"] and 0 <= result["accuracy"] <= 1
        typed = result["accuracy_by_canvas"]["typed"]
        assert [row[f"accuracy_{c}"] for c in ("square", "tall", "wide")] == [
            "" if typed[c]["all"] is None else str(typed[c]["all"]) for c in ("square", "tall", "wide")
        ]
        assert sum(typed[c]["questions"] for c in typed) == result["heldout_questions"]
        assert float(row["ttft_ms"]) == result["ttft_ms"] > 0 and float(row["train_s"]) > 0
        assert int(row["params"]) == result["parameters"]["total"]
        assert int(row["trained_params"]) == result["parameters"]["projector"] + result["parameters"]["llm"]
        assert (sweep / str(n) / "bundle" / "model.safetensors").is_file() and row["bundle"] == result["bundle"]
    # the default's tower and projector fit internvit; timm gets a fresh tower (5.5M) and a projector for it
    shipped = read_bundle_info(default_bundle_path())["parameters"]  # vision, projector, llm, audio
    assert int(rows[0]["params"]) == sum(shipped.values()) and int(rows[1]["params"]) > 6_000_000
    _png(sweep / "summary.png")
    assert "== training sweep: 2 jobs, 0 failed" in proc.stdout and "vis tok" in proc.stdout

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3 reads its file store behind this switch
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = (sweep / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["vita_train"], output_format="list", order_by=["attributes.run_name"])
    assert [run.data.params["vision"] for run in runs] == ["internvit", "timm"]
    for run, row in zip(runs, rows):
        assert run.info.status == "FINISHED" and run.data.params["choice.train"] == "quick"
        assert run.data.metrics["accuracy"] == pytest.approx(float(row["accuracy"]))
        assert run.data.metrics["visual_tokens"] == float(row["visual_tokens"])
        curve = MlflowClient(uri).get_metric_history(run.info.run_id, "align/loss")
        assert [m.step for m in curve] == [1, 2] and all(m.value > 0 for m in curve)


def _fake_job(sweep, num, overrides, tokens, ttft, score, dataset):
    job = sweep / str(num)
    job.mkdir(parents=True)
    rows = [
        {"text": "red", "tokens_in": {"total": 300, "image": tokens, "text": 300 - tokens}, "tokens_out": 2},
        {"text": "two", "tokens_in": {"total": 150, "image": tokens // 2, "text": 150 - tokens // 2}, "tokens_out": 2},
    ]
    (job / "result.json").write_text(
        json.dumps(
            {
                "status": "ok",
                "job_num": num,
                "overrides": overrides,
                "rows": rows,
                "choices": {"vision": "internvit", "fusion": "splice"},
                "peak_memory_mb": 800.0,
                "timings": {"time_to_first_token_s": ttft, "decode_tokens_per_s": 100.0},
                "eval": {
                    "score": score,
                    "exact": score,
                    "contains": score,
                    "metric": "exact",
                    "n": 2,
                    "dataset": dataset,
                },
            }
        )
    )
    return job


def test_inference_sweep_report_and_tensorboard_tracking(tmp_path):
    """The inference collector: accuracy and visual tokens per image (items counted in the eval set), the plot,
    and each job logged to TensorBoard as it ends, read back with TensorBoard's EventAccumulator."""
    from omegaconf import OmegaConf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vita_framework.sweep import ResultsCollector

    data = tmp_path / "qa.jsonl"  # row 0 asks about two images, row 1 about one: 3 images in all
    data.write_text(
        json.dumps({"prompt": "What colour?", "images": ["a.png", "b.png"], "answer": "red"})
        + "\n"
        + json.dumps({"prompt": "How many?", "images": ["a.png"], "answer": "two"})
        + "\n"
    )
    sweep = tmp_path / "sweep"
    collector = ResultsCollector(tracking="tensorboard")
    for num, (keep, tokens, ttft, score) in enumerate([("1.0", 98, 0.040, 0.75), ("0.5", 50, 0.025, 0.5)]):
        job = _fake_job(sweep, num, ["+vision=internvit", f"fusion.keep={keep}"], tokens, ttft, score, str(data))
        collector.on_job_end(
            OmegaConf.create(
                {
                    "hydra": {
                        "runtime": {"output_dir": str(job)},
                        "mode": "MULTIRUN",
                        "sweep": {"dir": str(sweep)},
                        "run": {"dir": str(tmp_path)},
                        "job": {"name": "vita"},
                    }
                }
            ),
            job_return=None,
        )
    collector.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    rows = _rows(sweep / "summary.csv")
    assert list(rows[0])[2:3] == ["fusion.keep"] and {"accuracy", "visual_tokens", "ttft_ms"} <= set(rows[0])
    # (98 + 49) image positions over 3 images; (50 + 25) over 3
    assert [(r["fusion.keep"], r["accuracy"], r["visual_tokens"], r["ttft_ms"]) for r in rows] == [
        ("1.0", "0.75", "49.0", "40.0"),
        ("0.5", "0.5", "25.0", "25.0"),
    ]
    _png(sweep / "summary.png")
    runs = sorted((sweep / "tensorboard").iterdir())
    assert [r.name for r in runs] == [
        "job_0_vision=internvit_fusion.keep=1.0",
        "job_1_vision=internvit_fusion.keep=0.5",
    ]
    for run, row in zip(runs, rows):
        events = EventAccumulator(str(run))
        events.Reload()
        assert [e.value for e in events.Scalars("accuracy")] == [pytest.approx(float(row["accuracy"]))]
        assert [e.value for e in events.Scalars("visual_tokens")] == [pytest.approx(float(row["visual_tokens"]))]
        assert "params" in events.Tags()["tensors"] or "params/text_summary" in events.Tags()["tensors"]


def test_an_unknown_tracker_is_refused_when_the_run_starts(tmp_path, run_env):
    """Hydra builds its callbacks before any job (and turns what their hooks raise into warnings): the check is
    there, so a misspelt tracker stops the run before the model is built."""
    from vita_framework.errors import ConfigError
    from vita_framework.sweep import ResultsCollector

    with pytest.raises(ConfigError, match=r"tracking=wandb is not one of mlflow, tensorboard"):
        ResultsCollector(tracking="wandb")
    assert ResultsCollector(tracking=None).tracking is None
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vita_framework",
            "+vision=internvit",
            "+audio=none",
            "hydra.callbacks.results.tracking=wandb",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=run_env,
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "tracking=wandb is not one of mlflow, tensorboard" in proc.stderr
    assert not (tmp_path / "result.json").exists()
