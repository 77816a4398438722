"""The pgg loop against a real `mlflow server` (sqlite backend, served artifacts), checked through its REST API."""

from __future__ import annotations

import os
import urllib.parse

import mlflow
import pytest

from flows import summarization as s
from flows.config import load_params
from flows.prepare import prepare
from tests.services import BIN, background, free_port, http_json, tiny_params, wait_for_http


@pytest.fixture
def mlflow_server(tmp_path, monkeypatch, request):
    uri = f"http://127.0.0.1:{free_port()}"
    command = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        uri.rsplit(":", 1)[1],
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
    ]
    log = tmp_path / "mlflow-server.log"
    with background(command, log, dict(os.environ), grace=3) as server:
        request.getfixturevalue("prefect_server")  # its start-up overlaps the MLflow server's
        wait_for_http(f"{uri}/health", server, log, timeout=120)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri
    mlflow.set_tracking_uri(None)  # the next test's store, not this dead server


def test_pgg_loop_on_an_mlflow_server(tmp_path, data_root, mlflow_server):
    config = load_params(tiny_params(tmp_path, data_root, steps=4))
    prepare(config)
    rows = s.align_flow(config, "pgg")
    assert len(rows) == 2

    api = f"{mlflow_server}/api/2.0/mlflow"
    experiment = http_json(f"{api}/experiments/get-by-name?experiment_name=pgg-summarization")["experiment"]
    runs = http_json(
        f"{api}/runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "filter": "tags.method = 'pgg'"},
    )["runs"]
    assert len(runs) == 1
    run_id = runs[0]["info"]["run_id"]
    tags = {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}
    assert tags["task"] == "summarization" and tags["params_hash"] == config.digest()
    assert {"git_commit", "data_hash", "resumed_from"} <= set(tags)

    for iteration, row in enumerate(rows, start=1):  # every metric of every iteration, at step = iteration
        for key, value in row.items():
            query = urllib.parse.urlencode({"run_id": run_id, "metric_key": key})
            history = http_json(f"{api}/metrics/get-history?{query}")["metrics"]
            at_step = [m["value"] for m in history if m["step"] == iteration]
            assert at_step == [pytest.approx(value)], (key, iteration, history)

    def listing(path: str = "") -> set[str]:
        query = urllib.parse.urlencode({"run_id": run_id, "path": path})
        return {f["path"] for f in http_json(f"{api}/artifacts/list?{query}").get("files", [])}

    assert {"token_rewards/iter-1.html", "token_rewards/iter-1.png"} <= listing("token_rewards")
    assert "token_rewards/iter-2.html" not in listing("token_rewards")  # no refit at iteration 2
    assert {"learning_curves.png", "curve.json"} <= listing()
    assert "samples/iter-1.json" in listing("samples")
    page = mlflow.artifacts.load_text(f"runs:/{run_id}/token_rewards/iter-1.html")
    assert page.count('class="t"') >= config.sampling.summarization.k and "token reward" in page

    registered = http_json(f"{api}/registered-models/get?name=pgg-summarization")["registered_model"]
    versions = http_json(f"{api}/model-versions/search?filter=name%3D%27pgg-summarization%27")[
        "model_versions"
    ]
    assert registered["name"] == "pgg-summarization"
    assert [v["run_id"] for v in versions] == [run_id]
    aliases = {a["alias"]: a["version"] for a in registered.get("aliases", [])}
    assert aliases == {"champion": versions[0]["version"]}  # aliases, not the deprecated stages

    # older MLflow 3 UIs read this tag to open on the training runs (3.17: README, ?workflowType=)
    experiment_tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert experiment_tags["mlflow.experimentKind"] == "custom_model_development"

    def history(key: str) -> list[tuple[int, float]]:
        query = urllib.parse.urlencode({"run_id": run_id, "metric_key": key, "max_results": 10000})
        return sorted(
            (m["step"], m["value"]) for m in http_json(f"{api}/metrics/get-history?{query}")["metrics"]
        )

    # per optimizer step, on one global step axis across iterations (4 policy steps, 2 iterations)
    policy_curve = history("train/policy_loss")
    assert [step for step, _ in policy_curve] == list(range(1, config.loop.summarization.policy_steps + 1))
    states = [s.read_state(s.runs_dir(config) / "pgg" / f"iter-{i}" / "policy") for i in (1, 2)]
    logged = [value for _, value in policy_curve]
    assert logged == pytest.approx(states[0]["step_losses"] + states[1]["step_losses"])
    assert sum(logged[:2]) / 2 == pytest.approx(rows[0]["policy/loss"])  # the iteration mean stays
    guidance_curve = history("train/guidance_loss")  # one point per guidance epoch
    epochs = s.read_state(s.runs_dir(config) / "pgg" / "iter-1" / "guidance")["epoch_losses"]
    assert [value for _, value in guidance_curve] == pytest.approx(epochs) and len(epochs) >= 1
