"""Logging each job of a run or sweep to an experiment tracker: MLflow or TensorBoard (the ``tracking`` extra).

Why: a design-space sweep is one of many; a tracker keeps them side by side, with each job's parameters (its
overrides and component choices), its numbers (accuracy, visual tokens, time to first token, ...) and, for
training jobs, the loss curves. The sweep callbacks call :func:`log_job` when a job ends (so a long sweep shows
up job by job) with what the job wrote to its ``result.json``. Both trackers write local files under the sweep
directory by default; nothing is sent anywhere unless ``tracking_uri`` says so.

Configured on the results callback: ``hydra.callbacks.results.tracking=mlflow|tensorboard``, with
``hydra.callbacks.results.tracking_uri`` (MLflow: a tracking URI, default ``file:<sweep dir>/mlruns``;
TensorBoard: a log directory, default ``<sweep dir>/tensorboard``) and ``hydra.callbacks.results.experiment``
(MLflow's experiment name, default the Hydra job name).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

TRACKERS = ("mlflow", "tensorboard")
EXTRA = "pip install -e '.[tracking]'"
_MODULES = {"mlflow": "mlflow.tracking", "tensorboard": "torch.utils.tensorboard"}


def check(tracking: Any) -> str | None:
    """The configured tracker (None: off); a ConfigError for an unknown one or one whose library is missing,
    raised when the run starts, before any job works."""
    if tracking in (None, "", "null", "none", False):
        return None
    if tracking not in TRACKERS:
        raise ConfigError(f"hydra.callbacks.results.tracking={tracking} is not one of {', '.join(TRACKERS)} (or null)")
    import importlib

    try:
        importlib.import_module(_MODULES[tracking])
        if tracking == "tensorboard":
            importlib.import_module("tensorboard")
    except ImportError as exc:
        raise ConfigError(
            f"hydra.callbacks.results.tracking={tracking} needs its library, which cannot be "
            f"imported ({exc}); install the tracking extra: {EXTRA}"
        ) from None
    return str(tracking)


def default_uri(tracking: str, root: Path) -> str:
    """Where a tracker writes when ``tracking_uri`` is not set: files under the sweep (or run) directory."""
    root = Path(root).resolve()
    return (root / "mlruns").as_uri() if tracking == "mlflow" else str(root / "tensorboard")


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``values`` (booleans and text left out)."""
    return {
        str(k): float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def log_job(
    tracking: str,
    *,
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    curves: list[dict[str, Any]] | None = None,
    ok: bool = True,
) -> str:
    """Log one job: ``params`` (text), ``metrics`` (finite numbers, at step 0) and ``curves`` (records with
    ``stage`` and ``step``: each other number becomes the metric ``<stage>/<key>`` at that step). Returns a
    description of where it went."""
    values = numeric(metrics)
    points = [
        (f"{rec.get('stage', 'train')}/{key}", value, int(rec.get("step", 0)))
        for rec in curves or []
        for key, value in numeric(rec).items()
        if key != "step"
    ]
    if tracking == "mlflow":
        return _mlflow(uri, experiment, run_name, params, values, points, ok)
    if tracking == "tensorboard":
        return _tensorboard(uri, run_name, params, values, points)
    raise ConfigError(f"unknown tracker '{tracking}'; use one of {', '.join(TRACKERS)}")


def _mlflow(
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    values: dict[str, float],
    points: list[tuple[str, float, int]],
    ok: bool,
) -> str:
    if uri.startswith("file:"):  # MLflow 3 keeps its file store behind this switch; it is what `file:` asks for
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(experiment)
        except MlflowException:  # another job of the sweep created it meanwhile
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    else:
        experiment_id = found.experiment_id
    run = client.create_run(experiment_id, run_name=run_name)
    now = int(time.time() * 1000)
    metrics = [Metric(_mlflow_key(k), v, now, 0) for k, v in values.items()]
    metrics += [Metric(_mlflow_key(k), v, now, step) for k, v, step in points]
    flat = [Param(_mlflow_key(k)[:250], str(v)[:6000]) for k, v in params.items()]
    for i in range(0, max(len(metrics), len(flat), 1), 100):  # log_batch takes at most 100 params a call
        client.log_batch(run.info.run_id, metrics=metrics[i : i + 100], params=flat[i : i + 100])
    client.set_terminated(run.info.run_id, status="FINISHED" if ok else "FAILED")
    return f"mlflow run '{run_name}' in experiment '{experiment}' at {uri}"


def _mlflow_key(key: str) -> str:
    """MLflow names allow letters, digits, ``_ - . / `` and spaces: anything else becomes ``_``."""
    return re.sub(r"[^\w\-. /]", "_", key)


def _tensorboard(
    root: str, run_name: str, params: Mapping[str, Any], values: dict[str, float], points: list[tuple[str, float, int]]
) -> str:
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(root) / re.sub(r"[^\w\-.=,]+", "_", run_name)
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for key, value in values.items():
            writer.add_scalar(key, value, 0)
        for key, value, step in points:
            writer.add_scalar(key, value, step)
        writer.add_text("params", "\n\n".join(f"`{k}` = `{v}`" for k, v in params.items()) or "-", 0)
    finally:
        writer.close()
    return f"tensorboard run '{run_name}' in {log_dir}"
