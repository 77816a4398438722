"""The prompt search end to end with tiny models, real Prefect (test server) and real MLflow (sqlite)."""

import json
import shutil

import pytest
from mlflow.tracking import MlflowClient

from components.task_models import VerbalizerError
from flows import prompt as p
from flows.config import load_params
from flows.prepare import prepare
from tests.conftest import killed_when, prepared_params, write_params

# Warm-up 4 lists + 2 policy steps x 2 lists, K = 3: every search method scores 24 prompts.
TINY = """
data:
  root: {root}
  prepared_dir: {tmp}/data
  summarization: {{max_train_examples: 4, max_eval_examples: 2}}
models:
  prompt: {{policy: tiny, task_model: prototype, task_model_name: tiny, reward_backbone: tiny}}
sampling:
  prompt: {{k: 3, lists_per_step: 2, warmup_lists: 4, top_k: 50}}
guidance:
  prompt: {{aggregation: sum, preference: task, lr: 0.001, epochs: 2, head_hidden: 16, batch_size: 4, val_fraction: 0.25}}
policy:
  prompt: {{adaptor_hidden: 16, lr: 0.01}}
loop:
  prompt: {{policy_steps: 2, refit_every: 1, refit_until: 1}}
eval:
  prompt: {{candidates: 5, log_every: 1, max_test_examples: 24}}
runtime: {{runs_dir: {tmp}/runs, threads: 1}}  # one thread: far faster than two on a loaded 2-core box
"""
EVALUATIONS = 24


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One MLflow store for the module (overrides conftest's): a new sqlite store costs ~10 s of migrations."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture(scope="module")
def tiny_params(tmp_path_factory, data_root, prefect_server):
    return prepared_params(tmp_path_factory.mktemp("prompt"), TINY)


@pytest.fixture(scope="module")
def tiny_config(tiny_params):
    return load_params(tiny_params)


def _steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_pgg_search_logs_every_step_and_refit_to_mlflow(tiny_config, mlflow_uri):
    rows = p.search_flow(tiny_config, "pgg")
    assert [r["step"] for r in rows] == [0, 1, 2]  # warm-up, then log_every = 1
    assert rows[-1]["evaluations"] == EVALUATIONS
    method_dir = p.runs_dir(tiny_config) / "pgg"
    assert (method_dir / "iter-1/guidance/state.json").exists()  # refit before step 1 only (refit_until 1)
    assert not (method_dir / "iter-2/guidance").exists()
    curve = json.loads((method_dir / "curve.json").read_text())
    assert len({tuple(row) for row in curve}) == 1  # `dvc plots` drops a file whose rows differ in keys
    assert [{k: v for k, v in row.items() if v is not None} for row in curve] == [
        {k: v for k, v in row.items() if v is not None} for row in rows
    ]
    assert [r["step"] for r in json.loads((method_dir / "guidance.json").read_text())] == [0]

    client = MlflowClient(mlflow_uri)
    run_id = (method_dir / "mlflow_run_id").read_text()
    assert _steps(client, run_id, "reward/mean") == [0, 1, 2]
    assert _steps(client, run_id, "best/dev_accuracy") == [0, 1, 2]
    assert _steps(client, run_id, "policy/entropy") == [1, 2]
    assert _steps(client, run_id, "guidance/online_accuracy") == [1, 2]
    assert _steps(client, run_id, "guidance/pairwise_accuracy") == [0]
    assert _steps(client, run_id, "train/policy_loss") == [1, 2]  # every real update, at its global step
    epochs = json.loads((method_dir / "iter-1/guidance/state.json").read_text())["epoch_losses"]
    assert _steps(client, run_id, "train/guidance_loss") == list(range(1, len(epochs) + 1)) and epochs
    run = client.get_run(run_id)
    assert run.data.tags["method"] == "pgg" and run.data.tags["dataset"] == "sst-2"
    assert run.data.tags["best_prompt"] == rows[-1]["best_prompt"]
    assert run.data.params["guidance.prompt.aggregation"] == "sum"
    for row in rows:
        assert row["reward/max"] >= row["reward/mean"]
        assert 0 <= row["best/dev_accuracy"] <= 100


def test_selection_picks_the_best_prompt_on_dev_and_logs_the_table(tiny_config, mlflow_uri):
    p.search_flow(tiny_config, "pgg")  # complete blocks are skipped
    metrics = p.evaluate_flow(tiny_config, "pgg")
    saved = json.loads((p.metrics_dir(tiny_config) / "pgg.json").read_text())
    assert saved == {k: v for k, v in metrics.items() if k != "prompt"}
    assert saved["n_test"] == 24 and saved["evaluations"] == EVALUATIONS
    # the trained policy's own prompts, ranked by the learned reward: no extra task-model query
    assert 0 <= saved["policy_test_accuracy"] <= 100 and saved["policy_selection_evaluations"] == 0

    client = MlflowClient(mlflow_uri)
    run_id = (p.runs_dir(tiny_config) / "pgg/mlflow_run_id").read_text()
    assert "prompts.json" in [a.path for a in client.list_artifacts(run_id)]
    table = json.loads(open(client.download_artifacts(run_id, "prompts.json")).read())
    columns = table["columns"]
    rows = [dict(zip(columns, row, strict=True)) for row in table["data"]]
    assert len(rows) == 5
    rewards = [r["train_reward"] for r in rows]
    assert rewards == sorted(rewards, reverse=True)  # candidates ranked by training reward
    best_dev = max(r["dev_accuracy"] for r in rows)
    selected = next(r for r in rows if r["dev_accuracy"] == best_dev)  # ties go to the higher reward
    assert [r["prompt"] for r in rows if r["selected"]] == [selected["prompt"]] == [metrics["prompt"]]
    assert saved["test_accuracy"] == pytest.approx(selected["test_accuracy"], abs=1e-3)
    top = sorted(rows, key=lambda r: -r["dev_accuracy"])[:3]
    assert saved["top_test_accuracy"] == pytest.approx(sum(r["test_accuracy"] for r in top) / 3, abs=1e-3)
    assert client.get_run(run_id).data.tags["selected_prompt"] == metrics["prompt"]
    # the selected prompts are saved beside the numbers and in MLflow, the headline named
    results = json.loads((p.metrics_dir(tiny_config) / "pgg_prompts.json").read_text())
    assert results["headline"] == "test_accuracy" and results["test_accuracy"]["prompt"] == metrics["prompt"]
    policy_prompt = client.get_run(run_id).data.tags["policy_prompt"]
    assert results["policy_test_accuracy"]["prompt"] == policy_prompt
    assert "0 (no task-model query)" in results["policy_test_accuracy"]["selection"]
    assert json.loads(open(client.download_artifacts(run_id, "selected_prompts.json")).read()) == results


def test_query_curve_gives_each_budget_the_policy_a_shorter_search_ends_with(
    tiny_params, tiny_config, tmp_path, mlflow_uri
):
    p.search_flow(tiny_config, "pgg")
    final = p.evaluate_flow(tiny_config, "pgg")
    curve = json.loads((p.metrics_dir(tiny_config) / "pgg_queries.json").read_text())
    assert [r["queries"] for r in curve] == [18, EVALUATIONS]  # warm-up 12, then 6 per block
    assert curve[-1] == {
        "queries": EVALUATIONS,
        **{k: v for k, v in final.items() if k not in ("prompt", "n_test") and not k.startswith("queries_")},
    }  # whole-search counts by use are the metrics' only
    client = MlflowClient(mlflow_uri)
    run_id = (p.runs_dir(tiny_config) / "pgg/mlflow_run_id").read_text()
    assert _steps(client, run_id, "queries/policy_test_accuracy") == [18, EVALUATIONS]

    # The same search stopped after one block (18 queries) ends where the curve's first point says.
    short = load_params(
        tiny_params, {"loop.prompt.policy_steps": 1, "runtime.runs_dir": str(tmp_path / "runs")}
    )
    p.search_flow(short, "pgg")
    assert p.evaluate_flow(short, "pgg")["evaluations"] == 18
    shorter = json.loads((p.metrics_dir(short) / "pgg_queries.json").read_text())
    assert shorter == [curve[0]]


def test_baselines_write_metrics_with_the_same_budget(tiny_config, mlflow_uri):
    for method in ("random", "seqpg"):
        rows = p.search_flow(tiny_config, method)
        assert rows[-1]["evaluations"] == EVALUATIONS
        assert ("policy/entropy" in rows[-1]) == (method == "seqpg")
    for method in ("none", "manual", "random", "seqpg"):
        p.evaluate_flow(tiny_config, method)
        saved = json.loads((p.metrics_dir(tiny_config) / f"{method}.json").read_text())
        assert 0 <= saved["test_accuracy"] <= 100 and saved["n_test"] == 24
        assert saved["evaluations"] == (0 if method in ("none", "manual") else EVALUATIONS)
    client = MlflowClient(mlflow_uri)
    manual = client.search_runs(
        [client.get_experiment_by_name("pgg-prompt").experiment_id], "tags.method = 'manual'"
    )
    assert manual and manual[0].data.tags["selected_prompt"] == "It was"
    saved = json.loads((p.metrics_dir(tiny_config) / "manual_prompts.json").read_text())
    assert saved["test_accuracy"]["prompt"] == "It was" and "policy_test_accuracy" not in saved


def test_resume_skips_complete_blocks_and_matches(tiny_config, mlflow_uri, monkeypatch):
    first = p.search_flow(tiny_config, "seqpg")
    method_dir = p.runs_dir(tiny_config) / "seqpg"
    last = f"iter-{tiny_config.loop.prompt.iterations}"
    # Finished: optimizer states and earlier adaptors were only resume points.
    assert not list(method_dir.glob("iter-*/optimizer.pt"))
    assert [a.parent.name for a in method_dir.glob("iter-*/adaptor.pt")] == [last]
    shutil.rmtree(method_dir)

    last_block = tiny_config.loop.prompt.iterations
    with killed_when(monkeypatch, p, "search_block", lambda method, iteration, *_: iteration == last_block):
        p.search_flow(tiny_config, "seqpg")
    assert (method_dir / "iter-1/optimizer.pt").exists()  # not finished: kept to resume from
    adaptor = (method_dir / "iter-1/state.json").stat().st_mtime_ns
    second = p.search_flow(tiny_config, "seqpg")
    assert (method_dir / "iter-1/state.json").stat().st_mtime_ns == adaptor  # not redone
    for a, b in zip(first, second, strict=True):
        assert a["best_prompt"] == b["best_prompt"]
        assert a["reward/mean"] == pytest.approx(b["reward/mean"])


def test_masked_lm_task_model_runs_the_search(tiny_params, tmp_path, mlflow_uri):
    # The tiny masked LM computes logits over the whole vocabulary at every position: keep it small.
    overrides = {
        "models.prompt.task_model": "mlm",
        "runtime.runs_dir": str(tmp_path / "runs"),
        "sampling.prompt": {"k": 2, "lists_per_step": 1, "warmup_lists": 1},
        "loop.prompt": {"policy_steps": 1, "refit_every": 1, "refit_until": 1},
        "eval.prompt.max_test_examples": 8,
    }
    config = load_params(tiny_params, overrides)
    rows = p.search_flow(config, "random")
    assert rows[-1]["evaluations"] == 4
    assert 0 <= p.evaluate_flow(config, "random")["test_accuracy"] <= 100


def test_bad_method_or_missing_search_is_a_clear_error(tiny_params, tmp_path, mlflow_uri):
    config = load_params(tiny_params, {"runtime.runs_dir": str(tmp_path / "runs")})
    with pytest.raises(ValueError, match="unknown prompt method 'mle'"):
        p.search_flow(config, "mle")
    with pytest.raises(ValueError, match="guidance.prompt.preference"):
        p.search_flow(load_params(tiny_params, {"guidance.prompt.preference": "rouge"}), "pgg")
    with pytest.raises(ValueError, match="prompt-train --method pgg"):
        p.evaluate_flow(config, "pgg")


def test_guidance_only_updates_spend_no_task_model_queries(tiny_params, tmp_path, mlflow_uri):
    overrides = {
        "runtime.runs_dir": str(tmp_path / "runs"),
        "policy.prompt": {"guidance_updates": 2, "guidance_samples": 4},
    }
    config = load_params(tiny_params, overrides)
    rows = p.search_flow(config, "pgg")
    assert rows[-1]["evaluations"] == EVALUATIONS  # the same budget as without the surrogate
    assert [r.get("policy/surrogate_updates") for r in rows] == [
        None,
        2,
        2,
    ]  # 2 per real step, 1 step per row
    for method in ("seqpg", "random"):  # the baselines rank their policy's prompts by the gap reward
        p.search_flow(config, method)
        saved = p.evaluate_flow(config, method)
        assert saved["policy_selection_evaluations"] > 0 and 0 <= saved["policy_test_accuracy"] <= 100


def test_your_own_dataset_runs_through_search_and_evaluation(tmp_path, mlflow_uri, prefect_server):
    """A 3-class TSV folder outside data.root (data.prompt.path), labels as words, params only."""
    root, folder = tmp_path / "root", tmp_path / "elsewhere/topics"
    root.mkdir()
    (root / "news.jsonl").write_text(
        "".join(json.dumps({"body": f"article {i}", "title": f"title {i}"}) + "\n" for i in range(20))
    )
    folder.mkdir(parents=True)
    rows = ["the summit ends\tworld", "a late goal\tsports", "shares fall\tbusiness"] * 2
    for split, n in (("train", 6), ("dev", 3), ("test", 3)):
        (folder / f"{split}.tsv").write_text("headline\ttopic\n" + "\n".join(rows[:n]) + "\n")
    overrides = {
        "data.summarization": {"dataset": "news.jsonl", "source_column": "body", "target_column": "title",
                               "validation_fraction": 0.3, "test_fraction": 0.3},
        "data.prompt": {"dataset": "topics", "path": str(folder), "text_column": "headline",
                        "label_column": "topic", "verbalizers": ["world", "sports", "business"]},
        "eval.prompt.manual_prompts": {"topics": "Topic:"},
    }  # fmt: skip
    config = load_params(write_params(tmp_path, TINY.format(root=root, tmp=tmp_path)), overrides)
    prepare(config)
    p.check_verbalizers(config)
    rows = p.search_flow(config, "pgg")
    assert rows[-1]["evaluations"] == EVALUATIONS
    for method in ("pgg", "manual"):
        p.evaluate_flow(config, method)
        saved = json.loads((tmp_path / "metrics/prompt/topics-13" / f"{method}.json").read_text())
        assert saved["n_test"] == 3 and saved["test_accuracy"] in (0.0, 33.333, 66.667, 100.0)
    run_id = (p.runs_dir(config) / "pgg/mlflow_run_id").read_text()
    assert MlflowClient(mlflow_uri).get_run(run_id).data.tags["dataset"] == "topics"
    two_tokens = load_params(write_params(tmp_path, TINY.format(root=root, tmp=tmp_path)), {
        **overrides, "data.prompt.verbalizers": ["world", "sports", "supercalifragilistic"]})  # fmt: skip
    with pytest.raises(VerbalizerError, match="'supercalifragilistic' is not one token"):
        p.check_verbalizers(two_tokens)


def test_refits_learn_from_every_block_resampled_with_trainable_layers(tiny_params, tmp_path, mlflow_uri):
    overrides = {
        "runtime.runs_dir": str(tmp_path / "runs"),
        "loop.prompt.refit_until": 2,  # refits before steps 1 and 2
        "guidance.prompt": {"window_blocks": None, "resampled_lists": 2, "freeze_backbone": False,
                            "trainable_layers": 1},
    }  # fmt: skip
    config = load_params(tiny_params, overrides)
    p.search_flow(config, "pgg")
    method_dir = p.runs_dir(config) / "pgg"
    records = p._read_prompts(method_dir / "iter-0" / "prompts.jsonl")
    assert sorted({r["batch"] for r in records}) == [0, 1]  # warm-up: 2 score calls of 6 prompts
    first, second = (
        json.loads((method_dir / f"iter-{i}" / "state.json").read_text())["guidance"] for i in (1, 2)
    )
    # 2 lists from each scored batch, one whole batch held out: warm-up 2 batches, then 2 + 1
    assert (first["n_train"], first["n_val"]) == (2, 2) and (second["n_train"], second["n_val"]) == (4, 2)
    settings = json.loads((method_dir / "iter-2" / "guidance" / "reward_model.json").read_text())
    assert settings["trainable_layers"] == 1 and not settings["freeze_backbone"]


def test_authors_protocol_updates_on_the_learned_reward_and_counts_queries_by_use(
    tiny_params, tmp_path, mlflow_uri
):
    """pgg_update learned: pgg's steps update on guidance samples only, refits after the first stream
    fresh prompts, 4 prompts per step (not a multiple of K = 3: resampled lists), the authors' pick."""
    overrides = {
        "runtime.runs_dir": str(tmp_path / "runs"),
        "sampling.prompt.prompts_per_step": 4,
        "loop.prompt.refit_until": 2,  # refits before steps 1 and 2: the second streams fresh prompts
        "guidance.prompt": {"resampled_lists": 3, "fresh_prompts": 8},
        "policy.prompt": {"pgg_update": "learned", "guidance_samples": 5},
    }
    config = load_params(tiny_params, overrides)
    rows = p.search_flow(config, "pgg")
    method_dir = p.runs_dir(config) / "pgg"
    assert not (method_dir / "iter-1" / p.FRESH_FILE).exists()  # the first fit learns from the warm-up
    fresh = p._read_prompts(method_dir / "iter-2" / p.FRESH_FILE)
    assert len(fresh) == 8 and sorted({r["batch"] for r in fresh}) == [0, 1]  # 2 score calls of 4
    assert all(r["step"] == 1 for r in fresh)  # sampled after step 1, before step 2
    assert rows[-1]["guidance/online_accuracy"] >= 0  # the step's 4 scored prompts measure the guidance
    metrics = p.evaluate_flow(config, "pgg")
    warmup, steps = 12, 2 * 4  # warm-up: 4 lists of K = 3 in batches of 4; 2 steps of 4
    assert metrics["evaluations"] == warmup + steps + 8
    assert metrics["authors_selection_evaluations"] == 4 and 0 <= metrics["authors_test_accuracy"] <= 100
    # warm-up and fresh prompts fed a fit; block 1's step prompts fed the second fit, block 2's only logged
    assert (metrics["queries_training"], metrics["queries_guidance"], metrics["queries_logging"]) == (
        0, warmup + 4 + 8, 4,
    )  # fmt: skip
    assert metrics["queries_selection"] == metrics["policy_selection_evaluations"] + 4 == 4
    saved = json.loads((p.metrics_dir(config) / "pgg_prompts.json").read_text())
    assert saved["authors_test_accuracy"]["prompt"]

    p.search_flow(config, "seqpg")
    seqpg = p.evaluate_flow(config, "seqpg")
    assert (seqpg["queries_training"], seqpg["queries_guidance"]) == (steps, 0)
    assert seqpg["queries_selection"] == warmup + seqpg["policy_selection_evaluations"] + 4
