"""Queued DVC experiments: two `-S` variants queued, run by `dvc queue start` in DVC's temp copies of the
repository, both listed by `dvc exp show` with their metrics. The corpora are DVC-tracked data inside the
repository (corpora.dvc), which is what lets a temp copy under .dvc/tmp/exps check them out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import PROJECT_ROOT


def _project_repo(tmp_path: Path, data_root: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("components", "flows"):
        shutil.copytree(PROJECT_ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(PROJECT_ROOT / name, repo)
    shutil.copytree(data_root, repo / "corpora")  # what `make corpora` does
    return repo


def _names_and_metrics(shown: list[dict]) -> dict[str, tuple[int, float]]:
    """experiment name -> (lead_k it ran with, its test ROUGE-L), from `dvc exp show --json`."""
    out = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                data = revision.get("data") or {}
                params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                metrics = data.get("metrics", {}).get("metrics/summarization/lead.json", {}).get("data", {})
                if metrics:
                    k = params["eval"]["summarization"]["lead_k"]
                    out[revision.get("name") or experiment.get("name")] = (k, metrics["test_rougeL"])
    return out


def test_queued_experiments_run_in_temp_copies_and_show_up(tmp_path, data_root, prefect_server):
    repo = _project_repo(tmp_path, data_root)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": prefect_server,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }  # fmt: skip
    env.pop("PYTHONPATH", None)  # each temp copy imports its own flows/ (python -m runs from its root)

    def run(*args, check=True):
        result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert not check or result.returncode == 0, f"{args}: {result.stdout[-1500:]}{result.stderr[-1500:]}"
        return result

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("dvc", "add", "-q", "corpora")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    assert not run("git", "ls-files", "corpora").stdout  # the data stays out of git
    for k in (4, 8):
        run("dvc", "exp", "run", "--queue", "-n", f"lead{k}", "-S", f"eval.summarization.lead_k={k}",
            "evaluate_summarization@lead")  # fmt: skip
    run("dvc", "queue", "start", "-j", "1")
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        status = run("dvc", "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    run("dvc", "queue", "stop", check=False)
    assert "Failed" not in status, run("dvc", "queue", "logs", "lead4", check=False).stdout[-3000:]

    shown = json.loads(run("dvc", "exp", "show", "--json").stdout)
    results = _names_and_metrics(shown)
    assert set(results) == {"lead4", "lead8"}, status
    assert results["lead4"][0] == 4 and results["lead8"][0] == 8
    assert results["lead4"][1] != results["lead8"][1]  # the -S value reached the stage
    assert not (repo / "metrics").exists()  # the workspace itself was left alone
