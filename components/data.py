"""Datasets: BBC News Summary and 16-shot classification from a local data root, hub corpora by name.

Every loader returns plain dataclasses, so the rest of pgg never sees file formats.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

SPLITS = ("train", "validation", "test")
BBC_FILE = Path("bbc_news_summary") / "bbc_news_summary.jsonl"
FSC_DIR = Path("fsc") / "16-shot"
FSC_SEEDS = (13, 21, 42, 87, 100)
# Hub corpora: name -> (load_dataset args, source field, target field).
HUB_SUMMARIZATION = {
    "cnn_dailymail": (("cnn_dailymail", "3.0.0"), "article", "highlights"),
    "xsum": (("xsum",), "document", "summary"),
}
# The published files name the text column "sentence" or "text" (agnews test differs from its train).
FSC_TEXT_COLUMNS = ("sentence", "text")
# The verbalizers of the discrete-prompt literature (RLPrompt, the paper's reference code).
VERBALIZERS = {
    "sst-2": ("terrible", "great"),
    "agnews": ("World", "Sports", "Business", "Tech"),
}
# The published hub splits are named train/validation/test already.
SummaryTarget = Literal["title", "summary"]


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


# --- Hub summarization corpora ----------------------------------------------------------------


def load_hub_summarization(name: str, split: str, max_examples: int | None = None) -> list[SummaryExample]:
    """cnn_dailymail 3.0.0 (article -> highlights) or xsum (document -> summary) via datasets."""
    if name not in HUB_SUMMARIZATION:
        raise DataError(f"unknown summarization dataset {name!r}: use bbc, {', '.join(HUB_SUMMARIZATION)}")
    args, source_field, target_field = HUB_SUMMARIZATION[name]
    import datasets  # slow import; only hub runs need it

    hub_split = split if max_examples is None else f"{split}[:{max_examples}]"
    try:
        rows = datasets.load_dataset(*args, split=hub_split)
    except Exception as err:  # datasets raises many types for "no network"; all mean the same here
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else f"{type(err).__name__}"
        raise DataError(
            f"cannot load hub dataset {name!r} ({why}) and it is not in the local HF cache: "
            "run on a machine with network and unset HF_HUB_OFFLINE, or use data.summarization.dataset: bbc"
        ) from None
    return [
        SummaryExample(id=str(row.get("id", i)), source=row[source_field], target=row[target_field])
        for i, row in enumerate(rows)
    ]


# --- 16-shot classification -------------------------------------------------------------------


def fsc_dir(data_root: str | os.PathLike, dataset: str, seed: int) -> Path:
    if dataset not in VERBALIZERS:
        raise DataError(f"unknown classification dataset {dataset!r}: use one of {', '.join(VERBALIZERS)}")
    return Path(data_root) / FSC_DIR / dataset / f"16-{seed}"


def load_fsc(
    data_root: str | os.PathLike, dataset: str, seed: int, split: str
) -> list[ClassificationExample]:
    """One split ('train', 'dev' or 'test') of the LM-BFF 16-shot data."""
    if split not in ("train", "dev", "test"):
        raise DataError(f"unknown few-shot split {split!r}: use train, dev or test")
    path = fsc_dir(data_root, dataset, seed) / f"{split}.tsv"
    if not path.exists():
        raise DataError(
            f"few-shot data not found at {path}: check data.root and the seed (one of {FSC_SEEDS})"
        )
    n_classes = len(VERBALIZERS[dataset])
    examples = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        column = next((name for name in FSC_TEXT_COLUMNS if name in (reader.fieldnames or ())), "text")
        for number, row in enumerate(reader, start=2):
            try:
                label = int(row["label"])
                text = row[column]
            except (KeyError, TypeError, ValueError):
                raise DataError(
                    f"{path}:{number}: expected columns {column!r} and an integer 'label'"
                ) from None
            if not 0 <= label < n_classes:
                raise DataError(f"{path}:{number}: label {label} outside 0..{n_classes - 1}")
            examples.append(ClassificationExample(text=text.strip(), label=label))
    return examples


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
