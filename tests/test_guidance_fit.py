"""The standalone guidance fit: TRL / K-wise input, validation, the saved model, the CLI stage."""

from __future__ import annotations

import json

import pytest
import torch

from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec
from components.preference_data import implicit_prompt, load_preference_data, split_held_out
from components.preferences import PreferenceError
from components.reward_model import TokenRewardModel
from components.synthetic_preferences import write_synthetic_pairs
from flows.__main__ import main
from flows.config import load_params
from tests.conftest import write_params


def _params(tmp_path, data, **fit):
    settings = {
        "data": str(data), "backbone": "tiny", "head_hidden": 16, "epochs": 2, "baseline_epochs": 2,
        "output_dir": str(tmp_path / "out" / "model"), "report": str(tmp_path / "out" / "report.json"),
        **fit,
    }  # fmt: skip
    text = json.dumps({"guidance_fit": settings, "tracking": {"register_models": False}})
    return write_params(tmp_path / "params", text)


def test_fit_on_a_tiny_trl_file_and_load_it_back(tmp_path, prefect_server, mlflow_uri):
    data = write_synthetic_pairs(tmp_path / "prefs.jsonl", n=20)
    params = _params(tmp_path, data)
    assert main(["guidance-fit", "--params", str(params)]) == 0
    config = load_params(params)
    report = json.loads(config.guidance_fit.report.read_text())
    assert report["n_val"] == 4 and report["n_train"] == 16
    assert 0 <= report["val_pairwise_accuracy"] <= 1 and 0 <= report["baseline_val_pairwise_accuracy"] <= 1
    folder = config.guidance_fit.output_dir
    assert not (folder / "backbone").exists()  # frozen: a reference to the base weights, not a copy

    model = TokenRewardModel.load(folder)  # one call, tokenizer included
    _, held_out = split_held_out(load_preference_data(data), 0.2, config.runtime.seed)
    trainer = GuidanceTrainer(model, model.tokenizer, config.guidance_fit.trainer_config(0))
    assert trainer.evaluate(held_out)["pairwise_accuracy"] == pytest.approx(report["val_pairwise_accuracy"])
    texts = [held_out[0].candidates[0]]
    first, second = model.token_rewards(texts), TokenRewardModel.load(folder).token_rewards(texts)
    assert [t for t, _ in first[0]] == model.tokenizer.tokenize(texts[0])
    assert first == second


BAD_RECORDS = {
    "missing key": ({"prompt": "p", "chosen": "a"}, "missing key(s) rejected"),
    "empty candidate": ({"prompt": "p", "chosen": " ", "rejected": "b"}, "'chosen' is empty"),
    "same pair": ({"prompt": "p", "chosen": "a b", "rejected": "a b"}, "chosen == rejected"),
    "non-finite score": ('{"source": "s", "candidates": ["a", "b"], "scores": [1, NaN]}', "finite numbers"),
    "empty kwise candidate": (
        {"source": "s", "candidates": ["a", ""], "scores": [1, 0]},
        "candidate 2 is empty",
    ),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_malformed_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    record, message = BAD_RECORDS[case]
    good = (
        '{"source": "s0", "candidates": ["x", "y"], "scores": [1, 0]}'
        if "kwise" in case or "score" in case
        else ('{"prompt": "p", "chosen": "good", "rejected": "bad"}')
    )
    line = record if isinstance(record, str) else json.dumps(record)
    data = tmp_path / "prefs.jsonl"
    data.write_text(f"{good}\n{good}\n{line}\n{good}\n")
    params = _params(tmp_path, data)
    assert main(["guidance-fit", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{data}:3:" in err and message in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()


def test_trl_forms_conversational_implicit_parquet_and_offline_hub(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    user = [{"role": "user", "content": "What color is the sky?"}]
    rows = [
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        {"prompt": user, "chosen": [{"role": "assistant", "content": "It is blue."}],
         "rejected": [{"role": "assistant", "content": "It is green."}]},
        {"chosen": [*user, {"role": "assistant", "content": "It is blue."}],
         "rejected": [*user, {"role": "assistant", "content": "It is green."}]},
    ]  # fmt: skip
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lists = load_preference_data(path)
    assert [r.candidates for r in lists[:2]] == [(" blue.", " green."), ("blue.", "green.")]
    assert lists[1].source == "The sky is" and lists[2].source == "user: What color is the sky?"
    assert lists[2].candidates == lists[3].candidates == ("It is blue.", "It is green.")
    assert lists[3].source == lists[2].source and all(r.scores == (1.0, 0.0) for r in lists)
    assert implicit_prompt("ab cd", "ab ce") == ("ab", "cd", "ce")  # never splits a word

    parquet = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:2]), parquet)
    assert load_preference_data(parquet) == lists[:2]
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "a", "rejected": None}]), parquet)
    with pytest.raises(PreferenceError, match=r"prefs.parquet:row 1: missing key\(s\) rejected"):
        load_preference_data(parquet)
    with pytest.raises(PreferenceError, match="offline"):
        load_preference_data("someone/no-such-preferences")


def test_frozen_save_is_a_checked_reference(tmp_path):
    _, model = TokenRewardModel.from_spec(ModelSpec("tiny", "causal_lm"), head_hidden=8, freeze_backbone=True)
    model.save(tmp_path / "frozen")
    assert not (tmp_path / "frozen" / "backbone").exists()
    settings = json.loads((tmp_path / "frozen" / "reward_model.json").read_text())
    settings["backbone_sha256"] = "0" * 64
    (tmp_path / "frozen" / "reward_model.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="changed since this head was fitted"):
        TokenRewardModel.load(tmp_path / "frozen")
    trainable = TokenRewardModel.from_spec(ModelSpec("tiny", "causal_lm"), head_hidden=8)[1]
    with torch.no_grad():
        next(trainable.backbone.parameters()).add_(1.0)  # a trained backbone: its weights are saved
    trainable.save(tmp_path / "trained")
    loaded = TokenRewardModel.load(tmp_path / "trained")
    assert (tmp_path / "trained" / "backbone").is_dir()
    assert torch.equal(next(loaded.backbone.parameters()), next(trainable.backbone.parameters()))
    assert loaded.token_rewards(["the movie"]) == trainable.eval().token_rewards(["the movie"])


def test_export_of_logged_sample_tables_reads_back_as_kwise(tmp_path, mlflow_uri):
    import mlflow

    from flows import reporting
    from flows.export_rankings import export

    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_experiment("export")
    rows = [
        {"article": 1, "source": "art one", "candidate": "a", "score": 0.5},
        {"article": 1, "source": "art one", "candidate": "b", "score": 0.1},
        {"article": 2, "source": "art two", "candidate": "c", "score": 0.3},
        {"article": 2, "source": "art two", "candidate": "d", "score": 0.4},
    ]
    with mlflow.start_run() as run:
        reporting.log_sample_table(rows, "iter-1")
        reporting.log_sample_table(rows[:2], "iter-2")
    out = tmp_path / "own.jsonl"
    assert export(run.info.run_id, str(out)) == 3
    lists = load_preference_data(out, "kwise")
    assert [(r.source, r.candidates, r.scores) for r in lists[:2]] == [
        ("art one", ("a", "b"), (0.5, 0.1)),
        ("art two", ("c", "d"), (0.3, 0.4)),
    ]
    mlflow.set_tracking_uri(None)
