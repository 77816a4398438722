"""prefect.yaml end to end: a real Prefect server, a process work pool, `prefect deploy`, a worker, a run."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse

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


def test_scheduled_deployment_runs_on_a_process_worker(tmp_path, data_root):
    params = tiny_params(tmp_path, data_root, steps=2)
    api = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
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
    with background(server_cmd, server_log, env) as server:
        wait_for_http(f"{api}/health", server, server_log, timeout=120)
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

            # no methods: warm start + test evaluation of lead and warm start (the loop is tested elsewhere)
            summarization = deployments["flows/deploy.py:summarization_deployment"]
            overrides = {"loop.methods": [], "eval.summarization.max_examples": 4}
            flow_run = http_json(
                f"{api}/deployments/{summarization['id']}/create_flow_run",
                {"parameters": {"params_path": str(params), "overrides": overrides}},
            )
            deadline, state = time.monotonic() + 240, None
            while time.monotonic() < deadline and state not in FINAL_STATES:
                time.sleep(1)
                state = http_json(f"{api}/flow_runs/{flow_run['id']}")["state"]["type"]
        assert state == "COMPLETED", f"flow run ended {state}:\n{tail(worker_log, 60)}"

        artifacts = http_json(
            f"{api}/artifacts/filter", {"artifacts": {"key": {"any_": ["summarization-results"]}}}
        )
        assert artifacts and artifacts[0]["type"] == "markdown"
        assert "| warmstart |" in artifacts[0]["data"] and "| lead |" in artifacts[0]["data"]

    metrics = json.loads((tmp_path / "metrics" / "summarization" / "warmstart.json").read_text())
    assert metrics["n_test"] == 4  # the override reached the flow
