"""Policy checkpoints with a frozen encoder: the trainable weights plus a hash-checked reference."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from components.models import ModelSpec, load_model
from components.policy_checkpoint import REFERENCE_FILE, WEIGHTS_FILE
from components.seq2seq_policy import freeze_encoder
from flows.checkpoints import CheckpointError, load_policy, save_policy, standalone_policy

SPEC = ModelSpec("tiny", "seq2seq")


def _trained_policy():
    """The tiny policy with a frozen encoder and every other weight moved off its initial value."""
    tokenizer, model = load_model(SPEC)
    freeze_encoder(model)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01 * torch.randn_like(param))
    return tokenizer, model


def _logits(model, tokenizer):
    batch = tokenizer(["a short article about markets"], return_tensors="pt")
    labels = torch.tensor([[tokenizer.cls_token_id, 2000, 2001, tokenizer.sep_token_id]])
    with torch.no_grad():
        return model(**batch, decoder_input_ids=labels).logits


def test_frozen_encoder_checkpoint_holds_no_encoder_and_loads_to_the_same_outputs(tmp_path):
    tokenizer, model = _trained_policy()
    folder = save_policy(model, tokenizer, tmp_path / "policy", {"steps": 1}, base=SPEC)
    saved = load_file(folder / WEIGHTS_FILE)
    assert saved and not any(name.startswith("encoder.") for name in saved)
    assert not (
        folder / "config.json"
    ).exists()  # from_pretrained must refuse it, not fill in a random encoder
    _, loaded = load_policy(folder, frozen_encoder=True)
    assert torch.equal(_logits(loaded, tokenizer), _logits(model.eval(), tokenizer))
    assert not any(p.requires_grad for p in loaded.get_encoder().parameters())
    with standalone_policy(folder) as full:  # what the registered MLflow model is built from
        assert (full / "config.json").exists()
        from transformers import AutoModelForSeq2SeqLM

        alone = AutoModelForSeq2SeqLM.from_pretrained(full).eval()
        assert torch.equal(_logits(alone, tokenizer), _logits(loaded, tokenizer))


def test_trainable_encoder_or_no_base_saves_the_whole_model(tmp_path):
    tokenizer, model = load_model(SPEC)  # encoder not frozen
    folder = save_policy(model, tokenizer, tmp_path / "whole", {}, base=SPEC)
    assert not (folder / REFERENCE_FILE).exists()
    assert any(name.startswith("encoder.") for name in load_file(folder / WEIGHTS_FILE))
    _, loaded = load_policy(folder, frozen_encoder=False)
    assert torch.equal(_logits(loaded, tokenizer), _logits(model.eval(), tokenizer))


def test_a_tampered_reference_is_a_one_line_checkpoint_error(tmp_path):
    tokenizer, model = _trained_policy()
    folder = save_policy(model, tokenizer, tmp_path / "policy", {}, base=SPEC)
    reference = json.loads((folder / REFERENCE_FILE).read_text())
    reference["encoder_sha256"] = "0" * 64
    (folder / REFERENCE_FILE).write_text(json.dumps(reference))
    with pytest.raises(CheckpointError, match="no longer matches") as err:
        load_policy(folder, frozen_encoder=True)
    assert "\n" not in str(err.value)
