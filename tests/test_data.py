import json
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


# --- your own data ----------------------------------------------------------------------------

COLUMNS = data.SummaryColumns("text", "summary", "doc")


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _articles(n, prefix="a"):
    return [
        {"doc": f"{prefix}{i}", "text": f" article {i} text ", "summary": f"summary {i}"} for i in range(n)
    ]


def test_own_jsonl_file_is_hash_split_by_its_id_column(tmp_path):
    _jsonl(tmp_path / "corpus/news.jsonl", _articles(40))
    source = data.summarization_source("corpus/news.jsonl", tmp_path, None, "text", "summary", "doc")
    assert source == data.SummarizationSource("file", str(tmp_path / "corpus/news.jsonl"), None, COLUMNS)
    splits = data.load_summary_splits(source, 0.2, 0.2)
    assert all(splits.values()) and sum(map(len, splits.values())) == 40
    first = splits["test"][0]
    assert data.split_of(first.id, 0.2, 0.2) == "test" and first.source == f"article {first.id[1:]} text"
    # without an id column the id is a hash of the source, so a reordered file splits the same way
    hashed = data.summarization_source(
        str(tmp_path / "corpus/news.jsonl"), "/elsewhere", None, "text", "summary"
    )
    rows = data.load_summary_splits(hashed, 0.2, 0.2)
    _jsonl(tmp_path / "corpus/news.jsonl", _articles(40)[::-1])
    assert data.load_summary_splits(hashed, 0.2, 0.2) == rows and len(rows["train"][0].id) == 16


def test_own_csv_folder_keeps_its_splits_and_order(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for split, n in (("train", 3), ("dev", 2), ("test", 2)):  # dev: the validation split's other name
        (folder / f"{split}.csv").write_text(
            "doc,text,summary\n"
            + "".join(f'{split}{i},"text, with a comma {i}",short {i}\n' for i in range(n))
        )
    source = data.summarization_source("mine", tmp_path, None, "text", "summary", "doc")
    assert source.kind == "folder"
    splits = data.load_summary_splits(source, 0.05, 0.05)
    assert [len(splits[s]) for s in data.SPLITS] == [3, 2, 2]
    assert splits["train"][2] == data.SummaryExample("train2", "text, with a comma 2", "short 2")
    assert [e.id for e in splits["validation"]] == ["dev0", "dev1"]


def test_own_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _articles(30)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "news.parquet")
    source = data.summarization_source(
        str(tmp_path / "news.parquet"), "/unused", None, "text", "summary", "doc"
    )
    splits = data.load_summary_splits(source, 0.3, 0.3)
    assert sum(map(len, splits.values())) == 30 and all(splits.values())


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing column", r"news.jsonl:2: no column 'summary' \(found: doc, text\); fix the file or set "
         "data.summarization.target_column"),
        ("empty file", r"news.jsonl: empty file \(no rows\)"),
        ("empty split", r"news.jsonl: the hash split leaves 'validation' empty \(2 rows\)"),
        ("empty target", r"news.jsonl:1: empty 'summary'"),
        ("missing split", r"mine: missing split 'test'; add one of test.jsonl, test.csv, test.parquet"),
        ("empty split file", r"validation.csv: empty file"),
    ],
)  # fmt: skip
def test_own_summaries_errors_name_the_file_and_line(tmp_path, case, message):
    path = tmp_path / "news.jsonl"
    dataset = "news.jsonl"
    if case == "missing column":
        _jsonl(path, [*_articles(1), {"doc": "x", "text": "y"}])
    elif case == "empty file":
        path.write_text("\n")
    elif case == "empty split":
        _jsonl(path, _articles(2))
    elif case == "empty target":  # a blank source is an input; a blank reference is not
        _jsonl(path, [{"doc": "x", "text": "t", "summary": "  "}])
    else:
        dataset = "mine"
        _jsonl(tmp_path / "mine/train.jsonl", _articles(2))
        (tmp_path / "mine/validation.csv").write_text("doc,text,summary\n")
        if case == "empty split file":
            _jsonl(tmp_path / "mine/test.jsonl", _articles(2))
    source = data.summarization_source(dataset, tmp_path, None, "text", "summary", "doc")
    with pytest.raises(data.DataError, match=message) as err:
        data.load_summary_splits(source, 0.05, 0.05)
    assert "\n" not in str(err.value)


def test_a_blank_source_is_an_input_like_any_other(tmp_path):
    rows = _articles(3)
    rows[1]["text"] = " \t "
    _jsonl(tmp_path / "news.jsonl", rows)
    source = data.summarization_source("news.jsonl", tmp_path, None, "text", "summary", "doc")
    examples = data.load_summary_file(source.location, source.columns)
    assert [e.source for e in examples] == ["article 0 text", "", "article 2 text"]
    assert examples[1] == data.SummaryExample("a1", "", "summary 1")


def test_any_hub_name_with_a_config_fails_offline_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    source = data.summarization_source("someone/reviews", tmp_path, "en", "body", "tldr")
    assert source == data.SummarizationSource(
        "hub", "someone/reviews", "en", data.SummaryColumns("body", "tldr", None)
    )
    preset = data.summarization_source("cnn_dailymail", tmp_path, None, None, "summary")
    assert preset.hub_config == "3.0.0" and preset.columns == data.SummaryColumns("article", "summary", "id")
    with pytest.raises(data.DataError, match="someone/reviews' split 'train' .*offline") as err:
        data.load_hub_summarization(source.location, "train", 2, source.hub_config, source.columns)
    assert "\n" not in str(err.value)
    with pytest.raises(data.DataError, match="needs data.summarization.source_column"):
        data.summarization_source("someone/reviews", tmp_path)
    with pytest.raises(data.DataError, match="does not exist"):
        data.summarization_source("./missing.csv", tmp_path, None, "a", "b")


TOPICS = ("world", "sports", "business")


def _topics(folder, rows=None, skip=()):
    """A 3-class TSV folder; labels as verbalizer words and as indices."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows or ["title\ttopic", "the summit ends\tworld", "a late goal\t1", "shares fall\tbusiness"]
    for split in data.FEW_SHOT_SPLITS:
        if split not in skip:
            (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_own_few_shot_tsv_folder_with_three_classes(tmp_path):
    splits = data.load_few_shot_folder(_topics(tmp_path / "topics"), "title", "topic", TOPICS)
    assert list(splits) == ["train", "dev", "test"]
    assert splits["train"] == [
        data.ClassificationExample("the summit ends", 0),
        data.ClassificationExample("a late goal", 1),
        data.ClassificationExample("shares fall", 2),
    ]


@pytest.mark.parametrize(
    "case,message",
    [
        ("label outside", r"topics/train.tsv:3: label 'science' is outside the verbalizers \(world, sports, "
         r"business; or 0..2\)"),
        ("index outside", r"topics/train.tsv:2: label '3' is outside the verbalizers"),
        ("missing split", r"topics: missing split 'dev'; add one of dev.tsv, dev.csv, dev.jsonl"),
        ("empty file", r"topics/train.tsv: empty file"),
        ("missing column", r"topics/train.tsv:2: no column 'title' \(found: text, topic\)"),
    ],
)  # fmt: skip
def test_own_few_shot_errors_name_the_file_and_line(tmp_path, case, message):
    rows = {
        "label outside": ["title\ttopic", "a\tworld", "b\tscience"],
        "index outside": ["title\ttopic", "a\t3"],
        "empty file": ["title\ttopic"],
        "missing column": ["text\ttopic", "a\tworld"],
    }.get(case)
    folder = _topics(tmp_path / "topics", rows, skip=("dev",) if case == "missing split" else ())
    with pytest.raises(data.DataError, match=message) as err:
        data.load_few_shot_folder(folder, "title", "topic", TOPICS)
    assert "\n" not in str(err.value)


def test_csv_and_jsonl_few_shot_splits(tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    (folder / "train.csv").write_text('sentence,label\n"bad, really",0\ngood,1\n')
    _jsonl(folder / "validation.jsonl", [{"sentence": "fine", "label": 1}])  # validation: dev's other name
    _jsonl(folder / "test.jsonl", [{"sentence": "awful", "label": "bad"}])
    splits = data.load_few_shot_folder(folder, None, "label", ("bad", "good"))  # None: sentence or text
    assert splits["train"][0] == data.ClassificationExample("bad, really", 0)
    assert splits["dev"][0].label == 1 and splits["test"][0].label == 0
    (folder / "test.csv").write_text("sentence,label\nx,0\n")
    with pytest.raises(data.DataError, match="split 'test' is in 2 files"):
        data.load_few_shot_folder(folder, None, "label", ("bad", "good"))


# A published LM-BFF split holds rows whose text is one space; they are inputs, not errors.
BLANK_ROWS = ["title\ttopic", "the summit ends\tworld", " \t1", "shares fall\tbusiness", "\tworld"]


def test_blank_text_rows_load_as_empty_inputs_and_blank_text_keeps_or_drops_them(tmp_path):
    folder = _topics(tmp_path / "topics", BLANK_ROWS)
    splits = data.load_few_shot_folder(folder, "title", "topic", TOPICS)
    assert splits["test"] == [
        data.ClassificationExample("the summit ends", 0),
        data.ClassificationExample("", 1),
        data.ClassificationExample("shares fall", 2),
        data.ClassificationExample("", 0),
    ]
    kept, blank = data.apply_blank_text(splits, "keep", str(folder))
    assert kept == splits and blank == {"train": 2, "dev": 2, "test": 2}
    dropped, blank = data.apply_blank_text(splits, "drop", str(folder))
    assert blank == {"train": 2, "dev": 2, "test": 2}
    assert dropped["test"] == [
        data.ClassificationExample("the summit ends", 0),
        data.ClassificationExample("shares fall", 2),
    ]


@pytest.mark.parametrize(
    "case,message",
    [
        ("error mode", r"topics/train.tsv:3: blank 'title' and data.prompt.blank_text is error; fill the text "
         "in, or set blank_text to keep"),
        ("missing label", r"topics/train.tsv:3: empty 'topic'; every row needs text there"),
        ("missing column", r"topics/train.tsv:2: no column 'title' \(found: text, topic\)"),
        ("empty file", r"topics/train.tsv: empty file"),
        ("dropped to empty", r"topics: every 'train' row has blank text, so data.prompt.blank_text: drop leaves "
         "the split empty; set blank_text to keep"),
    ],
)  # fmt: skip
def test_blank_text_stays_an_error_where_it_should(tmp_path, case, message):
    rows = {
        "error mode": BLANK_ROWS,
        "missing label": ["title\ttopic", "a\tworld", "b\t "],
        "missing column": ["text\ttopic", " \tworld"],
        "empty file": ["title\ttopic"],
        "dropped to empty": ["title\ttopic", " \tworld", "\tsports"],
    }[case]
    folder = _topics(tmp_path / "topics", rows)
    with pytest.raises(data.DataError, match=message) as err:
        splits = data.load_few_shot_folder(folder, "title", "topic", TOPICS, blank_ok=case != "error mode")
        data.apply_blank_text(splits, "drop", str(folder))
    assert "\n" not in str(err.value)
