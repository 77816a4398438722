"""Resumable loops: one folder per loop iteration, complete when its state.json matches the inputs.

Both task loops (summarization's align, the prompt search) run through this::

    loop = ResumableLoop(method_dir, fingerprint)          # fingerprint: hash of everything a result depends on
    with pipeline_run(..., extra_tags={"resumed_from": loop.previous_run_id}) as run:
        loop.started(run)
        for it in loop.iterations(first, last):
            if not it.done:                                # resume: a complete iteration with the same inputs is kept
                it.restart()                               # an interrupted or stale one is redone from scratch
                ...                                        # the iteration's work, writing into it.dir
                it.finish({"metrics": row})                # state.json last: only now is it complete
        loop.write_curve(rows)
        loop.compact(superseded)                           # the finished loop drops what only a resume needed

A killed run leaves at most one incomplete iteration folder; the rerun redoes it and keeps the rest,
so the final results equal an uninterrupted run's. Fingerprints chain (iteration i's covers i-1's),
so a change that invalidates one iteration invalidates every later one.

A finished loop is compacted: the weights only a resume would start from (earlier iterations' checkpoints,
optimizer states) are deleted, their state.json files stay (metrics and curves are read from them).

Resume is for crashes only. A finished (compacted) loop that runs again is redone from its first
iteration: under DVC a finished stage runs again only when something it depends on changed or
`dvc repro -f` forced it, and either way it must recompute, not serve the persisted results. A killed
loop is never compacted, so its complete iterations with an unchanged fingerprint (inputs and code,
see the flows' _fingerprint) are kept.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from flows.checkpoints import is_complete, read_state
from flows.common import atomic_write_json, content_hash

RUN_ID_FILE = "mlflow_run_id"
COMPACTED_FILE = "compacted"  # present once a finished loop dropped its superseded weights


@dataclass(frozen=True)
class Iteration:
    number: int
    dir: Path
    fingerprint: str

    @property
    def done(self) -> bool:
        return is_complete(self.dir) and read_state(self.dir).get("fingerprint") == self.fingerprint

    @property
    def state(self) -> dict[str, Any]:
        return read_state(self.dir)

    def restart(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        """Write state.json (with the fingerprint) atomically: the iteration is complete from now on."""
        state = {"fingerprint": self.fingerprint, **state}
        atomic_write_json(self.dir / "state.json", state)
        return state


class ResumableLoop:
    """The iterations of one method's loop under ``method_dir``, and the MLflow run that logs them."""

    def __init__(self, method_dir: Path, fingerprint: str):
        self.dir = Path(method_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        run_id_file = self.dir / RUN_ID_FILE
        # The run of an earlier killed attempt: the new run links it in its resumed_from tag (a finished
        # loop is redone, not resumed).
        resumable = run_id_file.exists() and not (self.dir / COMPACTED_FILE).exists()
        self.previous_run_id = run_id_file.read_text().strip() if resumable else ""

    def started(self, run: mlflow.ActiveRun) -> None:
        (self.dir / RUN_ID_FILE).write_text(run.info.run_id)

    def iterations(self, first: int, last: int) -> Iterator[Iteration]:
        """Iterations ``first..last`` (folders iter-{i}), each with its chained fingerprint."""
        fingerprint, chain = self.fingerprint, []
        for number in range(first, last + 1):
            fingerprint = content_hash(fingerprint, number)
            chain.append(Iteration(number, self.dir / f"iter-{number}", fingerprint))
        marker = self.dir / COMPACTED_FILE
        if marker.exists():  # a finished loop run again (a change, or `dvc repro -f`): redo them all
            for it in chain:
                it.restart()
            marker.unlink()
        yield from chain

    def compact(self, superseded: list[Path]) -> None:
        """Delete ``superseded`` (files or folders) of the finished loop and mark it compacted."""
        for path in superseded:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        (self.dir / COMPACTED_FILE).write_text("superseded checkpoints deleted; see flows/resume.py\n")

    def write_curve(self, rows: list[dict], name: str = "curve.json") -> None:
        """``rows`` for `dvc plots` (runs/.../curve.json) and as an MLflow artifact of the run. Every row
        gets the union of the keys (None where a row lacks one): `dvc plots` drops a file whose rows differ."""
        keys = list(dict.fromkeys(key for row in rows for key in row))
        rows = [{key: row.get(key) for key in keys} for row in rows]
        atomic_write_json(self.dir / name, rows)
        mlflow.log_dict({"rows": rows}, name)


def run_id_of(method_dir: Path) -> str | None:
    """The MLflow run of a method's loop, for stages that log into it later (test evaluation)."""
    path = Path(method_dir) / RUN_ID_FILE
    return path.read_text().strip() if path.exists() else None
