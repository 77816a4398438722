"""Datasets: BBC News Summary and 16-shot classification from a local data root, your own files, hub corpora.

Every loader returns plain dataclasses, so the rest of pgg never sees file formats. Your own data is
read whole and checked before anything uses it: the first problem (a missing column, an empty file or
split, a label outside the verbalizers) stops the read with a one-line ``DataError`` naming the file
and line. A blank input text (a classification row's text, a summary's source) is an input, not a
problem: published few-shot splits hold such rows, and their test sets stay comparable only if they
load as published (``data.prompt.blank_text`` keeps, drops or refuses them).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

SPLITS = ("train", "validation", "test")
FEW_SHOT_SPLITS = ("train", "dev", "test")
BBC_FILE = Path("bbc_news_summary") / "bbc_news_summary.jsonl"
FSC_DIR = Path("fsc") / "16-shot"
FSC_SEEDS = (13, 21, 42, 87, 100)
# File formats of your own data, and the other name a split may go by (Hugging Face says validation,
# LM-BFF says dev).
SUMMARY_SUFFIXES = (".jsonl", ".csv", ".parquet")
FEW_SHOT_SUFFIXES = (".tsv", ".csv", ".jsonl")
SPLIT_ALIASES = {"validation": ("validation", "dev"), "dev": ("dev", "validation")}
# The published files name the text column "sentence" or "text" (agnews test differs from its train).
FSC_TEXT_COLUMNS = ("sentence", "text")
# The verbalizers of the discrete-prompt literature (RLPrompt, the paper's reference code).
VERBALIZERS = {
    "sst-2": ("terrible", "great"),
    "agnews": ("World", "Sports", "Business", "Tech"),
}
SummaryTarget = Literal["title", "summary"]
# What a blank classification text does: keep it as an input "" (the default), drop its row, or stop.
BlankText = Literal["keep", "drop", "error"]


class DataError(ValueError):
    """Input data is missing or malformed; the message says what to fix."""


@dataclass(frozen=True)
class SummaryExample:
    id: str
    source: str
    target: str


@dataclass(frozen=True)
class ClassificationExample:
    text: str
    label: int


@dataclass(frozen=True)
class SummaryColumns:
    """Where a table keeps each field; ``id`` None: the id is a hash of the source text."""

    source: str
    target: str
    id: str | None


# Hub presets: name -> (hub config name, columns). Their splits are named train/validation/test already.
HUB_SUMMARIZATION = {
    "cnn_dailymail": ("3.0.0", SummaryColumns("article", "highlights", "id")),
    "xsum": (None, SummaryColumns("document", "summary", "id")),
}
SUMMARIZATION_PRESETS = ("bbc", *HUB_SUMMARIZATION)


@dataclass(frozen=True)
class SummarizationSource:
    """What ``data.summarization`` names: the bbc preset (``location``: the data root), a local file
    (hash split), a local folder of train/validation/test files, or a hub dataset (``location``: its name)."""

    kind: Literal["bbc", "file", "folder", "hub"]
    location: str
    hub_config: str | None = None
    columns: SummaryColumns | None = None


def summarization_source(
    dataset: str,
    data_root: str | os.PathLike,
    hub_config: str | None = None,
    source_column: str | None = None,
    target_column: str | None = None,
    id_column: str | None = None,
) -> SummarizationSource:
    """Resolve ``dataset``: a preset, a path (absolute or under ``data_root``) or a hub name.

    A name is a path when it ends in .jsonl/.csv/.parquet, starts with '.', '/' or '~', or exists under
    ``data_root``; anything else is a hub dataset. Columns not given come from the preset."""
    if dataset == "bbc":
        return SummarizationSource("bbc", str(data_root))
    preset_config, preset = HUB_SUMMARIZATION.get(dataset, (None, None))
    if preset is None and (source_column is None or target_column is None):
        raise DataError(
            f"dataset {dataset!r} needs data.summarization.source_column and target_column "
            f"(only the presets {', '.join(SUMMARIZATION_PRESETS)} know their columns)"
        )
    columns = SummaryColumns(
        source_column or preset.source,
        target_column or preset.target,
        id_column if id_column is not None or preset is None else preset.id,
    )
    path = Path(dataset).expanduser()
    path = path if path.is_absolute() else Path(data_root) / path
    if path.suffix in SUMMARY_SUFFIXES or dataset.startswith((".", "/", "~")) or path.exists():
        if not path.exists():
            raise DataError(
                f"summarization data {path} does not exist: data.summarization.dataset is a file or "
                "folder under data.root (or an absolute path), a preset or a hub dataset name"
            )
        return SummarizationSource("folder" if path.is_dir() else "file", str(path), None, columns)
    return SummarizationSource("hub", dataset, hub_config or preset_config, columns)


# --- BBC News Summary -------------------------------------------------------------------------

_GLUED_SENTENCE = re.compile(r"(?<=[A-Za-z0-9%)\]'\"][.!?])(?=[\"']?[A-Z][a-z])")


def repair_summary(text: str) -> str:
    """Put back the space the published summaries lost between sentences ('$10.9bn.For' -> '$10.9bn. For').

    Only a full stop followed by a capitalised word counts, so 'U.S.' and '10.9' stay whole.
    """
    return _GLUED_SENTENCE.sub(" ", text)


def load_bbc(data_root: str | os.PathLike, target: SummaryTarget = "title") -> list[SummaryExample]:
    if target not in ("title", "summary"):
        raise DataError(f"unknown BBC target {target!r}: use 'title' or 'summary'")
    path = Path(data_root) / BBC_FILE
    if not path.exists():
        raise DataError(
            f"BBC data not found at {path}: set data.root in params.yaml to the folder holding {BBC_FILE}"
        )
    examples = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
                text = row[target]
                examples.append(
                    SummaryExample(
                        id=row["id"],
                        source=row["article"].strip(),
                        target=repair_summary(text.strip()) if target == "summary" else text.strip(),
                    )
                )
            except (json.JSONDecodeError, KeyError, AttributeError) as err:
                raise DataError(
                    f"{path}:{number}: malformed BBC record ({err}); expected JSON with id/article/{target}"
                ) from None
    return examples


def split_of(example_id: str, validation_fraction: float, test_fraction: float, salt: str = "pgg") -> str:
    """Assign a split from a hash of the id: deterministic, and stable when the file is reordered."""
    digest = hashlib.sha256(f"{salt}:{example_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def split_examples(
    examples: Iterable[SummaryExample], validation_fraction: float, test_fraction: float, salt: str = "pgg"
) -> dict[str, list[SummaryExample]]:
    splits: dict[str, list[SummaryExample]] = {name: [] for name in SPLITS}
    for example in examples:
        splits[split_of(example.id, validation_fraction, test_fraction, salt)].append(example)
    for name in SPLITS:  # sorted by id, so the order of the raw file never matters
        splits[name].sort(key=lambda e: e.id)
    return splits


# --- your own files ---------------------------------------------------------------------------


def read_jsonl(path: Path, error: type[Exception]) -> Iterator[tuple[int, object]]:
    """(line number, record) for each non-blank line of a JSONL file; a line that is not JSON raises
    ``error`` naming ``file:line``."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(
                    f"{path}:{number}: not valid JSON ({err.msg}); write one JSON object per line"
                ) from None
            yield number, record


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) for each record of a .jsonl, .csv, .tsv or .parquet file; ``where`` is ``file:line``
    (``file:row N`` for Parquet). Raises DataError on an unreadable or empty file."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    count = 0
    if path.suffix == ".jsonl":
        for number, row in read_jsonl(path, DataError):
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            count += 1
            yield f"{path}:{number}", row
    elif path.suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:  # LM-BFF's TSVs quote nothing
            tsv = path.suffix == ".tsv"
            reader = csv.DictReader(handle, **({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}))
            for row in reader:
                count += 1
                yield f"{path}:{reader.line_num}", row
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq  # datasets' dependency; only Parquet input needs it

        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several types for a file that is not Parquet
            raise DataError(f"{path}: not a readable Parquet file ({type(err).__name__})") from None
        for number, row in enumerate(table.to_pylist(), start=1):
            count += 1
            yield f"{path}:row {number}", row
    else:
        raise DataError(f"{path}: unknown format {path.suffix!r}")
    if count == 0:
        raise DataError(f"{path}: empty file (no rows); every split needs at least one example")


def _text(row: dict, column: str, where: str, key: str, blank_ok: bool = False) -> str:
    """The stripped text in ``column``; a missing column, or empty text unless ``blank_ok``, names the
    file, line and key."""
    value = row.get(column)
    if value is None:
        found = ", ".join(str(name) for name in row if name is not None)
        raise DataError(f"{where}: no column {column!r} (found: {found}); fix the file or set {key}")
    text = str(value).strip()
    if not text and not blank_ok:
        raise DataError(f"{where}: empty {column!r}; every row needs text there")
    return text


def _source_id(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def load_summary_file(path: str | os.PathLike, columns: SummaryColumns) -> list[SummaryExample]:
    """Every row of a .jsonl, .csv or .parquet file; the id is the id column, else a hash of the source.
    A blank source is an input ("") like any other; the target and the id need text."""
    examples = []
    for where, row in _rows(Path(path)):
        source = _text(row, columns.source, where, "data.summarization.source_column", blank_ok=True)
        target = _text(row, columns.target, where, "data.summarization.target_column")
        example_id = (
            _text(row, columns.id, where, "data.summarization.id_column")
            if columns.id
            else _source_id(source)
        )
        examples.append(SummaryExample(id=example_id, source=source, target=target))
    return examples


def split_files(
    folder: str | os.PathLike, splits: tuple[str, ...], suffixes: tuple[str, ...]
) -> dict[str, Path]:
    """split -> its one file in ``folder`` (``{split}{suffix}``; validation and dev name the same split)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    files = {}
    for split in splits:
        names = SPLIT_ALIASES.get(split, (split,))
        found = [folder / f"{name}{suffix}" for name in names for suffix in suffixes]
        found = [path for path in found if path.is_file()]
        if not found:
            wanted = ", ".join(f"{split}{suffix}" for suffix in suffixes)
            raise DataError(f"{folder}: missing split {split!r}; add one of {wanted}")
        if len(found) > 1:
            names = ", ".join(path.name for path in found)
            raise DataError(f"{folder}: split {split!r} is in {len(found)} files ({names}); keep one")
        files[split] = found[0]
    return files


def load_summary_splits(
    source: SummarizationSource,
    validation_fraction: float,
    test_fraction: float,
    salt: str = "pgg",
    target: SummaryTarget = "title",
) -> dict[str, list[SummaryExample]]:
    """train/validation/test of a local source: the bbc preset or a file (hash split of the id), or a
    folder's own split files (their order kept). An empty split is an error."""
    if source.kind == "folder":
        files = split_files(source.location, SPLITS, SUMMARY_SUFFIXES)
        return {split: load_summary_file(path, source.columns) for split, path in files.items()}
    if source.kind == "bbc":
        examples = load_bbc(source.location, target)
    elif source.kind == "file":
        examples = load_summary_file(source.location, source.columns)
    else:
        raise DataError(f"{source.location!r} is a hub dataset; load it with load_hub_summarization")
    splits = split_examples(examples, validation_fraction, test_fraction, salt)
    for split, rows in splits.items():
        if not rows:
            raise DataError(
                f"{source.location}: the hash split leaves {split!r} empty ({len(examples)} rows); add rows "
                f"or raise data.summarization.{split}_fraction"
            )
    return splits


# --- Hub summarization corpora ----------------------------------------------------------------


def load_hub_summarization(
    name: str,
    split: str,
    max_examples: int | None = None,
    hub_config: str | None = None,
    columns: SummaryColumns | None = None,
) -> list[SummaryExample]:
    """One split of a hub dataset via datasets: a preset (cnn_dailymail 3.0.0: article -> highlights,
    xsum: document -> summary) or any name with ``hub_config`` and ``columns``."""
    preset_config, preset = HUB_SUMMARIZATION.get(name, (None, None))
    columns = columns or preset
    if columns is None:
        raise DataError(f"hub dataset {name!r} needs data.summarization.source_column and target_column")
    import datasets  # slow import; only hub runs need it

    hub_split = split if max_examples is None else f"{split}[:{max_examples}]"
    try:
        rows = datasets.load_dataset(name, hub_config or preset_config, split=hub_split)
    except Exception as err:  # datasets raises many types for "no network"; all mean the same here
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else f"{type(err).__name__}"
        raise DataError(
            f"cannot load hub dataset {name!r} split {split!r} ({why}) and it is not in the local HF cache: "
            "run on a machine with network and unset HF_HUB_OFFLINE, or use data.summarization.dataset: bbc "
            "(or a file or folder under data.root)"
        ) from None
    where = f"hub dataset {name!r} split {split!r}"
    missing = [c for c in (columns.source, columns.target, columns.id) if c and c not in rows.column_names]
    if missing:
        raise DataError(
            f"{where}: no column {missing[0]!r} (found: {', '.join(rows.column_names)}); "
            "set data.summarization.source_column/target_column/id_column"
        )
    if len(rows) == 0:
        raise DataError(f"{where}: empty split")
    return [
        SummaryExample(
            id=str(row[columns.id]) if columns.id else _source_id(row[columns.source]),
            source=row[columns.source],
            target=row[columns.target],
        )
        for row in rows
    ]


# --- few-shot classification ------------------------------------------------------------------


def fsc_dir(data_root: str | os.PathLike, dataset: str, seed: int) -> Path:
    if dataset not in VERBALIZERS:
        raise DataError(f"unknown classification dataset {dataset!r}: use one of {', '.join(VERBALIZERS)}")
    return Path(data_root) / FSC_DIR / dataset / f"16-{seed}"


def load_fsc(
    data_root: str | os.PathLike, dataset: str, seed: int, split: str, blank_ok: bool = True
) -> list[ClassificationExample]:
    """One split ('train', 'dev' or 'test') of the LM-BFF 16-shot data (blank_ok: see load_classification)."""
    if split not in FEW_SHOT_SPLITS:
        raise DataError(f"unknown few-shot split {split!r}: use train, dev or test")
    path = fsc_dir(data_root, dataset, seed) / f"{split}.tsv"
    if not path.exists():
        raise DataError(
            f"few-shot data not found at {path}: check data.root and the seed (one of {FSC_SEEDS})"
        )
    return load_classification(path, None, "label", VERBALIZERS[dataset], blank_ok)


def load_classification(
    path: str | os.PathLike,
    text_column: str | None,
    label_column: str,
    verbalizers: tuple[str, ...],
    blank_ok: bool = True,
) -> list[ClassificationExample]:
    """Every row of a .tsv, .csv or .jsonl file. ``text_column`` None: 'sentence' or 'text', whichever
    the file has. A label is a verbalizer word or its index 0..C-1. Empty or whitespace-only text loads
    as "" (``apply_blank_text`` keeps or drops it); ``blank_ok`` False: it stops the read."""
    examples = []
    classes = {word: index for index, word in enumerate(verbalizers)}
    column = text_column
    for where, row in _rows(Path(path)):
        if column is None:
            column = next((name for name in FSC_TEXT_COLUMNS if name in row), FSC_TEXT_COLUMNS[0])
        text = _text(row, column, where, "data.prompt.text_column", blank_ok=True)
        if not text and not blank_ok:
            raise DataError(
                f"{where}: blank {column!r} and data.prompt.blank_text is error; fill the text in, or set "
                "blank_text to keep (score it as an empty input) or drop (leave the row out)"
            )
        value = str(_text(row, label_column, where, "data.prompt.label_column"))
        label = classes.get(value)
        if label is None and value.lstrip("-").isdigit() and 0 <= int(value) < len(verbalizers):
            label = int(value)
        if label is None:
            raise DataError(
                f"{where}: label {value!r} is outside the verbalizers ({', '.join(verbalizers)}; or 0.."
                f"{len(verbalizers) - 1}); fix the row or data.prompt.verbalizers"
            )
        examples.append(ClassificationExample(text=text, label=label))
    return examples


def load_few_shot_folder(
    folder: str | os.PathLike,
    text_column: str | None,
    label_column: str,
    verbalizers: tuple[str, ...],
    blank_ok: bool = True,
) -> dict[str, list[ClassificationExample]]:
    """train/dev/test of your own classification data: one .tsv, .csv or .jsonl file per split."""
    files = split_files(folder, FEW_SHOT_SPLITS, FEW_SHOT_SUFFIXES)
    return {
        split: load_classification(path, text_column, label_column, verbalizers, blank_ok)
        for split, path in files.items()
    }


def apply_blank_text(
    splits: dict[str, list[ClassificationExample]], blank_text: BlankText, where: str
) -> tuple[dict[str, list[ClassificationExample]], dict[str, int]]:
    """(the splits ``blank_text`` leaves, per split the number of rows with blank text). keep: as read;
    drop: without those rows, and a split left empty is an error; error: the loader already refused them."""
    blank = {split: sum(not e.text for e in examples) for split, examples in splits.items()}
    if blank_text != "drop":
        return splits, blank
    kept = {split: [e for e in examples if e.text] for split, examples in splits.items()}
    for split, examples in kept.items():
        if not examples:
            raise DataError(
                f"{where}: every {split!r} row has blank text, so data.prompt.blank_text: drop leaves the "
                "split empty; set blank_text to keep, or fill the text in"
            )
    return kept, blank


# --- prepared files ---------------------------------------------------------------------------


def write_jsonl(path: str | os.PathLike, records: Iterable) -> None:
    """Write dataclass records as JSON lines atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_summaries(path: str | os.PathLike) -> list[SummaryExample]:
    return [SummaryExample(**row) for row in _read_jsonl(path)]


def read_classification(path: str | os.PathLike) -> list[ClassificationExample]:
    return [ClassificationExample(**row) for row in _read_jsonl(path)]


def _read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"prepared data {path} is missing: run `dvc repro prepare` first")
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
