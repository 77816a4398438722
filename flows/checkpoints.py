"""Checkpoint folders: written atomically, complete only when their state.json exists.

A policy checkpoint is tokenizer + weights + state.json. The weights are a Hugging Face ``save_pretrained``
folder or, when the encoder is frozen and the base model is named, the non-encoder weights plus a
hash-checked reference to the base encoder (components.policy_checkpoint: 68 MB instead of 159 MB for
MiniLM BERT2BERT). A guidance checkpoint is ``TokenRewardModel.save`` (a frozen backbone: head +
reference) plus state.json. A half-written folder never replaces a complete one, and loading anything
incomplete fails with a one-line error.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from components.models import ModelSpec
from components.policy_checkpoint import (
    has_frozen_encoder_reference,
    load_with_frozen_encoder,
    save_with_frozen_encoder,
)
from components.reward_model import TokenRewardModel
from components.seq2seq_policy import freeze_encoder
from flows.common import atomic_directory

STATE_FILE = "state.json"
# from_pretrained builds models under a process-wide meta-device default: two threads loading at once
# (tasks on a thread or in-process Dask runner) corrupt each other's models, so loads take turns.
_LOADING = threading.Lock()


class CheckpointError(RuntimeError):
    pass


def is_complete(folder: Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def read_state(folder: Path) -> dict[str, Any]:
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {folder} is missing or incomplete (no {STATE_FILE}): rerun its stage"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CheckpointError(
            f"checkpoint {folder} has a corrupt {STATE_FILE}: delete the folder and rerun"
        ) from None


def save_policy(model, tokenizer, folder: Path, state: dict[str, Any], base: ModelSpec | None = None) -> Path:
    """``base``: the spec the model was built from. Given, with the encoder frozen, the encoder is saved as
    a reference to it, not as a copy; else the whole model is saved."""
    frozen = not any(p.requires_grad for p in model.get_encoder().parameters())
    with atomic_directory(folder) as tmp:
        if base is not None and frozen:
            save_with_frozen_encoder(model, tmp, base)
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    return Path(folder)


def load_policy(folder: Path, frozen_encoder: bool, device=None):
    """(tokenizer, model) from a policy checkpoint; the encoder is frozen again if it was."""
    read_state(folder)
    _check_not_compacted(folder)
    try:
        with _LOADING:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            if has_frozen_encoder_reference(folder):
                model = load_with_frozen_encoder(folder)
            else:
                model = AutoModelForSeq2SeqLM.from_pretrained(folder)
    except Exception as err:  # safetensors, torch, json and the base-weights check each raise their own types
        reason = str(err).splitlines()[0][:200]
        raise CheckpointError(
            f"policy checkpoint {folder} is corrupt ({reason}): delete it and rerun"
        ) from None
    if frozen_encoder:
        freeze_encoder(model)
    if device is not None:
        model.to(device)
    return tokenizer, model.eval()


@contextmanager
def standalone_policy(folder: Path) -> Iterator[Path]:
    """A folder ``from_pretrained`` loads on its own (for a registered model, used where pgg is not
    installed): ``folder`` itself, or a temporary full copy of a checkpoint that refers to its encoder."""
    if not has_frozen_encoder_reference(folder):
        yield Path(folder)
        return
    tokenizer, model = load_policy(folder, frozen_encoder=False)
    with tempfile.TemporaryDirectory(prefix="pgg-policy-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        yield Path(tmp)


def superseded_payload(folder: Path) -> list[Path]:
    """A checkpoint's weights and tokenizer: everything but its state.json (which stays, for curves)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.name != STATE_FILE) if folder.is_dir() else []


def _check_not_compacted(folder: Path) -> None:
    if not superseded_payload(folder):
        raise CheckpointError(
            f"checkpoint {folder} holds only its {STATE_FILE}: its loop finished and kept only the last "
            "weights; delete the method folder and rerun to get this one back"
        )


def save_guidance(model: TokenRewardModel, folder: Path, state: dict[str, Any]) -> Path:
    with atomic_directory(folder) as tmp:
        model.save(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    return Path(folder)


def load_guidance(folder: Path, freeze_backbone: bool, device=None) -> TokenRewardModel:
    read_state(folder)
    _check_not_compacted(folder)
    try:
        with _LOADING:
            model = TokenRewardModel.load(folder, freeze_backbone=freeze_backbone)
    except Exception as err:  # safetensors, torch and json each raise their own types
        reason = str(err).splitlines()[0][:200]
        raise CheckpointError(
            f"guidance checkpoint {folder} is corrupt ({reason}): delete it and rerun"
        ) from None
    return model.to(device) if device is not None else model
