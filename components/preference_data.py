"""Preference data people already have, read into ``RankedList``s for the guidance trainer.

Formats (one record per JSONL line, Parquet row or hub dataset row):

- ``kwise``: pgg's own ``{"source": str, "candidates": [str, ...], "scores": [number, ...]}``.
- ``trl``: TRL's preference type, ``{"prompt", "chosen", "rejected"}``, each either text (standard)
  or a list of ``{"role", "content"}`` messages (conversational); without ``prompt`` it is TRL's
  implicit-prompt form, whose prompt is the shared beginning of chosen and rejected. A pair becomes
  a list of two candidates scored 1 (chosen) and 0 (rejected).
- ``auto``: ``kwise`` if the first record has ``candidates``, else ``trl``.

The whole input is checked before any of it is used: the first bad record stops the read with a
one-line ``PreferenceError`` naming the file and line (a missing key, an empty candidate, a
non-finite score, chosen == rejected).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

from components.data import read_jsonl
from components.preferences import PreferenceError, RankedList, _ranked_list_from_record

FORMATS = ("auto", "kwise", "trl")
KWISE_KEYS = ("source", "candidates", "scores")


def load_preference_data(location: str | Path, data_format: str = "auto") -> list[RankedList]:
    """Ranked lists from a local ``.jsonl``/``.json``/``.parquet`` file or a hub dataset name."""
    if data_format not in FORMATS:
        raise PreferenceError(f"unknown preference format {data_format!r}; use one of {', '.join(FORMATS)}")
    lists: list[RankedList] = []
    for where, record in _records(location):
        if data_format == "auto":
            data_format = "kwise" if isinstance(record, dict) and "candidates" in record else "trl"
        lists.append(_kwise(record, where) if data_format == "kwise" else _trl(record, where))
    if not lists:
        raise PreferenceError(f"{location}: no preference records; write one JSON object per line")
    prompts = {ranked.source for ranked in lists}
    if prompts == {""}:  # no record has a prompt: unconditional rewards
        lists = [RankedList(None, ranked.candidates, ranked.scores) for ranked in lists]
    return lists


def _records(location: str | Path) -> Iterator[tuple[str, object]]:
    """(where, record) pairs; ``where`` is ``file:line`` (JSONL) or ``file:row N``."""
    path = Path(location)
    if path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise PreferenceError(f"preference file {path} does not exist; check guidance_fit.data")
        for number, record in read_jsonl(path, PreferenceError):
            yield f"{path}:{number}", record
    elif path.suffix == ".parquet":
        if not path.is_file():
            raise PreferenceError(f"preference file {path} does not exist; check guidance_fit.data")
        import pyarrow.parquet as pq

        for number, record in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"{path}:row {number}", record
    elif path.exists() or str(location).startswith((".", "/")) or path.suffix:
        raise PreferenceError(
            f"{location}: not a .jsonl, .json or .parquet file, nor a hub dataset name (owner/name)"
        )
    else:
        for number, record in enumerate(_hub_rows(str(location)), start=1):
            yield f"{location}:row {number}", record


def _hub_rows(name: str) -> list[dict]:
    import os

    import datasets

    try:
        return list(datasets.load_dataset(name, split="train"))
    except Exception as err:  # offline, unknown name and missing split each raise their own type
        if os.environ.get("HF_HUB_OFFLINE") == "1" or datasets.config.HF_HUB_OFFLINE:
            raise PreferenceError(
                f"hub dataset {name!r} cannot be loaded: offline (HF_HUB_OFFLINE=1) and not in the local "
                "cache; download it on a machine with network, or export it to a local .jsonl/.parquet"
            ) from None
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise PreferenceError(f"hub dataset {name!r} cannot be loaded ({reason})") from None


def _kwise(record, where: str) -> RankedList:
    ranked = _ranked_list_from_record(record, where)
    for number, candidate in enumerate(ranked.candidates, start=1):
        if not candidate.strip():
            raise PreferenceError(f"{where}: candidate {number} is empty; every candidate needs text")
    return ranked


def _trl(record, where: str) -> RankedList:
    expected = 'expected TRL preference {"prompt", "chosen", "rejected"} (prompt optional)'
    if not isinstance(record, dict):
        raise PreferenceError(f"{where}: {expected}, got {type(record).__name__}")
    missing = [key for key in ("chosen", "rejected") if record.get(key) is None]
    if missing:
        raise PreferenceError(f"{where}: missing key(s) {', '.join(missing)}; {expected}")
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    for key in ("chosen", "rejected", "prompt"):
        value = record.get(key)
        if value is not None and not (isinstance(value, str) or _is_messages(value)):
            raise PreferenceError(
                f"{where}: {key!r} must be text or a list of {{'role', 'content'}} messages"
            )
    if prompt is None:
        prompt, chosen, rejected = implicit_prompt(chosen, rejected)
    prompt_text, chosen_text, rejected_text = (_text(prompt), _text(chosen), _text(rejected))
    for key, text in (("chosen", chosen_text), ("rejected", rejected_text)):
        if not text.strip():
            raise PreferenceError(f"{where}: {key!r} is empty; every candidate needs text")
    if chosen_text == rejected_text:
        raise PreferenceError(f"{where}: chosen == rejected; a pair must differ to say which is preferred")
    return RankedList(prompt_text, (chosen_text, rejected_text), (1.0, 0.0))


def implicit_prompt(chosen, rejected):
    """(prompt, chosen, rejected) with the shared beginning moved into the prompt, as TRL's
    ``extract_prompt`` does: whole messages for conversations; for text, cut at a word boundary."""
    if isinstance(chosen, list) and isinstance(rejected, list):
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        return chosen[:shared], chosen[shared:], rejected[shared:]
    if isinstance(chosen, str) and isinstance(rejected, str):
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        while shared > 0 and not chosen[shared - 1].isspace():  # never split a word
            shared -= 1
        return chosen[:shared].rstrip(), chosen[shared:], rejected[shared:]
    return "", chosen, rejected


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    )


def _text(value) -> str:
    """Plain text of a field. Messages: a prompt keeps 'role: content' lines; a one-message completion
    is its content (the tokens being rewarded)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if len(value) == 1 and value[0]["role"] == "assistant":
        return value[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in value)


def write_kwise_jsonl(lists: list[RankedList], path: str | Path) -> Path:
    """The K-wise JSONL ``load_preference_data`` reads back (``source`` "" when a list has none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"source": r.source or "", "candidates": list(r.candidates), "scores": list(r.scores)})
        for r in lists
        if all(math.isfinite(s) for s in r.scores)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def split_held_out(
    lists: list[RankedList], val_fraction: float, seed: int
) -> tuple[list[RankedList], list[RankedList]]:
    """(train, held out): a seeded shuffle, ``val_fraction`` of the lists held out (at least one)."""
    import random

    if len(lists) < 2:
        raise PreferenceError(f"need at least 2 preference records to hold some out, got {len(lists)}")
    order = list(range(len(lists)))
    random.Random(seed).shuffle(order)
    n_val = min(max(round(len(lists) * val_fraction), 1), len(lists) - 1)
    return [lists[i] for i in order[n_val:]], [lists[i] for i in order[:n_val]]


def ranked_lists_from_rows(rows: list[dict]) -> list[RankedList]:
    """Sample-table rows ``{"article", "source", "candidate", "score"}`` (one per candidate, as the
    summarization loop logs them) grouped into one ranked list per article; lists with < 2 candidates
    are left out."""
    groups: dict[object, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["article"], []).append(row)
    return [
        RankedList(group[0]["source"], [r["candidate"] for r in group], [float(r["score"]) for r in group])
        for group in groups.values()
        if len(group) >= 2
    ]
