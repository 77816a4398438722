"""Sequence-level preferences: one score per candidate (higher = preferred).

Every source has the same small interface::

    score(sources: list[str], candidates: list[list[str]], references: list[str] | None)
        -> list[list[float]]    # scores[i][k] for candidates[i][k]

Sources: ``RougePreference`` (mean of ROUGE-1/2/L F1 vs the reference),
``EmbeddingSimilarityPreference`` (cosine of mean-pooled MiniLM embeddings vs the reference),
``MeteorPreference`` (needs NLTK wordnet data), ``CallablePreference`` (a task's own scorer)
and ``JsonlRankingPreference`` (user scores from a JSONL file). ``make_preference(name, **kw)``
builds one by name; ``rank_candidates`` turns scores into ``RankedList`` records for the
guidance trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from components import rouge
from components.data import read_jsonl
from components.models import ModelSpec, load_model


class PreferenceError(ValueError):
    """Bad preference input or a preference that cannot run here; the message says the fix."""


@dataclass(frozen=True)
class RankedList:
    """K candidate outputs for one input and their preference scores (higher = preferred)."""

    source: str | None
    candidates: tuple[str, ...]
    scores: tuple[float, ...]

    def __post_init__(self):
        object.__setattr__(self, "candidates", tuple(self.candidates))
        object.__setattr__(self, "scores", tuple(float(s) for s in self.scores))
        if len(self.candidates) != len(self.scores):
            raise PreferenceError(
                f"RankedList has {len(self.candidates)} candidates but {len(self.scores)} scores; give one score each"
            )
        if len(self.candidates) < 2:
            raise PreferenceError("a RankedList needs at least 2 candidates to rank")


class Preference(Protocol):
    def score(
        self, sources: list[str], candidates: list[list[str]], references: list[str] | None = None
    ) -> list[list[float]]: ...


def _need_references(name: str, candidates: list[list[str]], references: list[str] | None) -> list[str]:
    if references is None:
        raise PreferenceError(f"the {name} preference compares with a reference; pass references=[...]")
    if len(references) != len(candidates):
        raise PreferenceError(f"got {len(candidates)} candidate lists but {len(references)} references")
    return references


def _flatten(candidates: list[list[str]], references: list[str]) -> tuple[list[str], list[str]]:
    flat = [c for group in candidates for c in group]
    refs = [r for group, r in zip(candidates, references, strict=True) for _ in group]
    return flat, refs


def _regroup(values: Sequence[float], candidates: list[list[str]]) -> list[list[float]]:
    out, i = [], 0
    for group in candidates:
        out.append([float(v) for v in values[i : i + len(group)]])
        i += len(group)
    return out


class RougePreference:
    """Mean of ROUGE-1, ROUGE-2 and ROUGE-L F1 against the reference (0..1)."""

    def __init__(self, use_stemmer: bool = True):
        self.use_stemmer = use_stemmer

    def score(self, sources, candidates, references=None):
        references = _need_references("rouge", candidates, references)
        flat, refs = _flatten(candidates, references)
        return _regroup(rouge.mean_rouge_f(flat, refs, use_stemmer=self.use_stemmer), candidates)


class EmbeddingSimilarityPreference:
    """Cosine similarity of mean-pooled sentence embeddings (MiniLM by default) to the reference."""

    def __init__(self, model_name: str = "minilm", batch_size: int = 64, max_length: int = 256):
        self.tokenizer, self.model = load_model(ModelSpec(model_name, "encoder"))
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm mean-pooled embeddings ``[len(texts), H]``."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.empty(0)

    def score(self, sources, candidates, references=None):
        references = _need_references("embedding", candidates, references)
        flat, refs = _flatten(candidates, references)
        if not flat:
            return [[] for _ in candidates]
        unique = sorted(set(flat) | set(refs))
        index = {t: i for i, t in enumerate(unique)}
        vectors = self.embed(unique)
        sims = [float(vectors[index[c]] @ vectors[index[r]]) for c, r in zip(flat, refs, strict=True)]
        return _regroup(sims, candidates)


METEOR_INSTALL_HINT = (
    "METEOR needs the NLTK wordnet data; install it with `python -m nltk.downloader wordnet`"
)


class MeteorPreference:
    """METEOR (NLTK) against the reference. Needs the NLTK ``wordnet`` corpus installed."""

    def __init__(self):
        import nltk

        try:
            nltk.data.find("corpora/wordnet")
        except LookupError:
            try:
                nltk.data.find("corpora/wordnet.zip")
            except LookupError as err:
                raise PreferenceError(METEOR_INSTALL_HINT) from err
        from nltk.translate.meteor_score import single_meteor_score

        self._meteor = single_meteor_score

    def score(self, sources, candidates, references=None):
        references = _need_references("meteor", candidates, references)
        flat, refs = _flatten(candidates, references)
        # Whitespace tokens: NLTK's word_tokenize would need the punkt data as well.
        values = [self._meteor(r.lower().split(), c.lower().split()) for c, r in zip(flat, refs, strict=True)]
        return _regroup(values, candidates)


class CallablePreference:
    """A task-supplied scorer.

    ``per_candidate=False`` (default): ``fn(sources, candidates, references) -> list[list[float]]``
    (batched, e.g. one classifier pass over all prompts). ``per_candidate=True``:
    ``fn(source, candidate, reference) -> float`` called once per candidate (reference is None
    when no references are given).
    """

    def __init__(self, fn: Callable, per_candidate: bool = False):
        if not callable(fn):
            raise PreferenceError(f"CallablePreference needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.per_candidate = per_candidate

    def score(self, sources, candidates, references=None):
        if self.per_candidate:
            refs = references if references is not None else [None] * len(candidates)
            return [
                [float(self.fn(s, c, r)) for c in group]
                for s, group, r in zip(sources, candidates, refs, strict=True)
            ]
        scores = self.fn(sources, candidates, references)
        if len(scores) != len(candidates) or any(
            len(s) != len(g) for s, g in zip(scores, candidates, strict=True)
        ):
            raise PreferenceError(
                "the scorer must return one list of scores per input, one score per candidate"
            )
        return [[float(v) for v in s] for s in scores]


def load_ranked_lists(path: str | Path) -> list[RankedList]:
    """Read user rankings: one JSON object per line,
    ``{"source": str, "candidates": [str, ...], "scores": [number, ...]}`` (higher = better).
    Blank lines are skipped; any other bad line raises ``PreferenceError`` naming its line."""
    path = Path(path)
    if not path.exists():
        raise PreferenceError(f"ranking file {path} does not exist; write one JSON object per line")
    lists, seen = [], {}
    for number, record in read_jsonl(path, PreferenceError):
        where = f"{path}:{number}"
        lists.append(_ranked_list_from_record(record, where))
        source = lists[-1].source
        if source in seen:
            raise PreferenceError(
                f"{where}: source already given at line {seen[source]}; merge the two lines"
            )
        seen[source] = number
    if not lists:
        raise PreferenceError(f"ranking file {path} has no rankings; write one JSON object per line")
    return lists


def _ranked_list_from_record(record, where: str) -> RankedList:
    expected = 'expected {"source": str, "candidates": [str, ...], "scores": [number, ...]}'
    if not isinstance(record, dict):
        raise PreferenceError(f"{where}: {expected}, got {type(record).__name__}")
    missing = [key for key in ("source", "candidates", "scores") if key not in record]
    if missing:
        raise PreferenceError(f"{where}: missing key(s) {', '.join(missing)}; {expected}")
    source, candidates, scores = record["source"], record["candidates"], record["scores"]
    if not isinstance(source, str):
        raise PreferenceError(f"{where}: 'source' must be a string")
    if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
        raise PreferenceError(f"{where}: 'candidates' must be a list of strings")
    if not isinstance(scores, list) or not all(_is_finite_number(s) for s in scores):
        raise PreferenceError(f"{where}: 'scores' must be a list of finite numbers")
    if len(candidates) != len(scores):
        raise PreferenceError(
            f"{where}: {len(candidates)} candidates but {len(scores)} scores; give one score each"
        )
    if len(candidates) < 2:
        raise PreferenceError(f"{where}: need at least 2 candidates to rank, got {len(candidates)}")
    return RankedList(source, candidates, scores)


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class JsonlRankingPreference:
    """Scores given by users in a JSONL file (see ``load_ranked_lists``), looked up by
    (source, candidate); asking for a pair the file does not hold is an error."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lists = load_ranked_lists(path)
        self._table = {
            (ranked.source, candidate): score
            for ranked in self.lists
            for candidate, score in zip(ranked.candidates, ranked.scores, strict=True)
        }

    def score(self, sources, candidates, references=None):
        out = []
        for source, group in zip(sources, candidates, strict=True):
            row = []
            for candidate in group:
                if (source, candidate) not in self._table:
                    raise PreferenceError(
                        f"{self.path} has no score for candidate {candidate[:40]!r} of source {source[:40]!r}; "
                        "add it to the file"
                    )
                row.append(self._table[(source, candidate)])
            out.append(row)
        return out


PREFERENCES = {
    "rouge": RougePreference,
    "embedding": EmbeddingSimilarityPreference,
    "meteor": MeteorPreference,
    "callable": CallablePreference,
    "jsonl": JsonlRankingPreference,
}


def make_preference(name: str, **kwargs) -> Preference:
    """Build a preference by name: rouge, embedding, meteor, callable (fn=...), jsonl (path=...)."""
    if name not in PREFERENCES:
        raise PreferenceError(f"unknown preference {name!r}; use one of {', '.join(PREFERENCES)}")
    return PREFERENCES[name](**kwargs)


def rank_candidates(
    preference: Preference,
    sources: list[str],
    candidates: list[list[str]],
    references: list[str] | None = None,
) -> list[RankedList]:
    """Score every candidate with ``preference`` and pack the results as ``RankedList``s."""
    if len(sources) != len(candidates):
        raise PreferenceError(f"got {len(sources)} sources but {len(candidates)} candidate lists")
    scores = preference.score(sources, candidates, references)
    return [RankedList(s, c, v) for s, c, v in zip(sources, candidates, scores, strict=True)]


def resampled_lists(
    batches: Sequence[tuple[Sequence[str], Sequence[float]]],
    k: int,
    per_batch: int,
    val_fraction: float,
    generator: torch.Generator,
) -> tuple[list[RankedList], list[RankedList]]:
    """(train, held-out) lists of ``k`` candidates drawn ``per_batch`` times from each scored batch.

    A batch is candidates scored together (the prompt task: on one example subset), so any ``k`` of
    them make a fairly ranked list and one batch of n candidates yields many more lists than n / k.
    Whole batches are held out (``val_fraction`` of them, at least one when there are two or more),
    so no held-out list shares a candidate's score with a training list."""
    if k < 2 or per_batch < 1:
        raise PreferenceError(f"need k >= 2 and per_batch >= 1 to resample lists; got k={k}, {per_batch}")
    usable = [(list(c), list(s)) for c, s in batches if len(c) >= 2]
    if not usable:
        raise PreferenceError("no scored batch has 2 or more candidates to draw a list from")
    order = torch.randperm(len(usable), generator=generator).tolist()
    n_val = min(max(round(len(usable) * val_fraction), 1), len(usable) - 1) if val_fraction > 0 else 0
    held_out = set(order[:n_val])
    train, val = [], []
    for index, (candidates, scores) in enumerate(usable):
        size = min(k, len(candidates))
        for _ in range(per_batch):
            picks = torch.randperm(len(candidates), generator=generator)[:size].tolist()
            ranked = RankedList(None, [candidates[i] for i in picks], [scores[i] for i in picks])
            (val if index in held_out else train).append(ranked)
    return train, val
