"""Frozen task models that turn (prompt, input) pairs into class probabilities.

Every model shares one interface (``TaskModel``), ``class_probs(prompts, inputs) -> Tensor[P, N, C]``,
where ``inputs`` is a list of texts or what ``encode_inputs(texts)`` returned for them (encode a split
once, then score many prompts against it). A blank input ("") is an input like any other: the model
sees only the prompt and the verbalizers (published few-shot splits hold such rows).

- ``PrototypeTaskModel`` (embedded default, runs offline): a sentence encoder scores class c by
  cosine(emb(input), emb(prompt + " " + verbalizer_c)). Input embeddings do not depend on the
  prompt, so a split is encoded once and a prompt costs only C short forwards.
- ``PrefixLMTaskModel`` (prompt-conditioned, runs offline): the same encoder read as a prefix LM
  (``components.prefix_encoder``): the input's states are cached once per split and only the ~7
  appended prompt/verbalizer positions run per (input, prompt). The default reading, "filled",
  scores class c by cosine(emb("{input} {prompt} {verbalizer_c}"), emb(input)): the filled template
  that keeps the input's meaning best wins, so the prompt changes how every input is read.
- ``MaskedLMTaskModel`` (the paper's, roberta-large): the prompt is put in a cloze template and the
  class probabilities are a softmax over the verbalizer tokens' logits at the mask.

A prompt must hold at least one non-special token; the "no prompt" baseline is a separate,
explicit method (``no_prompt_class_probs``) so an empty prompt can never slip in by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.data import VERBALIZERS, DataError
from components.prefix_encoder import (
    PrefixStates,
    encode_prefix,
    extend,
    pool_shared_continuations,
    pooled_continuations,
)

# Cloze templates of the paper (RLPrompt): the mask goes after the input for sentiment, before it for topic.
TEMPLATES: dict[str, str] = {
    "sst-2": "{input} {prompt} {mask} .",
    "agnews": "{mask} {prompt} {input}",
}


class PromptError(ValueError):
    """A prompt the task model cannot use (empty, or only special/pad tokens)."""


class VerbalizerError(DataError):
    """A verbalizer word that is not a single token of the task model's vocabulary."""


def verbalizers_for(dataset: str) -> tuple[str, ...]:
    if dataset not in VERBALIZERS:
        raise ValueError(f"unknown dataset {dataset!r}: no verbalizers; use one of {sorted(VERBALIZERS)}")
    return VERBALIZERS[dataset]


def template_for(dataset: str) -> str:
    if dataset not in TEMPLATES:
        raise ValueError(f"unknown dataset {dataset!r}: no template; use one of {sorted(TEMPLATES)}")
    return TEMPLATES[dataset]


def check_verbalizers(verbalizers: tuple[str, ...] | list[str], tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise VerbalizerError unless every verbalizer is one token of ``tokenizer`` (with or without the
    leading space a word has inside a sentence)."""
    for word in verbalizers:
        for text in (word, " " + word):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1 and ids[0] != tokenizer.unk_token_id:
                break
        else:
            raise VerbalizerError(
                f"data.prompt.verbalizers: {word!r} is not one token of the task model's tokenizer (it "
                f"reads {tokenizer.tokenize(word)}); pick a one-token word for that class"
            )


def check_prompts(prompts: list[str], tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise PromptError if a prompt is empty or only special tokens (pad, cls, mask...)."""
    if isinstance(prompts, str):
        raise PromptError("prompts must be a list of strings, got one string; wrap it in a list")
    special = set(tokenizer.all_special_ids)
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not any(i not in special for i in ids):
            raise PromptError(
                f"prompt {prompt!r} is empty or only special tokens; give it real words "
                "(for the no-prompt baseline call no_prompt_class_probs)"
            )


def _special_wrapping(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after one text ([CLS]/[SEP], <s>/</s>)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    return full[:start], full[start + len(plain) :]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass(frozen=True)
class EncodedInputs:
    """Inputs encoded once per split by a task model's ``encode_inputs``; opaque to callers."""

    data: object
    count: int

    def __len__(self) -> int:
        return self.count


class TaskModel:
    """What every task model shares: ``class_probs`` checks the prompts and scores them stripped; the
    no-prompt baseline scores the empty prompt, which ``class_probs`` never lets through. A subclass
    has ``tokenizer`` and implements ``encode_inputs`` and ``_probs(prompts, inputs) -> [P, N, C]``."""

    tokenizer: PreTrainedTokenizerBase

    def encode_inputs(self, texts: list[str]) -> EncodedInputs:
        raise NotImplementedError

    def class_probs(self, prompts: list[str], inputs: list[str] | EncodedInputs) -> torch.Tensor:
        check_prompts(prompts, self.tokenizer)
        return self._probs([p.strip() for p in prompts], inputs)

    def no_prompt_class_probs(self, inputs: list[str] | EncodedInputs) -> torch.Tensor:
        """The same score without a prompt. Returns [1, N, C]."""
        return self._probs([""], inputs)

    def _probs(self, prompts: list[str], inputs: list[str] | EncodedInputs) -> torch.Tensor:
        raise NotImplementedError


class PrototypeTaskModel(TaskModel):
    """Class score = cosine(mean-pooled emb(input), emb(prompt + " " + verbalizer)) / temperature.

    ``temperature`` only sharpens the probabilities (accuracy does not depend on it); cosine gaps
    between classes are a few hundredths, so 0.05 keeps the gap reward in a useful range.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        encoder: PreTrainedModel,
        verbalizers: tuple[str, ...] | list[str],
        temperature: float = 0.05,
        max_input_tokens: int = 128,
        batch_size: int = 64,
    ):
        if len(verbalizers) < 2:
            raise VerbalizerError(f"need at least 2 verbalizers, got {list(verbalizers)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.verbalizers = tuple(verbalizers)
        self.temperature = temperature
        self.max_input_tokens = max_input_tokens
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm mean-pooled sentence embeddings, [len(texts), H]."""
        # Batch texts of similar length together: padding is most of the cost on long splits.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                [texts[i] for i in order[start : start + self.batch_size]],
                padding=True,
                truncation=True,
                max_length=self.max_input_tokens,
                return_tensors="pt",
            ).to(_device(self.encoder))
            hidden = self.encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            chunks.append(F.normalize(pooled, dim=-1))
        embeddings = torch.empty_like(torch.cat(chunks))
        embeddings[torch.tensor(order, dtype=torch.long)] = torch.cat(chunks)
        return embeddings

    def encode_inputs(self, texts: list[str]) -> EncodedInputs:
        return EncodedInputs(self.embed(list(texts)), len(texts))

    def _probs(self, prompts: list[str], inputs) -> torch.Tensor:
        encoded = inputs if isinstance(inputs, EncodedInputs) else self.encode_inputs(inputs)
        # no prompt: class embedding = emb(verbalizer)
        label_texts = [f"{p} {v}" if p else v for p in prompts for v in self.verbalizers]
        labels = self.embed(label_texts).view(len(prompts), len(self.verbalizers), -1)  # [P, C, H]
        cosine = torch.einsum("nh,pch->pnc", encoded.data, labels)
        return torch.softmax(cosine / self.temperature, dim=-1)


PrefixReading = Literal["filled", "conditioned", "combined"]


class PrefixLMTaskModel(TaskModel):
    """Prompt-conditioned task model: the encoder reads ``[CLS] input prompt ...`` as a prefix LM.

    Readings (class score before ``/ temperature`` and the softmax), with emb = unit-norm mean pool:
    - ``filled``: cosine(emb(input prompt verbalizer_c), emb(input)); the measured default
      (``python -m bench.prompt_task_models``): the prompt moves the reading of every input.
    - ``conditioned``: cosine(emb(input prompt), emb(verbalizer_c)).
    - ``combined``: cosine(emb(input prompt), emb(prompt verbalizer_c)).
    The input always comes first (its states are the cached prefix), whatever the dataset's cloze
    template. ``encode_inputs`` keeps token ids (cheap to save); the per-layer keys and values of a
    split of at most ``cache_tokens`` tokens are kept after its first use, larger splits are encoded
    ``batch_size`` inputs at a time on each call. ``filled`` cosine gaps are ~6x smaller than the
    prototype's, so temperature 0.01 here is as sharp as 0.05 there.

    ``packed`` (default) runs the continuations with ``pool_shared_continuations`` (no padding, attention
    split between the cache and each continuation); ``packed=False`` is the straightforward padded
    ``extend`` with a block-diagonal mask, the same probabilities to float rounding, kept as the
    reference for the tests and ``python -m bench.prompt_scoring``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        encoder: PreTrainedModel,
        verbalizers: tuple[str, ...] | list[str],
        reading: PrefixReading = "filled",
        temperature: float = 0.01,
        max_input_tokens: int = 128,
        batch_size: int = 64,
        max_continuations: int = 32,
        cache_tokens: int = 8192,
        packed: bool = True,
    ):
        if len(verbalizers) < 2:
            raise VerbalizerError(f"need at least 2 verbalizers, got {list(verbalizers)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if reading not in ("filled", "conditioned", "combined"):
            raise ValueError(f"unknown reading {reading!r}; use filled, conditioned or combined")
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ValueError(
                f"{type(tokenizer).__name__} has no [CLS]/[SEP]; the prefix reading needs a BERT"
            )
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.sentence = PrototypeTaskModel(tokenizer, encoder, verbalizers, temperature, max_input_tokens)
        self.verbalizers = tuple(verbalizers)
        self.reading = reading
        self.temperature = temperature
        self.max_input_tokens = max_input_tokens
        self.batch_size = batch_size
        self.max_continuations = max_continuations
        self.cache_tokens = cache_tokens
        self.packed = packed
        self._cache: dict[int, tuple[EncodedInputs, list[tuple[slice, PrefixStates, torch.Tensor]]]] = {}

    def encode_inputs(self, texts: list[str]) -> EncodedInputs:
        ids = [
            self.tokenizer(t, truncation=True, max_length=self.max_input_tokens)["input_ids"][:-1]  # no [SEP]
            for t in texts
        ]
        return EncodedInputs(ids, len(ids))

    def _continuation_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        sep = [self.tokenizer.sep_token_id]
        rows = [ids + sep for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        width = max(map(len, rows))
        ids = torch.tensor([r + [self.tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
        device = _device(self.encoder)
        return ids.to(device), mask.to(device)

    def _prefix_batches(self, encoded: EncodedInputs) -> list[tuple[slice, PrefixStates, torch.Tensor]]:
        """(rows, prefix states, emb(input)) per batch of inputs; kept for small splits."""
        hit = self._cache.get(id(encoded))
        if hit is not None and hit[0] is encoded:
            return hit[1]
        device = _device(self.encoder)
        batches = []
        for start in range(0, len(encoded), self.batch_size):
            rows = encoded.data[start : start + self.batch_size]
            width = max(map(len, rows))
            ids = torch.tensor([r + [self.tokenizer.pad_token_id] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            prefix = encode_prefix(self.encoder, ids.to(device), mask.to(device))
            embedding = F.normalize(prefix.state_sum / prefix.lengths.unsqueeze(-1), dim=-1)
            batches.append((slice(start, start + len(rows)), prefix, embedding))
        if sum(map(len, encoded.data)) <= self.cache_tokens:
            self._cache = {k: v for k, v in list(self._cache.items())[-3:]}  # a few splits at most
            self._cache[id(encoded)] = (encoded, batches)
        return batches

    def _pooled(self, prefix: PrefixStates, texts: list[str]) -> torch.Tensor:
        """emb("[CLS] input text [SEP]") for every input and text: [N, len(texts), H]."""
        out = []
        for start in range(0, len(texts), self.max_continuations):
            ids, mask = self._continuation_ids(texts[start : start + self.max_continuations])
            if self.packed:
                out.append(pool_shared_continuations(self.encoder, prefix, ids, mask))
                continue
            n = len(prefix)
            ids = ids.unsqueeze(0).expand(n, -1, -1).contiguous()
            mask = mask.unsqueeze(0).expand(n, -1, -1).contiguous()
            out.append(pooled_continuations(prefix, extend(self.encoder, prefix, ids, mask), mask))
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def _probs(self, prompts: list[str], inputs) -> torch.Tensor:
        encoded = inputs if isinstance(inputs, EncodedInputs) else self.encode_inputs(inputs)
        n_prompts, n_classes = len(prompts), len(self.verbalizers)
        filled = [" ".join(f"{p} {v}".split()) for p in prompts for v in self.verbalizers]
        if self.reading == "conditioned":
            labels = self.sentence.embed(list(self.verbalizers)).expand(n_prompts, -1, -1)  # [P, C, H]
        elif self.reading == "combined":
            labels = self.sentence.embed(filled).view(n_prompts, n_classes, -1)
        cosines = []
        for _, prefix, embedding in self._prefix_batches(encoded):
            if self.reading == "filled":
                pooled = self._pooled(prefix, filled).view(len(prefix), n_prompts, n_classes, -1)
                cosines.append(torch.einsum("npch,nh->pnc", pooled, embedding))
                continue
            with_prompt = (
                self._pooled(prefix, prompts) if prompts != [""] else embedding.unsqueeze(1)
            )  # [N, P, H]; no prompt: emb(input)
            cosines.append(torch.einsum("nph,pch->pnc", with_prompt, labels))
        return torch.softmax(torch.cat(cosines, dim=1) / self.temperature, dim=-1)


class MaskedLMTaskModel(TaskModel):
    """The paper's task model: class probs = softmax over verbalizer logits at the template's mask.

    ``template`` holds ``{input}``, ``{prompt}`` and ``{mask}`` (see TEMPLATES). The input is tokenized
    once (``encode_inputs``) and truncated to ``max_input_tokens`` so the mask is never cut off.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        model: PreTrainedModel,
        verbalizers: tuple[str, ...] | list[str],
        template: str,
        max_input_tokens: int = 256,
        batch_size: int = 32,
    ):
        for field in ("{input}", "{prompt}", "{mask}"):
            if template.count(field) != 1:
                raise ValueError(f"template {template!r} must contain {field} exactly once")
        if tokenizer.mask_token is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no mask token; use a masked LM")
        if len(verbalizers) < 2:
            raise VerbalizerError(f"need at least 2 verbalizers, got {list(verbalizers)}")
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.verbalizers = tuple(verbalizers)
        self.template = template
        self.max_input_tokens = max_input_tokens
        self.batch_size = batch_size
        # Split the template around the input; the input is tokenized on its own (with a leading
        # space when something precedes it, as it would be inside the full string for BPE).
        self._prefix, self._suffix = template.split("{input}")
        self._input_after_text = bool(self._prefix.strip())
        self._bos_ids, self._eos_ids = _special_wrapping(tokenizer)
        mask_first = template.lstrip().startswith("{mask}")
        self.verbalizer_ids = torch.tensor(
            [self._single_token_id(v, prefer_space=not mask_first) for v in self.verbalizers]
        )

    def _single_token_id(self, word: str, prefer_space: bool) -> int:
        variants = [" " + word, word] if prefer_space else [word, " " + word]
        for text in variants:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1 and ids[0] != self.tokenizer.unk_token_id:
                return ids[0]
        raise VerbalizerError(
            f"verbalizer {word!r} is not a single token of the task model's vocabulary "
            f"(tokenizes to {self.tokenizer.tokenize(' ' + word)}); pick a one-token word"
        )

    def encode_inputs(self, texts: list[str]) -> EncodedInputs:
        lead = " " if self._input_after_text else ""
        ids = [  # a blank input is no tokens (a lone space is a token of its own to a BPE tokenizer)
            self.tokenizer(lead + t.strip(), add_special_tokens=False)["input_ids"][: self.max_input_tokens]
            if t.strip()
            else []
            for t in texts
        ]
        return EncodedInputs(ids, len(ids))

    def _segment_ids(self, text: str, prompt: str) -> list[int]:
        lead = " " if text[:1].isspace() else ""  # BPE: a word after the input keeps its space
        text = " ".join(text.format(prompt=prompt, mask=self.tokenizer.mask_token).split())
        return self.tokenizer(lead + text, add_special_tokens=False)["input_ids"] if text else []

    def sequence_ids(self, prompt: str, input_ids: list[int]) -> list[int]:
        """Token ids of the filled template (with the model's special tokens) for one encoded input."""
        prefix = self._segment_ids(self._prefix.rstrip(), prompt)
        suffix = self._segment_ids(self._suffix, prompt)
        return self._bos_ids + prefix + list(input_ids) + suffix + self._eos_ids

    @torch.no_grad()
    def _probs(self, prompts: list[str], inputs) -> torch.Tensor:
        encoded = inputs if isinstance(inputs, EncodedInputs) else self.encode_inputs(inputs)
        sequences = [self.sequence_ids(prompt, input_ids) for prompt in prompts for input_ids in encoded.data]
        device = _device(self.model)
        verbalizer_ids = self.verbalizer_ids.to(device)
        out = []
        for start in range(0, len(sequences), self.batch_size):
            batch = self.tokenizer.pad(
                {"input_ids": sequences[start : start + self.batch_size]}, return_tensors="pt"
            ).to(device)
            logits = self.model(**batch).logits
            rows, cols = (batch["input_ids"] == self.tokenizer.mask_token_id).nonzero(as_tuple=True)
            if len(rows) != len(batch["input_ids"]):
                raise PromptError("a prompt contains the mask token; remove it from the prompt")
            out.append(torch.softmax(logits[rows, cols][:, verbalizer_ids].float(), dim=-1))
        return torch.cat(out).view(len(prompts), len(encoded), len(self.verbalizers))


def build_task_model(
    name: str,
    dataset: str | None = None,
    kind: str = "prototype",
    *,
    verbalizers: tuple[str, ...] | list[str] | None = None,
    template: str | None = None,
    **kwargs,
) -> PrototypeTaskModel | PrefixLMTaskModel | MaskedLMTaskModel:
    """Load a task model by model name ("minilm", "tiny", or a hub name): the verbalizers and (masked LM)
    template given, else those of the preset ``dataset``. Every verbalizer must be one token."""
    from components.models import ModelSpec, load_model

    verbalizers = tuple(verbalizers) if verbalizers else verbalizers_for(dataset)
    if kind not in ("prototype", "prefix_lm", "masked_lm"):
        raise ValueError(f"unknown task model kind {kind!r}; use 'prototype', 'prefix_lm' or 'masked_lm'")
    tokenizer, model = load_model(ModelSpec(name, "masked_lm" if kind == "masked_lm" else "encoder"))
    check_verbalizers(verbalizers, tokenizer)
    if kind == "prototype":
        return PrototypeTaskModel(tokenizer, model, verbalizers, **kwargs)
    if kind == "prefix_lm":
        return PrefixLMTaskModel(tokenizer, model, verbalizers, **kwargs)
    return MaskedLMTaskModel(tokenizer, model, verbalizers, template or template_for(dataset), **kwargs)
