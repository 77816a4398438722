"""The prepare stage through real Prefect (test server) and real DVC in a throwaway git repo."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.data import DataError
from flows.config import load_params
from flows.prepare import check_inputs, check_prepared, prepare
from tests.conftest import PROJECT_ROOT, write_params


def test_prepare_flow_writes_every_split(tmp_path, data_root, prefect_server):
    config = load_params(
        write_params(tmp_path, f"data:\n  root: {data_root}\n  prepared_dir: {tmp_path}/prepared\n")
    )
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


def test_a_split_prepared_with_other_params_stops_the_flows(tmp_path, data_root, prefect_server):
    """A stale data/ (prepared with another test_fraction) would be read silently: the CLI exits 2 with
    one line naming the param and the fix, before any flow runs or anything is written."""
    project = tmp_path / "project"
    prepared = f"data:\n  root: {data_root}\n  prepared_dir: {project}/prepared\n"
    prepare(load_params(write_params(project, prepared)))
    check_prepared(load_params(project / "params.yaml"))  # the same params pass
    params = write_params(project, prepared + "  summarization:\n    test_fraction: 0.2\n")
    with pytest.raises(DataError, match="test_fraction=0.05 but params say 0.2"):
        check_prepared(load_params(params))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "flows", "summarize-warmstart", "--params", str(params)],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "python -m flows prepare" in result.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


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

    # your own prompt folder outside the repo and data.root: only params name it, and repro still runs
    own = tmp_path / "elsewhere/topics"
    own.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (own / f"{split}.csv").write_text("text,label\nthe summit,world\na goal,sports\n")
    text = (repo / "params.yaml").read_text().replace("    path: null ", f"    path: {own} ")
    text = text.replace("    dataset: sst-2 ", "    dataset: topics ").replace(
        "    verbalizers: null ", "    verbalizers: [world, sports] "
    )
    (repo / "params.yaml").write_text(
        text.replace('      agnews: "Category:"\n', '      agnews: "Category:"\n      topics: "Topic:"\n')
    )
    third = run("dvc", "repro", "prepare")
    assert third.returncode == 0, third.stderr[-2000:]
    assert (repo / "data/prompt/topics/13/test.jsonl").read_text().count("\n") == 2


def _own_data(root: Path) -> None:
    """A summarization JSONL under data.root and a 3-class prompt TSV folder beside it."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"doc": f"n{i}", "body": f"article number {i}", "headline": f"headline {i}"} for i in range(60)]
    (root / "news.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "topics").mkdir()
    for split in ("train", "dev", "test"):
        (root / "topics" / f"{split}.tsv").write_text(
            "text\tlabel\nthe summit\tworld\na goal\t1\nshares\tbusiness\n"
        )


OWN_DATA = """
data:
  root: {root}
  prepared_dir: {root}/../prepared  # relative paths would resolve against the project root
  summarization: {{dataset: news.jsonl, source_column: body, target_column: headline, id_column: doc,
                  validation_fraction: 0.2, test_fraction: 0.2}}
  prompt: {{dataset: topics, verbalizers: [world, sports, business]}}
eval:
  prompt: {{manual_prompts: {{topics: "Topic:"}}}}
"""


def test_prepare_writes_your_own_data_beside_the_presets(tmp_path, prefect_server):
    _own_data(tmp_path / "own")
    config = load_params(write_params(tmp_path, OWN_DATA.format(root=tmp_path / "own")))
    counts = prepare(config)
    assert sum(counts[f"summarization/{s}"] for s in ("train", "validation", "test")) == 60
    assert counts["prompt/topics/13/train"] == 3
    assert not any(key.startswith(("prompt/sst-2", "prompt/agnews")) for key in counts)  # not under this root
    rows = [
        json.loads(line)
        for line in (tmp_path / "prepared/prompt/topics/13/dev.jsonl").read_text().splitlines()
    ]
    assert rows == [
        {"text": "the summit", "label": 0},
        {"text": "a goal", "label": 1},
        {"text": "shares", "label": 2},
    ]
    test = (tmp_path / "prepared/summarization/test.jsonl").read_text().splitlines()
    assert json.loads(test[0])["id"].startswith("n") and json.loads(test[0])["source"].startswith("article")


def _prepare_cli(params: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "flows", "prepare", "--params", str(params)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_bad_own_data_is_one_line_exit_2_and_nothing_written(tmp_path):
    own = tmp_path / "own"
    _own_data(own)
    params = write_params(tmp_path, OWN_DATA.format(root=own))
    lines = (own / "news.jsonl").read_text().splitlines()
    (own / "news.jsonl").write_text("\n".join([*lines[:4], '{"doc": "n4", "body": "text only"}', *lines[5:]]))
    result = _prepare_cli(params, tmp_path)  # the CLI reads the data before any flow run
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"error: {own}/news.jsonl:5: no column 'headline' (found: doc, body); fix the file or set "
        "data.summarization.target_column\n"
    )
    assert not (tmp_path / "prepared").exists()


def test_own_prompt_data_is_checked_before_the_flow_runs(tmp_path):
    own = tmp_path / "own"
    _own_data(own)
    config = load_params(write_params(tmp_path, OWN_DATA.format(root=own)))
    check_inputs(config)
    (own / "topics/test.tsv").write_text("text\tlabel\nthe summit\tworld\na match\tscience\n")
    with pytest.raises(DataError, match=r"topics/test.tsv:3: label 'science' is outside the verbalizers"):
        check_inputs(config)
    (own / "topics/dev.tsv").unlink()
    with pytest.raises(DataError, match=r"topics: missing split 'dev'"):
        check_inputs(config)
    assert not (tmp_path / "prepared").exists()
