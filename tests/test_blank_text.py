"""data.prompt.blank_text end to end: a few-shot dataset whose train and test splits hold blank rows (as
published LM-BFF splits do) is prepared and evaluated under each mode, with tiny models, real Prefect and
real MLflow."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from flows import prompt as p
from flows.config import load_params
from flows.prepare import prepare
from tests.conftest import PROJECT_ROOT, merge, write_params
from tests.test_prompt_flow import TINY

# LM-BFF's format: sentence<TAB>label, nothing quoted; a blank review is one space.
SPLITS = {
    "train": ["a gripping film\t1", " \t0", "dull and tedious\t0", "great fun\t1", "\t1", "badly acted\t0"],
    "dev": ["charming\t1", "lifeless\t0", "moving\t1", "awful\t0"],
    "test": ["a fine film\t1", "tedious\t0", " \t1", "wonderful\t1", "boring\t0"],
}


def _config(tmp_path, blank_text: str, task_model: str = "prototype"):
    """Your own 2-class dataset at data.prompt.path, and a summarization file (so no preset is prepared)."""
    root, folder = tmp_path / "root", tmp_path / "reviews"
    root.mkdir()
    (root / "news.jsonl").write_text(
        "".join(json.dumps({"body": f"article {i}", "title": f"title {i}"}) + "\n" for i in range(20))
    )
    folder.mkdir()
    for split, rows in SPLITS.items():
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    own = {
        "data": {"summarization": {"dataset": "news.jsonl", "source_column": "body", "target_column": "title",
                                   "validation_fraction": 0.3, "test_fraction": 0.3},
                 "prompt": {"dataset": "reviews", "path": str(folder), "verbalizers": ["terrible", "great"],
                            "blank_text": blank_text}},
        "models": {"prompt": {"task_model": task_model}},
        "eval": {"prompt": {"manual_prompts": {"reviews": "It was"}}},
    }  # fmt: skip
    tiny = yaml.safe_load(TINY.format(root=root, tmp=tmp_path))
    return load_params(write_params(tmp_path, yaml.safe_dump(merge(tiny, own))))


def _prepared(config, split: str) -> list[dict]:
    path = config.data.prepared_dir / "prompt/reviews/13" / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _prepare(config, capsys) -> tuple[list[int], list[str]]:
    """Rows written per split, and the lines prepare printed."""
    counts = prepare(config)
    return [counts[f"prompt/reviews/13/{s}"] for s in SPLITS], capsys.readouterr().out.splitlines()


def _evaluate(config, method: str) -> int:
    """Evaluate ``method``; the test-set row count its metrics file gives (its accuracy checked against it)."""
    p.evaluate_flow(config, method)
    saved = json.loads((p.metrics_dir(config) / f"{method}.json").read_text())
    n = saved["n_test"]
    assert saved["test_accuracy"] in {round(100 * right / n, 3) for right in range(n + 1)}
    return n


@pytest.mark.parametrize(
    "blank_text,written,line",
    [
        ("keep", [6, 4, 5], "reviews/13: kept rows with blank text (train 2, dev 0, test 1); "
         "data.prompt.blank_text: drop or error to change that"),
        ("drop", [4, 4, 4], "reviews/13: dropped rows with blank text (train 2, dev 0, test 1); "
         "data.prompt.blank_text: keep or error to change that"),
    ],
)  # fmt: skip
def test_prepare_keeps_or_drops_blank_rows_and_the_metrics_count_what_was_evaluated(
    tmp_path, mlflow_uri, prefect_server, capsys, blank_text, written, line
):
    config = _config(tmp_path, blank_text)
    assert _prepare(config, capsys) == (written, [line])
    test = [row["text"] for row in _prepared(config, "test")]
    assert test == ["a fine film", "tedious", *([""] if blank_text == "keep" else []), "wonderful", "boring"]
    methods = ["manual"]
    if blank_text == "keep":
        rows = p.search_flow(config, "pgg")  # every step scores the blank training rows
        assert all(row["reward/mean"] == row["reward/mean"] for row in rows)  # no NaN
        methods += ["pgg", "none"]
    assert [_evaluate(config, method) for method in methods] == [len(test)] * len(methods)


def test_keep_evaluates_the_blank_test_row_with_the_prefix_lm_task_model(
    tmp_path, mlflow_uri, prefect_server, capsys
):
    config = _config(tmp_path, "keep", task_model="prefix_lm")
    _prepare(config, capsys)
    assert _evaluate(config, "manual") == 5


def test_error_stops_prepare_in_one_line_exit_2_and_nothing_written(tmp_path):
    config = _config(tmp_path, "error")
    params = tmp_path / "params.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "flows", "prepare", "--params", str(params)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"error: {tmp_path}/reviews/train.tsv:3: blank 'sentence' and data.prompt.blank_text is error; fill "
        "the text in, or set blank_text to keep (score it as an empty input) or drop (leave the row out)\n"
    )
    assert not config.data.prepared_dir.exists()


@pytest.mark.parametrize("value", ["strict", "", "Keep"])
def test_blank_text_is_keep_drop_or_error(tmp_path, value):
    from flows.config import ParamsError

    with pytest.raises(ParamsError, match="blank_text"):
        load_params(write_params(tmp_path), {"data.prompt.blank_text": value})
