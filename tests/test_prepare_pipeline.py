"""The prepare stage through real Prefect (test server) and real DVC in a throwaway git repo."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from flows.config import load_params
from flows.prepare import prepare
from tests.conftest import PROJECT_ROOT, write_params


def test_prepare_flow_writes_every_split(tmp_path, data_root, prefect_server):
    config = load_params(write_params(tmp_path, f"data:\n  root: {data_root}\n  prepared_dir: prepared\n"))
    counts = prepare(config)
    assert (
        counts["summarization/train"] + counts["summarization/validation"] + counts["summarization/test"]
        == 2225
    )
    assert counts["prompt/sst-2/13/train"] == 32 and counts["prompt/agnews/100/test"] == 7600
    first = (tmp_path / "prepared/summarization/test.jsonl").read_text()
    assert json.loads(first.splitlines()[0]).keys() == {"id", "source", "target"}
    assert json.loads((tmp_path / "prepared/stats.json").read_text()) == counts
    prepare(config)  # rerun: same bytes
    assert (tmp_path / "prepared/summarization/test.jsonl").read_text() == first


def _project_copy(tmp_path: Path, data_root: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("components", "flows"):
        shutil.copytree(PROJECT_ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dvc.yaml", repo)
    params = (PROJECT_ROOT / "params.yaml").read_text().replace("root: corpora ", f"root: {data_root} ")
    (repo / "params.yaml").write_text(params)
    return repo


def test_dvc_repro_prepare_then_up_to_date(tmp_path, data_root, prefect_server):
    repo = _project_copy(tmp_path, data_root)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": prefect_server,  # reuse the test server instead of one per stage
        "PYTHONPATH": str(repo),
    }

    def run(*args):
        return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=300)

    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        assert run(*command).returncode == 0
    first = run("dvc", "repro", "prepare")
    assert first.returncode == 0, first.stderr[-2000:]
    assert (repo / "data/summarization/train.jsonl").exists()
    assert (repo / "data/prompt/sst-2/13/dev.jsonl").exists()
    assert "prepare" in (repo / "dvc.lock").read_text()

    start = time.perf_counter()
    second = run("dvc", "repro", "prepare")
    assert second.returncode == 0
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    assert time.perf_counter() - start < 30

    # a data param change makes the stage stale again
    text = (repo / "params.yaml").read_text().replace("split_salt: pgg", "split_salt: other")
    (repo / "params.yaml").write_text(text)
    status = run("dvc", "status", "prepare")
    assert "params.yaml" in status.stdout and "modified" in status.stdout
