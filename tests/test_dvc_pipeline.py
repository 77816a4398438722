"""`dvc repro` of the summarization stages with tiny models, in a throwaway git repo.

Checks the user's path end to end: stages run the flows, metrics land where `dvc metrics show` reads
them, and a guidance parameter change makes only the pgg stages stale (the MLE baseline stays cached).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import PROJECT_ROOT

TINY = {
    "data.summarization.max_train_examples": 24,
    "data.summarization.max_eval_examples": 6,
    "models.summarization.policy": "tiny",
    "models.summarization.reward_backbone": "tiny",
    "models.summarization.decoder_layers": None,
    "models.summarization.reward_decoder_layers": None,
    "sampling.summarization.articles_per_iteration": 8,
    "sampling.summarization.max_source_tokens": 24,
    "sampling.summarization.max_target_tokens": 6,
    "guidance.summarization.epochs": 1,
    "guidance.summarization.head_hidden": 16,
    "guidance.summarization.freeze_backbone": False,
    "guidance.summarization.preference": "embedding",
    "policy.summarization.warmstart_steps": 2,
    "policy.summarization.batch_size": 4,
    "loop.summarization.policy_steps": 2,
    "loop.summarization.refit_every": 1,
    "loop.summarization.refit_until": 1,
}


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[leaf] = value


def test_dvc_repro_summarization_stages(tmp_path, data_root, prefect_server, mlflow_uri):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("components", "flows"):
        shutil.copytree(PROJECT_ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dvc.yaml", repo)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(data_root)
    for key, value in TINY.items():
        _set(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": prefect_server,
        "PYTHONPATH": str(repo),
    }

    def run(*args):
        result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{args}: {result.stdout[-1500:]} {result.stderr[-1500:]}"
        return result.stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    stages = [f"evaluate_summarization@{m}" for m in ("lead", "warmstart", "pgg", "mle", "seqpg")]
    run("dvc", "repro", *stages)
    assert (repo / "runs/summarization/pgg/iter-2/policy/state.json").exists()
    shown = run("dvc", "metrics", "show", "--json")
    for method in ("lead", "pgg", "mle", "seqpg"):
        assert f"metrics/summarization/{method}.json" in shown
    assert "Data and pipelines are up to date" in run("dvc", "repro", *stages)

    params["guidance"]["summarization"]["aggregation"] = "sum"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run("dvc", "status", *stages)
    assert "align_pgg" in status and "evaluate_summarization@pgg" in status
    for cached in ("align_mle", "align_seqpg", "summarize_warmstart", "evaluate_summarization@mle"):
        assert cached not in status, status
