"""prefect.yaml end to end: a real Prefect server, a process work pool, `prefect deploy`, a worker, runs
with overrides that stay experiments (docs/mlops.md, "Scheduled runs")."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import mlflow

from flows import deploy
from flows.tracking import MODEL_ALIAS, data_hash
from tests.services import (
    BIN,
    PROJECT_ROOT,
    background,
    free_port,
    http_json,
    tail,
    tiny_params,
    wait_for_http,
)

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def _workspace_state() -> tuple[str, str]:
    """What a deployment run must leave alone: git's view of the tree and DVC's of its outputs."""
    git = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    dvc = subprocess.run([str(BIN / "dvc"), "status"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    return git.stdout, dvc.stdout


def _seed_champion(uri: str, trained_on: str) -> str:
    """A registered champion on ``trained_on`` with a validation ROUGE-L no tiny model reaches."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("seeded-champion")  # this store's: an earlier test's active one is elsewhere
    client = mlflow.MlflowClient()
    with mlflow.start_run(tags={"data_hash": trained_on}) as run:
        mlflow.log_metric("val/rougeL", 100.0, step=1)
    client.create_registered_model("pgg-summarization")
    version = client.create_model_version(
        "pgg-summarization", f"{run.info.artifact_uri}/policy", run.info.run_id
    ).version
    client.set_registered_model_alias("pgg-summarization", MODEL_ALIAS, version)
    mlflow.set_tracking_uri(None)
    return version


def _trigger(env: dict[str, str], params: Path, overrides: dict) -> str:
    """`prefect deployment run` as the docs give it; returns the flow run's id."""
    printed = _cli(
        ["deployment", "run", "pgg-summarization/scheduled", "--param", f"params_path={params}",
         "--param", f"overrides={json.dumps(overrides)}"],
        env,
    )  # fmt: skip
    return re.search(r"UUID: ([0-9a-f-]{36})", printed).group(1)


def _logs(env: dict[str, str], flow_run_id: str, pattern: str, timeout: float = 30) -> str:
    """`prefect flow-run logs`, once ``pattern`` shows (a finished run's last lines may still be in
    flight: its process sends logs in batches)."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, logs := _cli(["flow-run", "logs", flow_run_id], env)):
        if time.monotonic() > deadline:
            return logs
        time.sleep(2)
    return logs


def _final_state(api: str, flow_run_id: str, timeout: float) -> dict:
    deadline, state = time.monotonic() + timeout, {"type": None}
    while time.monotonic() < deadline and state["type"] not in FINAL_STATES:
        time.sleep(1)
        state = http_json(f"{api}/flow_runs/{flow_run_id}")["state"]
    return state


def test_scheduled_deployment_runs_on_a_process_worker(tmp_path, data_root):
    params = tiny_params(tmp_path, data_root, steps=2, methods="pgg")
    api = f"http://127.0.0.1:{free_port()}/api"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    port = urllib.parse.urlparse(api).port
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    server_cmd = [
        str(BIN / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-services",
    ]
    worker_cmd = [str(BIN / "prefect"), "worker", "start", "--pool", "pgg", "--type", "process"]
    workspace_before, folders = _workspace_state(), []
    try:
        with background(server_cmd, server_log, env) as server:
            wait_for_http(f"{api}/health", server, server_log, timeout=120)
            # the data the run will prepare for itself, prepared here first: the champion trained on it
            subprocess.run([str(BIN / "python"), "-m", "flows", "prepare", "--params", str(params)],
                           cwd=PROJECT_ROOT, env=env, check=True, capture_output=True)  # fmt: skip
            tiny_data = data_hash(tmp_path / "data" / "summarization")
            champion = _seed_champion(uri, tiny_data)
            _cli(["work-pool", "create", "pgg", "--type", "process"], env)
            with background(worker_cmd, worker_log, env, cwd=tmp_path):  # starts up while we deploy
                _cli(["--no-prompt", "deploy", "--all"], env)  # every deployment of prefect.yaml

                deployments = {d["entrypoint"]: d for d in http_json(f"{api}/deployments/filter", {})}
                scheduled = {"flows/deploy.py:summarization_deployment", "flows/deploy.py:prompt_deployment"}
                assert set(deployments) == scheduled | {"flows/deploy.py:guidance_fit_deployment"}
                for entrypoint, deployment in deployments.items():
                    assert deployment["work_pool_name"] == "pgg"
                    if entrypoint in scheduled:
                        assert [s["active"] for s in deployment["schedules"]] == [False]  # declared, inactive
                        assert deployment["schedules"][0]["schedule"]["cron"]
                    else:  # the guidance fit runs on demand, on the user's data
                        assert deployment["schedules"] == []

                # a bad override: one line naming it, nothing written
                bad = _trigger(env, params, {"loop.summarization.policy_steps": -1})
                folders.append(deploy.experiment_dir(bad))
                state = _final_state(api, bad, 120)
                assert state["type"] == "FAILED", state
                assert state["message"].startswith("bad override loop.summarization.policy_steps:")
                bad_logs = _logs(env, bad, re.escape(state["message"]))
                assert state["message"] in bad_logs and "Traceback" not in bad_logs
                assert not folders[-1].exists()

                # one pgg iteration, its registration, test evaluation of lead, warm start and pgg
                overrides = {"eval.summarization.max_examples": 4}
                good = _trigger(env, params, overrides)
                folders.append(deploy.experiment_dir(good))
                state = _final_state(api, good, 420)
                # the parent shows every stage and how to read its logs (read while the worker lives:
                # the run's process may still be sending its last lines)
                stage = r"stage summarization-align\[pgg\]: Completed \(logs: prefect flow-run logs [0-9a-f-]{36}\)"
                logs = _logs(env, good, stage)
            assert state["type"] == "COMPLETED", f"flow run ended {state}:\n{tail(worker_log, 60)}"
            assert re.search(stage, logs), logs

            artifacts = http_json(
                f"{api}/artifacts/filter", {"artifacts": {"key": {"any_": ["summarization-results"]}}}
            )
            assert artifacts and artifacts[0]["type"] == "markdown"
            assert "| pgg |" in artifacts[0]["data"] and "| lead |" in artifacts[0]["data"]

        assert _workspace_state() == workspace_before  # git status and dvc status: untouched
        assert not (tmp_path / "runs").exists()  # not even the params file's runs_dir
        folder = folders[-1]  # experiments/<flow run id>/, as docs/mlops.md says
        for method in ("lead", "warmstart", "pgg"):
            metrics = json.loads((folder / "metrics" / "summarization" / f"{method}.json").read_text())
            assert metrics["n_test"] == 4  # the override reached the flow
        assert data_hash(folder / "data" / "summarization") == tiny_data

        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient()
        (run,) = mlflow.search_runs(
            experiment_names=["pgg-summarization"],
            filter_string=f"tags.prefect_flow_run_id = '{good}' and tags.method = 'pgg'",
            output_format="list",
        )
        assert run.data.tags["data_hash"] == tiny_data  # hashed from the data it read, not dvc.lock
        assert json.loads(run.data.tags["overrides"]) == overrides
        assert run.data.params["eval.summarization.max_examples"] == "4"
        assert run.data.tags["git_clean"] in ("true", "false") and len(run.data.tags["git_commit"]) == 40
        assert client.get_model_version_by_alias("pgg-summarization", MODEL_ALIAS).version == champion
        (new,) = client.search_model_versions(f"name = 'pgg-summarization' and run_id = '{run.info.run_id}'")
        assert "does not beat" in new.tags["champion_decision"]  # registered, compared on the same data
    finally:
        mlflow.set_tracking_uri(None)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
