"""Conventions every flow shares: content-addressed task caching, atomic files, seeding, devices.

Task inputs are file paths and config values, never live models. A path's cache key is the hash of
the file's (or folder's) content, so a retrained checkpoint under the same path is a cache miss; the
code the task runs is part of every key too (CONTENT_CACHE).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect.cache_policies import TASK_SOURCE, CacheKeyFnPolicy
from pydantic import BaseModel

from flows.stage_code import task_code_hash


def _hash_value(value: Any, digest) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Path):
        digest.update(str(value).encode())
        _hash_path(value, digest)
    elif isinstance(value, dict):
        for key in sorted(value):
            digest.update(str(key).encode())
            _hash_value(value[key], digest)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _hash_value(item, digest)
    else:
        digest.update(json.dumps(value, sort_keys=True, default=str).encode())


def _hash_path(path: Path, digest) -> None:
    if path.is_file():
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    elif path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(child.relative_to(path)).encode())
            _hash_path(child, digest)
    else:
        digest.update(b"<missing>")


def content_hash(*values: Any) -> str:
    digest = hashlib.sha256()
    for value in values:
        _hash_value(value, digest)
    return digest.hexdigest()


def _task_cache_key(context, parameters: dict[str, Any]) -> str:
    return content_hash(context.task.name, parameters, task_code_hash(context.task.fn.__module__))


# Every cached task: keyed on its source, its inputs by content, and the content of every code file its
# module's import closure reaches (flows/stage_code.py, the closure dvc.yaml's code deps are written
# from), so an edit DVC sees in a stage's deps is a cache miss for that stage's tasks.
CONTENT_CACHE = TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_task_cache_key)


# --- files ------------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; it replaces ``final`` only if the block finishes.

    A crash mid-write leaves the old folder (or none) in place, never a half-written one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


# --- runtime ----------------------------------------------------------------------------------


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is visible; set runtime.device: auto")
    return torch.device(setting)


def apply_runtime(runtime) -> torch.device:
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    return pick_device(runtime.device)


class PhaseTimer:
    """Accumulates wall seconds per named phase: timer.phase('sample') as a context manager."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def unlearned_guidance(report: dict, refit: int, task_name: str) -> str:
    """The warning for a guidance fit that did no better than constant rewards (FitReport.learned)."""
    return (
        f"guidance refit {refit} learned no ordering: held-out listwise loss {report['val_loss']:.4f} vs "
        f"{report['chance_val_loss']:.4f} for constant rewards, so the policy update that uses it is "
        f"unguided; raise guidance.{task_name}.lr or epochs, or sample more diverse candidates"
    )


GUIDANCE_REPORT_KEYS = {  # FitReport field -> MLflow key, the same in both tasks
    "pairwise_accuracy": "val_pairwise_accuracy",
    "kendall_tau": "val_kendall_tau",
    "val_loss": "val_loss",
    "chance_val_loss": "chance_val_loss",
    "train_loss": "train_loss",
    "tied_lists_dropped": "n_tied_dropped",
    "epochs_run": "epochs_run",
}


def guidance_metrics(report: dict) -> dict[str, float]:
    """A guidance fit's report as ``guidance/...`` metrics (held-out pairwise accuracy and Kendall tau,
    losses against the chance level, lists dropped as fully tied); NaNs left out."""
    values = {f"guidance/{key}": report.get(field) for key, field in GUIDANCE_REPORT_KEYS.items()}
    return {key: float(value) for key, value in values.items() if value is not None and value == value}
