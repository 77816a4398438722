"""What may be reused, and when (#37, #38): a result is reused only if it was made by the same code and
params. Real DVC in a temporary copy of the repository, real Prefect (test server), tiny models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect import task

from components.data import DataError
from flows import stage_code
from flows import summarization as s
from flows.common import CONTENT_CACHE
from flows.config import load_params
from flows.prepare import check_prepared, prepare
from flows.provenance import made_under, record_file
from tests.conftest import PROJECT_ROOT
from tests.services import tiny_params

MLE_LOSS = "    return -_per_sequence_mean(token_logp, mask).mean()"  # components/policy_losses.py:mle_loss


def _repo(tmp_path: Path, data_root: Path) -> Path:
    repo = tmp_path / "repo"
    for folder in ("components", "flows"):
        shutil.copytree(PROJECT_ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dvc.yaml", repo)
    params = yaml.safe_load(tiny_params(repo, data_root, methods="mle").read_text())
    params["data"]["prepared_dir"], params["runtime"]["runs_dir"] = "data", "runs"  # DVC outs: in the repo
    # a warm start long enough to write words (test ROUGE-L 3.7, not 0) and a fast MLE loop, so a changed
    # loss changes the metric
    params["policy"]["summarization"] |= {
        "warmstart_steps": 30, "warmstart_lr": 0.01, "lr": 0.02, "warmup_steps": 0
    }  # fmt: skip
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def _loop_results(repo: Path) -> list[dict]:
    """Each iteration's metrics in state.json (losses, validation ROUGE), wall-clock seconds left out."""
    states = [json.loads((repo / f"runs/summarization/mle/iter-{i}/state.json").read_text()) for i in (1, 2)]
    return [{k: v for k, v in st["metrics"].items() if not k.startswith("seconds/")} for st in states]


def _assert_same(rows: list[dict], expected: list[dict]) -> None:
    assert len(rows) == len(expected)
    for row, old in zip(rows, expected, strict=True):
        assert row == pytest.approx(old, rel=1e-6)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer holds {old!r}: update the test"
    path.write_text(text.replace(old, new))


def test_a_code_edit_or_a_forced_repro_recomputes_the_loop(tmp_path, data_root, prefect_server):
    """`dvc repro` after an edit to a component the loop runs, and `dvc repro -f`, retrain the persisted
    loop: a comment-only edit gives the same results, a behaviour-changing one new losses and metrics."""
    repo = _repo(tmp_path, data_root)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": prefect_server,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYTHONPATH": str(repo),  # the stages import the copy's code, edits included
        "OMP_NUM_THREADS": "1",
    }

    def run(*args):
        done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done

    def trained_at() -> int:
        return (repo / "runs/summarization/mle/iter-1/state.json").stat().st_mtime_ns

    def test_metrics() -> dict:
        return json.loads((repo / "metrics/summarization/mle.json").read_text())

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "repro", "evaluate_summarization@mle")
    results, metrics, trained = _loop_results(repo), test_metrics(), trained_at()
    assert metrics["test_rougeL"] > 0  # a metric that can change

    losses_module = repo / "components/policy_losses.py"
    _edit(losses_module, MLE_LOSS, MLE_LOSS + "  # a comment-only edit")
    run("dvc", "repro", "align_mle")
    assert trained_at() != trained, "a comment-only edit to the loop's code served the persisted iterations"
    _assert_same(_loop_results(repo), results)
    retrained = trained_at()

    run("dvc", "repro", "-f", "-s", "align_mle")
    assert trained_at() != retrained, "dvc repro -f served the persisted iterations"
    _assert_same(_loop_results(repo), results)

    _edit(
        losses_module, MLE_LOSS, "    return 1000.0 * _per_sequence_mean(token_logp, mask).mean()"
    )  # -1000x
    run("dvc", "repro", "evaluate_summarization@mle")
    new_losses = [row["policy/loss"] for row in _loop_results(repo)]
    assert all(loss < 0 for loss in new_losses) and all(row["policy/loss"] > 0 for row in results), new_losses
    assert test_metrics()["test_rougeL"] != metrics["test_rougeL"]


@pytest.fixture
def code_copy(tmp_path, monkeypatch) -> Path:
    """The closure computed over a copy of components/ and flows/, so the test may edit them."""
    for folder in ("components", "flows"):
        shutil.copytree(
            PROJECT_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    monkeypatch.setattr(stage_code, "PROJECT_ROOT", tmp_path)
    return tmp_path


def test_the_code_hash_is_the_files_content_not_their_place(code_copy, monkeypatch):
    copied = stage_code.code_hash("align_pgg")  # the same files in another folder, with new timestamps
    monkeypatch.setattr(stage_code, "PROJECT_ROOT", PROJECT_ROOT)
    assert stage_code.code_hash("align_pgg") == copied
    assert stage_code.code_hash("align_mle") == copied  # one closure per flow module
    assert stage_code.code_hash("prompt_pgg") != copied


def test_the_task_cache_misses_after_an_edit_to_any_module_in_the_closure(code_copy, prefect_server):
    def double(value: int, marker: str) -> int:
        return 2 * value

    double.__module__ = "flows.guidance_fit"  # a task of that module: its closure decides the key
    cached = task(double, name="double-cached", cache_policy=CONTENT_CACHE, persist_result=True)

    def state() -> str:
        return cached(21, str(code_copy), return_state=True).name

    closure = stage_code.module_files("flows.guidance_fit", *stage_code.CLI)
    assert {"components/guidance_trainer.py", "flows/guidance_fit.py", "flows/common.py"} <= set(closure)
    assert state() == "Completed" and state() == "Cached"
    for name in closure:
        with (code_copy / name).open("a") as module:
            module.write("\n# an edit\n")
        assert state() == "Completed", f"an edit to {name} left the task cache valid"
    with (code_copy / "components/prompt_trainer.py").open("a") as module:  # not in its closure
        module.write("\n# an edit\n")
    assert state() == "Cached"


def test_a_warm_start_made_under_other_params_is_not_reused_by_align(
    tmp_path, data_root, prefect_server, mlflow_uri
):
    params = tiny_params(tmp_path, data_root, methods="mle")
    config = load_params(params)
    prepare(config)
    other = load_params(params, {"policy.summarization.warmstart_steps": 3})
    s.warmstart_flow(other)  # e.g. a deployment run with overrides, in the same folders
    warm = s.runs_dir(config) / "warmstart"
    assert json.loads((warm / "state.json").read_text())["steps"] == 3

    s.align_flow(config, "mle")
    assert json.loads((warm / "state.json").read_text())["steps"] == 2  # made again under config's params
    assert made_under(warm, s._warm_start_made_by(config))
    assert not made_under(warm, s._warm_start_made_by(other))
    for _, cache, made_by in s._encoder_caches(config):
        assert made_under(cache, made_by)

    record_file(warm).unlink()  # no record (interrupted, or made by hand): not trusted either
    assert s._warm_start_on_disk(config) == warm and made_under(warm, s._warm_start_made_by(config))


def test_data_prepared_by_other_code_stops_the_flows(code_copy, tmp_path, data_root, prefect_server):
    config = load_params(tiny_params(tmp_path, data_root))
    prepare(config)
    check_prepared(config)  # the same code: fine
    with (code_copy / "components/data.py").open("a") as module:  # the prepare stage's code
        module.write("\n# an edit\n")
    with pytest.raises(DataError, match="prepared by other code.*dvc repro prepare"):
        check_prepared(config)
