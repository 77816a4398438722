import random

import pytest

from components import data


def test_repair_summary_splits_glued_sentences():
    text = 'Sales rose to $10.9bn.For the year, profits fell 2%.The U.S. firm said so."We grew." AOL.Its'
    assert data.repair_summary(text) == (
        'Sales rose to $10.9bn. For the year, profits fell 2%. The U.S. firm said so. "We grew." AOL. Its'
    )


def test_bbc_loads_both_targets(data_root):
    titles = data.load_bbc(data_root, "title")
    summaries = data.load_bbc(data_root, "summary")
    assert len(titles) == len(summaries) == 2225
    assert titles[0].id == "business/001" and titles[0].target == "Ad sales boost Time Warner profit"
    assert ".For" not in summaries[0].target
    with pytest.raises(data.DataError, match="title"):
        data.load_bbc(data_root, "headline")


def test_split_is_deterministic_and_order_independent(data_root):
    examples = data.load_bbc(data_root)
    first = data.split_examples(examples, 0.05, 0.05)
    shuffled = examples[:]
    random.Random(1).shuffle(shuffled)
    second = data.split_examples(shuffled, 0.05, 0.05)
    assert first == second
    sizes = {name: len(rows) for name, rows in first.items()}
    assert sum(sizes.values()) == 2225
    assert 60 < sizes["test"] < 170 and 60 < sizes["validation"] < 170
    ids = [set(e.id for e in rows) for rows in first.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    # another salt gives another split
    assert data.split_examples(examples, 0.05, 0.05, salt="other")["test"] != first["test"]


def test_missing_data_root_names_the_fix(tmp_path):
    with pytest.raises(data.DataError, match="data.root"):
        data.load_bbc(tmp_path)


@pytest.mark.parametrize(
    "dataset,n_train,n_test,n_classes", [("sst-2", 32, 1821, 2), ("agnews", 64, 7600, 4)]
)
def test_few_shot_splits(data_root, dataset, n_train, n_test, n_classes):
    train = data.load_fsc(data_root, dataset, 13, "train")
    test = data.load_fsc(data_root, dataset, 13, "test")
    assert len(train) == n_train and len(test) == n_test
    assert {e.label for e in train} == set(range(n_classes)) == set(range(len(data.VERBALIZERS[dataset])))
    assert all(e.text for e in test)


def test_few_shot_errors(data_root):
    with pytest.raises(data.DataError, match="unknown classification dataset"):
        data.load_fsc(data_root, "imdb", 13, "train")
    with pytest.raises(data.DataError, match="seed"):
        data.load_fsc(data_root, "sst-2", 7, "train")


def test_hub_dataset_offline_error_is_one_plain_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(data.DataError) as err:
        data.load_hub_summarization("xsum", "test", max_examples=2)
    message = str(err.value)
    assert "xsum" in message and "offline" in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_jsonl_roundtrip(tmp_path):
    rows = [data.SummaryExample("a/1", "source text", "target"), data.SummaryExample("a/2", "x", "y")]
    data.write_jsonl(tmp_path / "s.jsonl", rows)
    assert data.read_summaries(tmp_path / "s.jsonl") == rows
    with pytest.raises(data.DataError, match="dvc repro prepare"):
        data.read_summaries(tmp_path / "missing.jsonl")
