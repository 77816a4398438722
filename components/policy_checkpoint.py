"""A seq2seq policy's weights on disk: the whole model, or the trainable part plus its frozen base.

With a frozen encoder every iteration's encoder is the pretrained one, so a checkpoint holds only the
other weights (decoder, LM head, cross-attention, projections) in ``model.safetensors`` and a
reference to the encoder in ``base_model.json``: the ``ModelSpec`` it was built from and a SHA-256 of
the encoder's weights, checked on load (the same scheme as ``TokenRewardModel``'s frozen backbone).
Loading rebuilds the model from the spec, checks the hash and loads the saved weights over it::

    save_with_frozen_encoder(model, folder, ModelSpec("minilm", "seq2seq", 2))
    model = load_with_frozen_encoder(folder)    # raises BaseWeightsError if the base changed

A folder written this way has no ``config.json``: Hugging Face's ``from_pretrained`` refuses it rather
than filling the encoder with random weights (use ``load_with_frozen_encoder``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file

from components.models import ModelSpec, load_model, weights_sha256

REFERENCE_FILE = "base_model.json"
WEIGHTS_FILE = "model.safetensors"


class BaseWeightsError(ValueError):
    """A frozen-encoder checkpoint's reference does not reproduce the encoder it was trained with."""


def has_frozen_encoder_reference(folder: str | Path) -> bool:
    return (Path(folder) / REFERENCE_FILE).is_file()


def _encoder_storages(model) -> set[int]:
    return {t.data_ptr() for t in model.get_encoder().state_dict().values()}


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The model's weights minus the encoder's (and minus every tensor the encoder shares, such as
    T5's tied embeddings); a tensor tied under several names is kept once, under its first name."""
    skip, state = _encoder_storages(model), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in skip:
            skip.add(tensor.data_ptr())
            state[name] = tensor.detach().cpu().contiguous()
    return state


def save_with_frozen_encoder(model, folder: str | Path, base: ModelSpec) -> Path:
    """Write the non-encoder weights and a hash-checked reference to ``base``'s encoder."""
    if any(p.requires_grad for p in model.get_encoder().parameters()):
        raise ValueError("the encoder is trainable: save the whole model (save_pretrained) instead")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), folder / WEIGHTS_FILE, metadata={"format": "pt"})
    reference = {
        "base_spec": asdict(base),
        "frozen": "encoder",
        "encoder_sha256": weights_sha256(model.get_encoder()),
    }
    (folder / REFERENCE_FILE).write_text(json.dumps(reference, indent=2))
    return folder


def load_with_frozen_encoder(folder: str | Path):
    """The model saved by ``save_with_frozen_encoder`` (eval mode, on the CPU)."""
    folder = Path(folder)
    reference = json.loads((folder / REFERENCE_FILE).read_text())
    spec = ModelSpec(**reference["base_spec"])
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its load report lists the decoder weights loaded next
    try:
        with torch.random.fork_rng(devices=[]):  # the base draws random weights: leave the caller's RNG
            model = load_model(spec)[1]
    finally:
        transformers.logging.set_verbosity(verbosity)
    found = weights_sha256(model.get_encoder())
    if found != reference["encoder_sha256"]:
        raise BaseWeightsError(
            f"the frozen encoder of {spec.name!r} no longer matches this checkpoint "
            f"(sha256 {found[:12]} != {reference['encoder_sha256'][:12]}): the base weights changed; rerun the stage"
        )
    saved = load_file(folder / WEIGHTS_FILE)
    missing, unexpected = model.load_state_dict(saved, strict=False)
    state = model.state_dict()
    covered = _encoder_storages(model) | {state[name].data_ptr() for name in saved if name in state}
    uncovered = [name for name in missing if state[name].data_ptr() not in covered]  # tied names are covered
    if unexpected or uncovered:
        raise BaseWeightsError(
            f"weights do not fit {spec.name!r}: unexpected {unexpected[:3]}, missing {uncovered[:3]}"
        )
    return model.eval()
