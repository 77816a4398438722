"""Run a frozen seq2seq encoder once over every source text and keep its last hidden states.

With the encoder frozen, every later policy step (teacher-forced MLE, sampling, greedy eval)
only needs the decoder, which is what makes summarization training fit on a small CPU.

On disk the states are int8 with one scale per (source, hidden channel): half the size of fp16
(the cache is the largest output of a summarization run), at a relative error of about 1 %
(bench/encoder_cache_storage.py at the tag diagnostics-2026-12 measured it and its effect on ROUGE).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.modeling_outputs import BaseModelOutput

FORMAT = "pgg-encoded-sources-v2"
FORMATS_READ = ("pgg-encoded-sources-v1", FORMAT)  # v1: the states as they are (fp16)


class EncoderCacheError(ValueError):
    """An encoder cache file is missing, corrupt or of another format."""


@dataclass(frozen=True)
class EncodedSources:
    """Encoder last hidden states ``hidden[N, S, H]`` and their ``attention_mask[N, S]`` (1 = real token)."""

    hidden: torch.Tensor
    attention_mask: torch.Tensor

    def __post_init__(self):
        if self.hidden.dim() != 3 or self.attention_mask.shape != self.hidden.shape[:2]:
            raise ValueError(
                f"hidden must be [N, S, H] and attention_mask [N, S]; got {tuple(self.hidden.shape)} "
                f"and {tuple(self.attention_mask.shape)}"
            )

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def select(self, indices, trim: bool = True) -> EncodedSources:
        """Rows ``indices``; with ``trim`` the padding columns no selected row uses are dropped."""
        index = torch.as_tensor(indices, dtype=torch.long)
        hidden, mask = self.hidden[index], self.attention_mask[index]
        if trim and len(index) > 0:
            length = max(int(mask.sum(dim=1).max()), 1)
            hidden, mask = hidden[:, :length], mask[:, :length]
        return EncodedSources(hidden=hidden, attention_mask=mask)

    def encoder_outputs(self, dtype: torch.dtype = torch.float32, device=None) -> BaseModelOutput:
        """The states as ``model(encoder_outputs=...)`` / ``model.generate(encoder_outputs=...)`` take them."""
        return BaseModelOutput(last_hidden_state=self.hidden.to(device=device, dtype=dtype))

    def save(self, path: str | os.PathLike, storage: str = "int8") -> None:
        """Write to one file atomically: a crash mid-write never leaves a half-written cache at ``path``.
        ``storage`` "int8" quantizes (see the module docstring); "native" keeps the states' dtype."""
        if storage not in ("int8", "native"):
            raise ValueError(f"storage must be 'int8' or 'native'; got {storage!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        payload = {"format": FORMAT, "attention_mask": self.attention_mask, "dtype": str(self.hidden.dtype)}
        if storage == "int8":
            payload["quantized"], payload["scale"] = quantize_int8(self.hidden)
        else:
            payload["hidden"] = self.hidden.contiguous()
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EncodedSources:
        path = Path(path)
        if not path.exists():
            raise EncoderCacheError(
                f"encoder cache {path} does not exist; build it with encode_sources(...).save()"
            )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a damaged file
            raise EncoderCacheError(
                f"encoder cache {path} is corrupt ({type(err).__name__}); delete it and rebuild it"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") not in FORMATS_READ:
            raise EncoderCacheError(f"{path} is not a {FORMAT} encoder cache; delete it and rebuild it")
        if "quantized" in payload:
            dtype = getattr(torch, payload["dtype"].removeprefix("torch."))
            hidden = dequantize_int8(payload["quantized"], payload["scale"], dtype)
        else:
            hidden = payload["hidden"]
        return cls(hidden=hidden, attention_mask=payload["attention_mask"])


def quantize_int8(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 of ``hidden[N, S, H]`` with a float32 scale per (row, channel), ``scale[N, 1, H]``:
    per channel, because a few of a transformer's hidden channels are far larger than the rest."""
    values = hidden.float()
    scale = values.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 127
    return torch.round(values / scale).clamp(-127, 127).to(torch.int8), scale


def dequantize_int8(quantized: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (quantized.float() * scale).to(dtype)


@torch.no_grad()
def encode_sources(
    encoder: torch.nn.Module,
    tokenizer,
    texts: list[str],
    max_length: int = 256,
    batch_size: int = 32,
    prefix: str = "",
    dtype: torch.dtype = torch.float16,
) -> EncodedSources:
    """Encode ``texts`` (each prefixed with ``prefix``, e.g. "summarize: " for T5) truncated to ``max_length``.

    ``encoder`` is ``model.get_encoder()`` of a seq2seq model. Storage is ``dtype`` (fp16 halves the
    memory; use float32 where results must match a live encoder bit for bit).
    """
    if not texts:
        raise ValueError("encode_sources got no texts; pass at least one source text")
    if max_length < 1 or batch_size < 1:
        raise ValueError(f"max_length and batch_size must be >= 1; got {max_length} and {batch_size}")
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    batches = []
    for start in range(0, len(texts), batch_size):
        chunk = [prefix + t for t in texts[start : start + batch_size]]
        tokens = tokenizer(chunk, max_length=max_length, truncation=True, padding=True, return_tensors="pt")
        out = encoder(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )
        batches.append((out.last_hidden_state.to("cpu", dtype), tokens["attention_mask"]))
    encoder.train(was_training)
    length = max(h.shape[1] for h, _ in batches)
    hidden = torch.zeros(len(texts), length, batches[0][0].shape[2], dtype=dtype)
    mask = torch.zeros(len(texts), length, dtype=torch.long)
    row = 0
    for h, m in batches:
        hidden[row : row + len(h), : h.shape[1]] = h
        mask[row : row + len(h), : m.shape[1]] = m
        row += len(h)
    return EncodedSources(hidden=hidden, attention_mask=mask)
