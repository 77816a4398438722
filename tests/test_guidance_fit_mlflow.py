"""The guidance fit's registered pyfunc against a real `mlflow server`: alias, load, per-token predict."""

from __future__ import annotations

import json
import urllib.parse

import mlflow

from components.reward_model import TokenRewardModel
from components.synthetic_preferences import write_synthetic_pairs
from flows.config import load_params
from flows.guidance_fit import ALIAS, guidance_fit_flow
from tests.conftest import write_params
from tests.services import http_json
from tests.test_mlflow_server import mlflow_server  # noqa: F401  (the fixture)


def test_registered_reward_pyfunc_predicts_token_rewards(tmp_path, mlflow_server):  # noqa: F811
    data = write_synthetic_pairs(tmp_path / "prefs.jsonl", n=20)
    settings = {
        "data": str(data), "backbone": "tiny", "head_hidden": 16, "epochs": 2, "baseline_epochs": 2,
        "output_dir": str(tmp_path / "model"), "report": str(tmp_path / "report.json"),
        "register_name": "test-token-reward", "heatmap_examples": 2,
    }  # fmt: skip
    config = load_params(write_params(tmp_path / "params", json.dumps({"guidance_fit": settings})))
    report = guidance_fit_flow(config)

    api = f"{mlflow_server}/api/2.0/mlflow"
    query = urllib.parse.urlencode({"name": "test-token-reward", "alias": ALIAS})
    version = http_json(f"{api}/registered-models/alias?{query}")["model_version"]
    run_id = version["run_id"]
    metrics = {
        m["key"]: m["value"] for m in http_json(f"{api}/runs/get?run_id={run_id}")["run"]["data"]["metrics"]
    }
    assert metrics["val/pairwise_accuracy"] == report["val_pairwise_accuracy"]
    assert metrics["baseline/val_pairwise_accuracy"] == report["baseline_val_pairwise_accuracy"]
    files = http_json(
        f"{api}/artifacts/list?{urllib.parse.urlencode({'run_id': run_id, 'path': 'token_rewards'})}"
    )
    assert {"token_rewards/held_out.html", "token_rewards/held_out.png"} <= {
        f["path"] for f in files["files"]
    }

    texts = ["the movie was excellent", "a boring plot"]
    pyfunc = mlflow.pyfunc.load_model(f"models:/test-token-reward@{ALIAS}")
    predicted = pyfunc.predict(texts)
    local = TokenRewardModel.load(tmp_path / "model").token_rewards(texts)
    assert len(predicted) == 2
    for row, pairs in zip(predicted, local, strict=True):
        assert row["tokens"] == [t for t, _ in pairs] and row["rewards"] == [r for _, r in pairs]
