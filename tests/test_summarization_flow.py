"""The summarization loop end to end with tiny models, real Prefect (test server) and real MLflow (sqlite)."""

import json
import shutil

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

from flows import summarization as s
from flows.checkpoints import CheckpointError, load_policy
from flows.config import load_params
from flows.distributed import hardware
from flows.prepare import prepare
from tests.conftest import PROJECT_ROOT, killed_when, prepared_params

TINY = """
data:
  root: {root}
  prepared_dir: {tmp}/data
  summarization: {{max_train_examples: 24, max_eval_examples: 6}}
models:
  summarization: {{policy: tiny, reward_backbone: tiny, decoder_layers: null, reward_decoder_layers: null}}
sampling:
  summarization: {{articles_per_iteration: 10, max_source_tokens: 24, max_target_tokens: 6}}
guidance:
  summarization: {{epochs: 2, head_hidden: 16, freeze_backbone: false, lr: 0.001, val_fraction: 0.3, preference: embedding}}
policy:
  summarization: {{warmstart_steps: 2, batch_size: 4, sampled_articles: 2, reinforce_coef: 0.5}}
loop:
  summarization: {{policy_steps: 4, refit_every: 2, refit_until: 2}}
runtime: {{runs_dir: {tmp}/runs}}
"""


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, data_root, prefect_server):
    return load_params(prepared_params(tmp_path_factory.mktemp("summ"), TINY))


def _task_states(flow_state) -> dict[str, str]:
    """Task name -> final state name, for a flow run and its subflows."""
    top = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[top]))
        )
        ids = [top, *(run.id for run in children)]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


def test_pgg_loop_logs_every_iteration_and_checkpoints(tiny_config, mlflow_uri):
    rows = s.align_flow(tiny_config, "pgg")
    assert len(rows) == 2
    method_dir = s.runs_dir(tiny_config) / "pgg"
    for i in (1, 2):
        assert (method_dir / f"iter-{i}/policy/state.json").exists()
        assert json.loads((method_dir / f"iter-{i}/state.json").read_text())["metrics"]["val/rougeL"] >= 0
    assert (method_dir / "iter-1/guidance/state.json").exists()  # refit at step 0 only (refit_until 2)
    assert not (method_dir / "iter-2/guidance").exists()

    client = MlflowClient(mlflow_uri)
    run_id = (method_dir / "mlflow_run_id").read_text()
    history = client.get_metric_history(run_id, "val/rougeL")
    assert sorted(m.step for m in history) == [1, 2]
    assert [m.step for m in client.get_metric_history(run_id, "guidance/pairwise_accuracy")] == [1]
    assert [m.step for m in client.get_metric_history(run_id, "guidance/tied_lists_dropped")] == [1]
    run = client.get_run(run_id)
    assert run.data.tags["method"] == "pgg" and run.data.tags["params_hash"] == tiny_config.digest()
    assert run.data.params["guidance.summarization.aggregation"] == "avg"
    # The final policy refers to its frozen encoder on disk; the registered model holds all of it.
    assert (method_dir / "iter-2/policy/base_model.json").exists()
    summarizer = mlflow.pyfunc.load_model("models:/pgg-summarization@champion")
    summaries = summarizer.predict(["The bank raised its rates again on Tuesday."])
    assert len(summaries) == 1 and isinstance(summaries[0], str)


def test_rerun_hits_cache_for_warmstart_and_sampling(tiny_config, mlflow_uri):
    s.align_flow(tiny_config, "pgg")
    method_dir = s.runs_dir(tiny_config) / "pgg"
    for i in (1, 2):  # throw the loop's results away; the inputs stay the same
        (method_dir / f"iter-{i}/state.json").unlink()
    assert _task_states(s.warmstart_flow(tiny_config, return_state=True))["warm_start"] == "Cached"
    states = _task_states(s.align_flow(tiny_config, "pgg", return_state=True))
    assert "warm_start" not in states  # align uses the warm start on disk
    assert states["sample-and-rank"] == "Cached"
    assert states["train-pgg"] == "Completed"


def test_resume_skips_complete_iterations_and_matches(tiny_config, mlflow_uri, monkeypatch):
    first = s.align_flow(tiny_config, "mle")
    method_dir = s.runs_dir(tiny_config) / "mle"
    # Finished: the earlier policy was only a resume point, so only its state.json (curves) stays.
    assert [f.name for f in (method_dir / "iter-1/policy").iterdir()] == ["state.json"]
    assert (method_dir / "iter-2/policy/model.safetensors").exists()
    shutil.rmtree(method_dir)

    with killed_when(monkeypatch, s, "evaluate_policy", lambda policy, *_: policy.parent.name == "iter-2"):
        s.align_flow(tiny_config, "mle")
    assert (method_dir / "iter-1/policy/model.safetensors").exists()  # not finished: kept to resume from
    iter1 = (method_dir / "iter-1/policy/state.json").stat().st_mtime_ns
    second = s.align_flow(tiny_config, "mle")
    assert (method_dir / "iter-1/policy/state.json").stat().st_mtime_ns == iter1  # not redone
    assert second[-1]["val/rougeL"] == pytest.approx(first[-1]["val/rougeL"])
    assert second[-1]["policy/loss"] == pytest.approx(first[-1]["policy/loss"], rel=1e-5)

    (method_dir / "iter-2/state.json").unlink()  # a finished loop lost its last iteration: no resume point
    third = s.align_flow(tiny_config, "mle")  # so it is redone from the warm start
    assert (method_dir / "iter-1/policy/state.json").stat().st_mtime_ns != iter1
    assert third[-1]["policy/loss"] == pytest.approx(first[-1]["policy/loss"], rel=1e-5)


def test_evaluate_writes_metrics_for_methods_and_lead(tiny_config, mlflow_uri):
    s.align_flow(tiny_config, "seqpg")
    for method in ("lead", "seqpg"):
        metrics = s.evaluate_flow(tiny_config, method)
        saved = json.loads((s.metrics_dir(tiny_config) / f"{method}.json").read_text())
        assert saved == metrics and saved["n_test"] == 6 and 0 <= saved["test_rougeL"] <= 100
        rows = [
            json.loads(line) for line in s.test_predictions_file(tiny_config, method).read_text().splitlines()
        ]
        assert len({row["id"] for row in rows}) == 6  # one line per test article, for paired comparisons
        mean = sum(row["rougeL"] for row in rows) / len(rows)
        assert mean == pytest.approx(saved["test_rougeL"], abs=1e-3)


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tiny_config, tmp_path):
    with pytest.raises(CheckpointError, match="missing or incomplete"):
        load_policy(tmp_path / "nothing", frozen_encoder=True)
    warm = s.warmstart_flow(tiny_config)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in warm.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_policy(broken, frozen_encoder=True)


def test_paper_profile_code_path_with_tiny_models(tmp_path, data_root, prefect_server, mlflow_uri):
    """params-paper.yaml (live, trainable encoder; T5-style prefix) on tiny models and local data."""
    config = load_params(
        PROJECT_ROOT / "params-paper.yaml",
        {
            "data.root": str(data_root),
            "data.prepared_dir": str(tmp_path / "data"),
            "data.summarization.dataset": "bbc",
            "data.summarization.max_train_examples": 16,
            "data.summarization.max_eval_examples": 4,
            "models.summarization.policy": "tiny",
            "models.summarization.reward_backbone": "tiny",
            "policy.summarization.reinforce_coef": 0.5,  # guidance rewards samples through the live encoder
            "sampling.summarization.max_source_tokens": 32,
            "sampling.summarization.max_target_tokens": 6,
            "policy.summarization.warmstart_steps": 2,
            "policy.summarization.batch_size": 2,
            "loop.summarization.policy_steps": 2,
            "loop.summarization.refit_every": 2,
            "loop.summarization.refit_until": 0,
            "runtime.runs_dir": str(tmp_path / "runs"),
        },
    )
    assert not config.models.summarization.freeze_encoder
    assert config.policy.summarization.grad_accumulation == 4
    prepare(config)
    assert config.models.summarization.reward_backbone_kind == "seq2seq"
    rows = s.align_flow(config, "pgg")
    assert len(rows) == 1 and "val/rougeL" in rows[0] and "guidance/val_loss" in rows[0]
    assert (
        s.cache_file(config, "train") is None and not (tmp_path / "runs/summarization/encoder_cache").exists()
    )


def test_a_guidance_fit_does_not_depend_on_what_ran_before(tiny_config):
    """The reward head is initialised from the run's seed, not from the process's RNG state."""
    lists = s.sample_and_rank.fn(
        s.runs_dir(tiny_config) / "warmstart", s.split_file(tiny_config, "train"), s.cache_file(tiny_config, "train"),
        tiny_config.models.summarization, tiny_config.sampling.summarization, tiny_config.guidance.summarization,
        0, 1,
    )  # fmt: skip
    reports = []
    for state, out in ((1, "fit-a"), (2, "fit-b")):
        torch.manual_seed(state)  # another history of this process
        reports.append(s.fit_guidance.fn(
            lists, None, s.runs_dir(tiny_config) / out, tiny_config.models.summarization,
            tiny_config.guidance.summarization, tiny_config.sampling.summarization, 0, 1, hardware(tiny_config.runtime),
        ))  # fmt: skip
    assert (
        reports[0]["train_loss"] == reports[1]["train_loss"]
        and reports[0]["val_loss"] == reports[1]["val_loss"]
    )
