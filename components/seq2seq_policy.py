"""A Hugging Face seq2seq model used as a policy: token log-probs, greedy decoding, seeded sampling.

Works with any ``AutoModelForSeq2SeqLM``-style model (BERT2BERT ``EncoderDecoderModel``, T5, BART).
Every function takes the source either as ``input_ids`` (the encoder runs live, e.g. for T5 or a
trainable encoder) or as ``encoder_hidden`` (cached last hidden states of a frozen encoder), plus
the source ``attention_mask``.

Targets are held as ``labels[B, T]``: the tokens after the decoder start token, ending with eos,
padded with the pad id; ``mask[B, T]`` is 1 on real tokens (eos included) and 0 on padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutput

from components.encoder_cache import EncodedSources

T5_PREFIX = "summarize: "


@dataclass(frozen=True)
class TokenLogProbs:
    logp: torch.Tensor  # [B, T] log pi(y_t | x, y_<t), 0 on padding
    mask: torch.Tensor  # [B, T] float, 1 on real tokens
    entropy: torch.Tensor | None = None  # [B, T] entropy of pi(. | x, y_<t), 0 on padding


@dataclass(frozen=True)
class Generated:
    labels: torch.Tensor  # [B, T] generated tokens without the start token, pad after eos
    mask: torch.Tensor  # [B, T] float, 1 up to and including the first eos
    texts: list[str]


def source_prefix(model) -> str:
    """T5 was trained with task prefixes; every other model gets the raw text."""
    return T5_PREFIX if getattr(model.config, "model_type", "") == "t5" else ""


def freeze_encoder(model) -> int:
    """Stop gradients into the encoder; returns how many parameters were frozen."""
    frozen = 0
    for param in model.get_encoder().parameters():
        param.requires_grad_(False)
        frozen += param.numel()
    return frozen


def tokenize_sources(tokenizer, texts: list[str], max_length: int, prefix: str = "") -> dict:
    """``{"input_ids", "attention_mask"}`` for running the encoder live (BERT tokenizers' token_type_ids
    are dropped: every consumer takes exactly these two)."""
    tokens = tokenizer(
        [prefix + t for t in texts], max_length=max_length, truncation=True, padding=True, return_tensors="pt"
    )
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def special_ids(model) -> tuple[int, int, int]:
    """(decoder start, eos, pad) token ids from the model's generation config."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):  # data-parallel wrapper
        model = model.module
    gen = model.generation_config
    start = (
        gen.decoder_start_token_id
        if gen.decoder_start_token_id is not None
        else model.config.decoder_start_token_id
    )
    eos = gen.eos_token_id if gen.eos_token_id is not None else model.config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = gen.pad_token_id if gen.pad_token_id is not None else model.config.pad_token_id
    if start is None or eos is None or pad is None:
        raise ValueError(
            f"model needs decoder_start/eos/pad token ids, got {start}/{eos}/{pad}; load it with "
            "components.models.load_model or set them on model.generation_config"
        )
    return int(start), int(eos), int(pad)


def encode_targets(tokenizer, texts: list[str], max_length: int, model) -> tuple[torch.Tensor, torch.Tensor]:
    """Target texts -> (labels, mask): at most ``max_length`` tokens each, the last one eos."""
    if max_length < 2:
        raise ValueError(f"target max_length must be >= 2 (one token plus eos); got {max_length}")
    _, eos, pad = special_ids(model)
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length - 1)[
        "input_ids"
    ]
    length = max(len(x) for x in ids) + 1
    labels = torch.full((len(ids), length), pad, dtype=torch.long)
    mask = torch.zeros(len(ids), length)
    for row, tokens in enumerate(ids):
        labels[row, : len(tokens) + 1] = torch.tensor(tokens + [eos], dtype=torch.long)
        mask[row, : len(tokens) + 1] = 1.0
    return labels, mask


def _source_kwargs(model, attention_mask, input_ids, encoder_hidden) -> dict:
    if (input_ids is None) == (encoder_hidden is None):
        raise ValueError("pass exactly one of input_ids (run the encoder) or encoder_hidden (cached states)")
    param = next(model.parameters())
    kwargs = {"attention_mask": attention_mask.to(param.device)}
    if input_ids is not None:
        kwargs["input_ids"] = input_ids.to(param.device)
    else:
        hidden = (
            encoder_hidden.last_hidden_state
            if isinstance(encoder_hidden, BaseModelOutput)
            else encoder_hidden
        )
        kwargs["encoder_outputs"] = BaseModelOutput(last_hidden_state=hidden.to(param.device, param.dtype))
    return kwargs


def sequence_log_probs(
    model,
    labels: torch.Tensor,
    mask: torch.Tensor,
    *,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    encoder_hidden=None,
    return_entropy: bool = False,
) -> TokenLogProbs:
    """Teacher-forced log pi(y_t | x, y_<t) for every target token (with grad, in the model's current mode)."""
    start, _, pad = special_ids(model)
    device = next(model.parameters()).device
    labels, mask = labels.to(device), mask.to(device).float()
    decoder_input_ids = torch.cat([torch.full_like(labels[:, :1], start), labels[:, :-1]], dim=1)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids < 0, pad)
    decoder_mask = torch.cat([torch.ones_like(mask[:, :1]), mask[:, :-1]], dim=1).long()
    logits = model(
        **_source_kwargs(model, attention_mask, input_ids, encoder_hidden),
        decoder_input_ids=decoder_input_ids,
        decoder_attention_mask=decoder_mask,
    ).logits.float()
    safe_labels = labels.masked_fill(mask == 0, 0)
    logp = -F.cross_entropy(logits.transpose(1, 2), safe_labels, reduction="none") * mask
    entropy = None
    if return_entropy:
        log_dist = logits.log_softmax(dim=-1)
        entropy = -(log_dist.exp() * log_dist).sum(dim=-1) * mask
    return TokenLogProbs(logp=logp, mask=mask, entropy=entropy)


def generated_to_targets(sequences: torch.Tensor, eos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``generate`` output (start token first) -> (labels, mask) cut after the first eos."""
    labels = sequences[:, 1:]
    is_eos = (labels == eos).long()
    # A token is real if no eos came strictly before it.
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos
    mask = (eos_before == 0).float()
    return labels.masked_fill(mask == 0, pad), mask


@torch.no_grad()
def _generate(model, tokenizer, attention_mask, input_ids, encoder_hidden, **generate_kwargs) -> Generated:
    _, eos, pad = special_ids(model)
    was_training = model.training
    model.eval()  # sample from the policy itself, not a dropout-perturbed one
    try:
        sequences = model.generate(
            **_source_kwargs(model, attention_mask, input_ids, encoder_hidden),
            eos_token_id=eos,
            pad_token_id=pad,
            **generate_kwargs,
        )
    finally:
        model.train(was_training)
    labels, mask = generated_to_targets(sequences.cpu(), eos, pad)
    texts = tokenizer.batch_decode(labels.masked_fill(mask == 0, pad), skip_special_tokens=True)
    return Generated(labels=labels, mask=mask, texts=[t.strip() for t in texts])


def generate_greedy(
    model,
    tokenizer,
    *,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    encoder_hidden=None,
    max_new_tokens: int = 24,
) -> Generated:
    return _generate(
        model,
        tokenizer,
        attention_mask,
        input_ids,
        encoder_hidden,
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
    )


def sample_k(
    model,
    tokenizer,
    *,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    encoder_hidden=None,
    k: int,
    top_k: int = 0,
    top_p: float = 1.0,
    temperature: float = 1.0,
    max_new_tokens: int = 24,
    seed: int = 0,
) -> Generated:
    """``k`` samples per source; rows ``i*k .. i*k+k-1`` belong to source ``i``. Same seed -> same samples.

    ``top_k=0`` and ``top_p=1.0`` sample from the full distribution. The global RNG is left untouched.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 samples per source; got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use generate_greedy for argmax); got {temperature}")
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _generate(
            model,
            tokenizer,
            attention_mask,
            input_ids,
            encoder_hidden,
            do_sample=True,
            num_beams=1,
            num_return_sequences=k,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
        )


# --- batching over a split's sources -----------------------------------------------------------


def source_kwargs(sources: EncodedSources | dict, indices: torch.Tensor) -> dict:
    """Keyword arguments for this module's functions for rows ``indices`` of a split's sources:
    cached encoder states, or token ids (``tokenize_sources`` of the whole split) trimmed to the
    rows' longest source."""
    if isinstance(sources, EncodedSources):
        chosen = sources.select(indices)
        return {"attention_mask": chosen.attention_mask, "encoder_hidden": chosen.hidden}
    mask = sources["attention_mask"][indices]
    length = max(int(mask.sum(dim=1).max()), 1)
    return {"attention_mask": mask[:, :length], "input_ids": sources["input_ids"][indices][:, :length]}


def source_lengths(sources: EncodedSources | dict) -> torch.Tensor:
    """Real tokens per source ``[N]``."""
    mask = sources.attention_mask if isinstance(sources, EncodedSources) else sources["attention_mask"]
    return mask.sum(dim=1)


def length_batches(lengths: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Positions ``0..len(lengths)-1`` in batches of similar length (longest first), so a batch pads
    to its own longest source instead of the split's; generation pays for padding at every token."""
    order = torch.argsort(torch.as_tensor(lengths), descending=True, stable=True)
    return list(order.split(batch_size))


def sample_lists(
    model,
    tokenizer,
    sources: EncodedSources | dict,
    rows: torch.Tensor,
    *,
    k: int,
    seed: int,
    batch_size: int = 32,
    **sampling,
) -> list[list[str]]:
    """``k`` sampled texts for each source row in ``rows`` (in that order), generated in batches of
    similar source length; batch ``b`` samples with seed ``seed + b``. ``sampling``: top_k, top_p,
    temperature, max_new_tokens of ``sample_k``."""
    by_position: dict[int, list[str]] = {}
    for batch, positions in enumerate(length_batches(source_lengths(sources)[rows], batch_size)):
        out = sample_k(
            model, tokenizer, **source_kwargs(sources, rows[positions]), k=k, seed=seed + batch, **sampling
        )
        groups = [out.texts[j : j + k] for j in range(0, len(out.texts), k)]
        by_position.update(zip(positions.tolist(), groups, strict=True))
    return [by_position[position] for position in range(len(rows))]


def greedy_texts(
    model, tokenizer, sources: EncodedSources | dict, n: int, batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy outputs for the first ``n`` sources, decoded in batches of similar source length."""
    by_row: dict[int, str] = {}
    for rows in length_batches(source_lengths(sources)[:n], batch_size):
        texts = generate_greedy(
            model, tokenizer, **source_kwargs(sources, rows), max_new_tokens=max_new_tokens
        ).texts
        by_row.update(zip(rows.tolist(), texts, strict=True))
    return [by_row[row] for row in range(n)]
