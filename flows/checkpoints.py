"""Checkpoint folders: written atomically, complete only when their state.json exists.

A policy checkpoint is a Hugging Face ``save_pretrained`` folder (model + tokenizer) plus state.json;
a guidance checkpoint is ``TokenRewardModel.save`` plus state.json. A half-written folder never
replaces a complete one, and loading anything incomplete fails with a one-line error.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

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


def save_policy(model, tokenizer, folder: Path, state: dict[str, Any]) -> Path:
    with atomic_directory(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    return Path(folder)


def load_policy(folder: Path, frozen_encoder: bool, device=None):
    """(tokenizer, model) from a policy checkpoint; the encoder is frozen again if it was."""
    read_state(folder)
    try:
        with _LOADING:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForSeq2SeqLM.from_pretrained(folder)
    except Exception as err:  # safetensors, torch and json each raise their own types
        reason = str(err).splitlines()[0][:200]
        raise CheckpointError(
            f"policy checkpoint {folder} is corrupt ({reason}): delete it and rerun"
        ) from None
    if frozen_encoder:
        freeze_encoder(model)
    if device is not None:
        model.to(device)
    return tokenizer, model.eval()


def save_guidance(model: TokenRewardModel, folder: Path, state: dict[str, Any]) -> Path:
    with atomic_directory(folder) as tmp:
        model.save(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    return Path(folder)


def load_guidance(folder: Path, freeze_backbone: bool, device=None) -> TokenRewardModel:
    read_state(folder)
    try:
        with _LOADING:
            model = TokenRewardModel.load(folder, freeze_backbone=freeze_backbone)
    except Exception as err:  # safetensors, torch and json each raise their own types
        reason = str(err).splitlines()[0][:200]
        raise CheckpointError(
            f"guidance checkpoint {folder} is corrupt ({reason}): delete it and rerun"
        ) from None
    return model.to(device) if device is not None else model
