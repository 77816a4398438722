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
from prefect import task

from components.data import DataError
from flows import stage_code
from flows import summarization as s
from flows.common import CONTENT_CACHE
from flows.config import load_params
from flows.prepare import PREPARED_WITH, check_prepared, prepare, summarization_dir
from flows.provenance import made_under, record_file
from tests.conftest import PROJECT_ROOT, write_params
from tests.services import tiny_params

# The MLE loop, tiny and fast: lr high and no warm-up, so a changed loss changes what it learns.
TINY_DVC = """
data:
  root: {root}
  summarization: {{max_train_examples: 24, max_eval_examples: 6}}
models:
  summarization: {{policy: tiny, reward_backbone: tiny, decoder_layers: null, reward_decoder_layers: null}}
sampling:
  summarization: {{articles_per_iteration: 10, max_source_tokens: 24, max_target_tokens: 6}}
policy:
  summarization: {{warmstart_steps: 2, batch_size: 4, lr: 0.02, warmup_steps: 0}}
loop:
  summarization: {{policy_steps: 4, refit_every: 2, refit_until: 2}}
runtime: {{seed: 0, device: cpu}}
"""
MLE_LOSS = "    return -_per_sequence_mean(token_logp, mask).mean()\n"


def _repo(tmp_path: Path, data_root: Path) -> Path:
    repo = tmp_path / "repo"
    for folder in ("components", "flows"):
        shutil.copytree(PROJECT_ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dvc.yaml", repo)
    write_params(repo, TINY_DVC.format(root=data_root))
    return repo


def _loop_losses(repo: Path) -> list[float]:
    return [
        json.loads((repo / f"runs/summarization/mle/iter-{i}/state.json").read_text())["metrics"][
            "policy/loss"
        ]
        for i in (1, 2)
    ]


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

    def results():
        state = repo / "runs/summarization/mle/iter-1/state.json"
        metrics = json.loads((repo / "metrics/summarization/mle.json").read_text())
        return _loop_losses(repo), metrics, state.stat().st_mtime_ns

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "repro", "evaluate_summarization@mle")
    losses, metrics, trained = results()

    losses_module = repo / "components/policy_losses.py"
    _edit(losses_module, MLE_LOSS, MLE_LOSS.rstrip("\n") + "  # a comment-only edit\n")
    run("dvc", "repro", "evaluate_summarization@mle")
    same_losses, same_metrics, retrained = results()
    assert retrained != trained, "a comment-only edit to the loop's code served the persisted iterations"
    assert same_losses == pytest.approx(losses, rel=1e-6) and same_metrics == metrics

    run("dvc", "repro", "-f", "-s", "align_mle")
    forced_losses, _, forced = results()
    assert forced != retrained, "dvc repro -f served the persisted iterations"
    assert forced_losses == pytest.approx(losses, rel=1e-6)

    _edit(losses_module, "    return -_per_sequence_mean(token_logp, mask).mean()", "    return 1000.0 * _per_sequence_mean(token_logp, mask).mean()")  # fmt: skip
    run("dvc", "repro", "evaluate_summarization@mle")
    new_losses, new_metrics, _ = results()
    assert all(new < 0 < old for new, old in zip(new_losses, losses, strict=True)), (new_losses, losses)
    assert new_metrics != metrics


@pytest.fixture
def code_copy(tmp_path, monkeypatch) -> Path:
    """The closure computed over a copy of components/ and flows/, so the test may edit them."""
    for folder in ("components", "flows"):
        shutil.copytree(
            PROJECT_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    monkeypatch.setattr(stage_code, "PROJECT_ROOT", tmp_path)
    return tmp_path


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


def test_data_prepared_by_other_code_stops_the_flows(tmp_path, data_root, prefect_server):
    config = load_params(tiny_params(tmp_path, data_root))
    prepare(config)
    check_prepared(config)  # the same code: fine
    record = summarization_dir(config) / PREPARED_WITH
    written = json.loads(record.read_text())
    record.write_text(json.dumps({**written, "code": "other"}))
    with pytest.raises(DataError, match="prepared by other code.*dvc repro prepare"):
        check_prepared(config)
