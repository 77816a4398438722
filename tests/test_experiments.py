"""Deployment runs are experiments: honest tags, a champion that moves on merit, overrides that own their errors."""

from __future__ import annotations

import re
import shutil
import uuid

import mlflow
import pytest
from prefect import flow

from flows import deploy
from flows.config import ParamsError
from flows.tracking import MODEL_ALIAS, crown_on_merit, data_hash, git_state
from tests.conftest import write_params

# its own registered model: the session store may already hold pgg-summarization (and a champion) from
# the loop tests
MODEL = f"pgg-summarization-{uuid.uuid4().hex[:8]}"


def _version(client: mlflow.MlflowClient, rouge: float | None, data: str) -> str:
    """A registered version whose run trained on ``data`` and reached validation ROUGE-L ``rouge``."""
    with mlflow.start_run(tags={"data_hash": data}) as run:
        if rouge is not None:
            mlflow.log_metric("val/rougeL", rouge, step=1)
    if not client.search_registered_models(f"name = '{MODEL}'"):
        client.create_registered_model(MODEL)
    return client.create_model_version(MODEL, f"{run.info.artifact_uri}/policy", run.info.run_id).version


def _champion(client: mlflow.MlflowClient) -> str:
    return client.get_model_version_by_alias(MODEL, MODEL_ALIAS).version


def test_champion_moves_only_to_a_better_model_on_the_same_data(mlflow_uri):
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_experiment("champion-on-merit")  # not the experiment an earlier test left active
    client = mlflow.MlflowClient()

    first = _version(client, 20.0, "data-a")
    assert crown_on_merit(MODEL, first).startswith("took") and _champion(client) == first

    worse = _version(client, 19.0, "data-a")
    assert "does not beat" in crown_on_merit(MODEL, worse) and _champion(client) == first

    tiny = _version(client, 90.0, "data-b")  # a quick run on other data: higher, but not comparable
    assert "other data" in crown_on_merit(MODEL, tiny) and _champion(client) == first

    better = _version(client, 21.0, "data-a")
    assert crown_on_merit(MODEL, better).startswith("took") and _champion(client) == better

    tags = client.get_model_version(MODEL, worse).tags  # every version records why it was not crowned
    assert tags["val/rougeL"] == "19.0" and tags["data_hash"] == "data-a"
    assert tags["champion_decision"].startswith(f"@{MODEL_ALIAS} stays on v{first}")
    mlflow.set_tracking_uri(None)


def test_data_hash_is_the_files_content_wherever_they_are(tmp_path):
    one, two = tmp_path / "one" / "summarization", tmp_path / "two" / "summarization"
    one.mkdir(parents=True)
    (one / "train.jsonl").write_text('{"source": "a", "target": "b"}\n')
    (one / "test.jsonl").write_text('{"source": "c", "target": "d"}\n')
    shutil.copytree(one, two)
    assert data_hash(one) == data_hash(two)  # the same data in another run's folder
    (two / "train.jsonl").write_text('{"source": "a", "target": "B"}\n')
    assert data_hash(one) != data_hash(two)
    (two / "train.jsonl").rename(two / "validation.jsonl")
    assert data_hash(one) != data_hash(two)  # a file's name is part of what was read


def test_git_state_names_the_commit_and_whether_the_tree_was_clean():
    state = git_state()
    assert len(state["git_commit"]) == 40 and state["git_clean"] in ("true", "false")


def test_a_bad_override_names_the_override_not_the_params_file(tmp_path):
    params = write_params(tmp_path)
    with pytest.raises(ParamsError) as caught:
        deploy._config(str(params), {"loop.summarization.policy_steps": -3})
    message = str(caught.value)
    assert message.startswith("bad override loop.summarization.policy_steps:") and "\n" not in message
    assert "overrides parameter" in message and str(params) not in message

    params.write_text("loop: [\n")  # the file's own error still names the file
    with pytest.raises(ParamsError, match="params.yaml: line"):
        deploy._config(str(params), {"loop.summarization.policy_steps": 2})


def test_a_run_writes_only_inside_its_own_folder(tmp_path):
    folder = deploy.experiment_dir("0b5c")
    config = deploy._config(str(write_params(tmp_path)), {"eval.summarization.max_examples": 4}, folder)
    written = [
        config.data.prepared_dir,
        config.runtime.runs_dir,
        config.guidance_fit.output_dir,
        config.guidance_fit.report,
    ]
    assert all(path.is_relative_to(deploy.EXPERIMENTS_DIR / "0b5c") for path in written)
    assert config.eval.summarization.max_examples == 4


@flow(name="broken-stage")
def _broken_stage(method: str) -> None:
    raise ValueError("the stage's own error")


@flow(name="pgg-test-deployment")
def _deployment(params_path: str):
    return deploy._experiment(params_path, {}, lambda config: _broken_stage("pgg"))


def test_a_failed_stage_is_named_in_the_parents_failed_state(prefect_server, tmp_path):
    state = _deployment(str(write_params(tmp_path)), return_state=True)
    assert state.is_failed()
    assert re.fullmatch(  # the stage, its method, its error and where its traceback is: one line
        r"stage broken-stage\[pgg\]: Failed: .*the stage's own error.* \(logs: prefect flow-run logs [0-9a-f-]{36}\)",
        state.message,
    ), state.message
