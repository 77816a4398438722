"""MLflow conventions: where runs go, what every run is tagged with, and failing fast when the store is down."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import mlflow

from flows.config import PROJECT_ROOT, Config

EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
MODEL_ALIAS = "champion"  # the best pgg policy on its data: models:/pgg-summarization@champion
CHAMPION_METRIC = "val/rougeL"  # the last iteration's validation ROUGE-L decides who holds @champion

# Tags a deployment run adds to every MLflow run it starts (overrides, its folder): set by flows.deploy
_RUN_TAGS: ContextVar[dict[str, str] | None] = ContextVar("pgg_run_tags", default=None)


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


def lost_mid_run(uri: str) -> str | None:
    """After a stage failed: the one line for an HTTP tracking server that stopped answering during the
    run (it is unreachable now), else None (the failure is something else and keeps its traceback)."""
    try:
        check_reachable(uri)
    except TrackingUnavailable as err:
        return f"{err}; it stopped answering during the run: rerun when it is back (complete iterations are kept)"
    return None


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_state() -> dict[str, str]:
    """The commit the code came from and whether tracked files differed from it (then the commit
    alone does not reproduce the run)."""
    try:
        commit = _git("rev-parse", "HEAD")
        clean = not _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_clean": "unknown"}
    return {"git_commit": commit, "git_clean": str(clean).lower()}


def training_data(config: Config, task: str) -> Path:
    """The prepared data (or the preference file) a task's runs read."""
    from flows.prepare import prompt_dir, summarization_dir

    if task == "summarization":
        return summarization_dir(config)
    if task == "prompt":
        return prompt_dir(config, config.data.prompt.dataset, config.data.prompt.seed)
    return Path(config.guidance_fit.data)


def data_hash(path: Path) -> str:
    """md5 of the files a run read, as they are on disk now: relative names and bytes, so the same data
    hashes the same in any folder (a hub dataset name, not a file, is recorded as 'hub:NAME')."""
    path = Path(path)
    if not path.exists():
        return f"hub:{path}" if not path.is_absolute() else "missing"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.md5()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@contextmanager
def run_tags(tags: dict[str, str]) -> Iterator[None]:
    """Add ``tags`` to every MLflow run started inside the block (a deployment's overrides)."""
    token = _RUN_TAGS.set({**(_RUN_TAGS.get() or {}), **tags})
    try:
        yield
    finally:
        _RUN_TAGS.reset(token)


def overrides_tag(overrides: dict[str, Any] | None) -> str:
    return json.dumps(overrides or {}, sort_keys=True)


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
        **git_state(),
        "data_hash": data_hash(training_data(config, task)),
        "overrides": overrides_tag(None),  # the params hold the values; this tag says which were overridden
        **(_RUN_TAGS.get() or {}),
        **(extra_tags or {}),
    }
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else method, tags=tags) as run:
        if run_id is None:
            mlflow.log_params(config.flat())
        yield run


def crown_on_merit(name: str, version: str, metric: str = CHAMPION_METRIC, alias: str = MODEL_ALIAS) -> str:
    """Give ``alias`` to a newly registered version only if it beats the holder on ``metric`` under the
    same data (or nothing holds it yet), so a quick run with small overrides never displaces a real
    model. Every version records its metric, data hash and the decision as tags. Returns the decision."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    run = client.get_run(client.get_model_version(name, version).run_id).data
    value, data = run.metrics.get(metric), run.tags.get("data_hash", "unknown")
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no version holds it yet
        holder = None
    if holder is None:
        crowned, decision = True, f"took @{alias}: no version held it"
    else:
        held = client.get_run(holder.run_id).data
        best, held_data = held.metrics.get(metric), held.tags.get("data_hash", "unknown")
        if held_data != data:
            crowned = False
            decision = (
                f"@{alias} stays on v{holder.version}: it was trained on other data ({held_data} vs {data})"
            )
        elif value is None or (best is not None and value <= best):
            crowned = False
            decision = f"@{alias} stays on v{holder.version}: {metric} {value} does not beat its {best}"
        else:
            crowned, decision = True, f"took @{alias} from v{holder.version}: {metric} {value} > {best}"
    if crowned:
        client.set_registered_model_alias(name, alias, str(version))
    for key, tag in {metric: value, "data_hash": data, "champion_decision": decision}.items():
        client.set_model_version_tag(name, str(version), key, str(tag))
    return decision
