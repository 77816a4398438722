"""ROUGE F1 through the local ``evaluate`` module in ``components/metric_modules/rouge``.

Never ``evaluate.load("rouge")``: that fetches a script from the hub. This module loads the
metric file by path, so it works offline.

``rougeLsum`` scores summary-level LCS over sentences, which ``rouge_score`` finds by splitting
on newlines. Texts that already contain newlines are used as they are; otherwise they are split
after ``.``, ``!`` or ``?`` followed by whitespace (a plain rule, no NLTK punkt data needed).
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from pathlib import Path

METRIC_PATH = Path(__file__).resolve().parent / "metric_modules" / "rouge" / "rouge.py"
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# One shared EvaluationModule is not thread-safe (compute() tears down shared state); parallel task
# runners (Prefect threads, Dask) evaluate concurrently, so calls take turns.
_COMPUTE_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _metric():
    import evaluate  # ~10 s to import: the CLI and config checks that import this module never need it

    return evaluate.load(str(METRIC_PATH), keep_in_memory=True)


def sentences_per_line(text: str) -> str:
    """One sentence per line, as rougeLsum expects; texts with newlines are kept as they are."""
    text = text.strip()
    if "\n" in text:
        return text
    return "\n".join(s for s in _SENTENCE_END.split(text) if s)


def _check(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; pass one reference per prediction"
        )


def rouge_per_example(predictions: list[str], references: list[str], use_stemmer: bool = True) -> list[dict]:
    """ROUGE F1 (0..1) of each prediction against its reference: one dict per example with
    keys rouge1, rouge2, rougeL, rougeLsum."""
    _check(predictions, references)
    if not predictions:
        return []
    with _COMPUTE_LOCK:
        scores = _metric().compute(
            predictions=[sentences_per_line(p) for p in predictions],
            references=[sentences_per_line(r) for r in references],
            use_stemmer=use_stemmer,
            use_aggregator=False,
        )
    return [{key: float(scores[key][i]) for key in ROUGE_TYPES} for i in range(len(predictions))]


def compute_rouge(predictions: list[str], references: list[str], use_stemmer: bool = True) -> dict:
    """Mean ROUGE-1/2/L/Lsum F1 (floats in 0..1) over the examples."""
    _check(predictions, references)
    if not predictions:
        raise ValueError("compute_rouge got no predictions; pass at least one prediction/reference pair")
    per_example = rouge_per_example(predictions, references, use_stemmer)
    return {key: sum(s[key] for s in per_example) / len(per_example) for key in ROUGE_TYPES}


def mean_rouge_f(predictions: list[str], references: list[str], use_stemmer: bool = True) -> list[float]:
    """Per example, the mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 (0..1): pgg's summarization preference
    and seqpg's sequence reward."""
    return [
        (s["rouge1"] + s["rouge2"] + s["rougeL"]) / 3
        for s in rouge_per_example(predictions, references, use_stemmer)
    ]
