"""MLflow conventions: where runs go, what every run is tagged with, and failing fast when the store is down."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import yaml

from flows.config import PROJECT_ROOT, Config

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MODEL_ALIAS = "champion"  # the registered policy of the latest pgg run: models:/pgg-summarization@champion


def log_step_metric(key: str, values: list[float], first_step: int) -> None:
    """One value per optimizer step, at global steps first_step+1, first_step+2, ... in one request."""
    from mlflow.entities import Metric

    run = mlflow.active_run()
    if run is None or not values:
        return
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(v), now, first_step + i) for i, v in enumerate(values, start=1) if v == v]
    for start in range(0, len(metrics), 1000):  # the tracking API takes at most 1000 metrics a request
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics[start : start + 1000])


def log_step_curves(
    policy_losses: list[float], first_step: int, guidance_losses: list[float], guidance_epochs: int
) -> int:
    """One loop iteration's per-step curves: train/policy_loss at the global policy step, and
    train/guidance_loss at the guidance epoch counted across refits. Returns the epochs counted so far."""
    log_step_metric("train/policy_loss", policy_losses, first_step)
    log_step_metric("train/guidance_loss", guidance_losses, guidance_epochs)
    return guidance_epochs + len(guidance_losses)


class TrackingUnavailable(RuntimeError):
    pass


def tracking_uri(config: Config) -> str:
    """$MLFLOW_TRACKING_URI wins, then tracking.mlflow_uri, then the project's sqlite store."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or config.tracking.mlflow_uri
        or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    )


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Raise a one-line TrackingUnavailable before any training if an HTTP tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as err:
        problem = str(getattr(err, "reason", err))
    raise TrackingUnavailable(
        f"MLflow tracking server {uri} is unreachable ({problem}): start it or set MLFLOW_TRACKING_URI"
    )


def git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_hash(config: Config) -> str:
    """The md5 DVC recorded for the prepared data, so a run names the exact data version it used."""
    lock = PROJECT_ROOT / "dvc.lock"
    if lock.exists():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for out in stages.get("prepare", {}).get("outs", []):
            if Path(out.get("path", "")).name == config.data.prepared_dir.name:
                return out.get("md5", "unknown")
    return "unversioned"


def _use_experiment(uri: str, name: str) -> None:
    """Select the experiment; a new one on a sqlite store keeps its artifacts beside the database
    (mlartifacts/), not in ./mlruns of whatever folder the process happened to start in."""
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        database = Path(uri.removeprefix("sqlite:///"))
        mlflow.create_experiment(name, artifact_location=(database.parent / "mlartifacts").resolve().as_uri())
    mlflow.set_experiment(name)
    # Older MLflow 3 releases open an experiment without this tag on the GenAI overview; 3.17 follows the
    # UI's GenAI / Model training switch instead (README: the ?workflowType= link). Set on every run.
    mlflow.set_experiment_tag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


@contextmanager
def pipeline_run(
    config: Config,
    task: str,
    method: str,
    run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """One MLflow parent run per pipeline run, in experiment '<prefix>-<task>'.

    Pass ``run_id`` to continue a run (resume after a crash) instead of starting a new one.
    """
    uri = tracking_uri(config)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    _use_experiment(uri, f"{config.tracking.experiment_prefix}-{task}")
    tags = {
        "task": task,
        "method": method,
        "params_hash": config.digest(),
        "git_commit": git_commit(),
        "data_hash": data_hash(config),
        **(extra_tags or {}),
    }
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else method, tags=tags) as run:
        if run_id is None:
            mlflow.log_params(config.flat())
        yield run
