"""The prompt policy: a frozen language model plus a small trainable MLP that writes discrete prompts.

As in RLPrompt and the paper, the policy is a frozen causal LM; a trainable MLP adaptor acts on its
last hidden state and the frozen output head turns the result into next-token logits. The adaptor
is residual with a zero-initialised last layer, so the initial policy is exactly the base LM.
Every prompt starts from a BOS/CLS token and has ``prompt_length`` tokens drawn from an action
space of allowed token ids (never special tokens, so a sampled prompt is never empty).

The paper uses ``distilgpt2`` with its LM head and the full vocabulary (``build_prompt_policy(
"distilgpt2")``). The embedded offline default is the MiniLM used causally (``build_prompt_policy(
"minilm")``), chosen because it is the only pretrained LM that ships with the project:
- its BERT layers run with a causal mask (``is_decoder=True``), so a prefix never sees later tokens
  and teacher-forced log-probs equal the sampling distribution;
- its MLM head is absent from the sentence-transformers checkpoint (random), so logits are the
  dot product with the frozen, pretrained word embeddings instead: the base policy prefers words
  near the context in embedding space, a weak but sensible prior that the adaptor reshapes;
- the action space is restricted to whole-word vocabulary tokens (ASCII letters, no ``##`` pieces,
  no special tokens, length >= 2), so prompts are readable words the task model tokenizes back the
  same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

OutputHead = Literal["lm_head", "input_embeddings"]


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """-inf below each row's k-th largest logit; a tie with the k-th keeps every tied token (RLPrompt's rule)."""
    kth = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


class ResidualMLPAdaptor(nn.Module):
    """h + W2 relu(W1 h); W2 starts at zero so the adaptor starts as the identity."""

    def __init__(self, hidden_size: int, inner_size: int = 2048):
        super().__init__()
        self.up = nn.Linear(hidden_size, inner_size)
        self.down = nn.Linear(inner_size, hidden_size)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.down(torch.relu(self.up(hidden)))


def whole_word_token_ids(tokenizer: PreTrainedTokenizerBase, min_length: int = 2) -> list[int]:
    """Vocabulary ids that are whole ASCII words of at least ``min_length`` letters.

    WordPiece: no ``##`` continuation pieces. Byte-level BPE / SentencePiece: only word-initial
    tokens (``Ġword`` / ``▁word``), so consecutive tokens decode to space-separated words.
    """
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_ids)
    marker = next((m for m in ("Ġ", "▁") if sum(t.startswith(m) for t in vocab) > len(vocab) // 10), None)
    ids = []
    for token, index in vocab.items():
        if index in special or token.startswith("##"):
            continue
        if marker is not None:
            if not token.startswith(marker):
                continue
            token = token[len(marker) :]
        if len(token) >= min_length and token.isascii() and token.isalpha():
            ids.append(index)
    if not ids:
        raise ValueError(
            f"no whole-word tokens of length >= {min_length} in this vocabulary; lower min_length"
        )
    return sorted(ids)


def non_special_token_ids(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> list[int]:
    """All ids except special tokens and tokens that decode to only whitespace (the paper's space)."""
    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[i] for i in range(vocab_size)])
    return [i for i, text in enumerate(texts) if i not in special and text.strip()]


class PromptPolicy(nn.Module):
    """Frozen causal LM + trainable residual MLP adaptor over a restricted action space.

    ``output_head``: "lm_head" uses the model's own (trained) LM head; "input_embeddings" scores
    with the frozen input word embeddings (for backbones whose LM head is untrained).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        model: PreTrainedModel,
        prompt_length: int = 5,
        adaptor_inner_size: int = 2048,
        output_head: OutputHead = "lm_head",
        allowed_token_ids: list[int] | None = None,
        start_token_id: int | None = None,
    ):
        super().__init__()
        if prompt_length < 1:
            raise ValueError(f"prompt_length must be >= 1, got {prompt_length}")
        if output_head not in ("lm_head", "input_embeddings"):
            raise ValueError(f"unknown output_head {output_head!r}; use 'lm_head' or 'input_embeddings'")
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.output_head = output_head
        self.lm = model.eval().requires_grad_(False)
        vocab_size = model.get_input_embeddings().weight.shape[0]
        if start_token_id is None:
            start_token_id = (
                tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
            )
        if start_token_id is None:
            raise ValueError("tokenizer has neither a BOS nor a CLS token; pass start_token_id")
        self.start_token_id = start_token_id
        if allowed_token_ids is None:
            allowed_token_ids = non_special_token_ids(tokenizer, vocab_size)
        special = set(tokenizer.all_special_ids)
        bad = [i for i in allowed_token_ids if i in special or not 0 <= i < vocab_size]
        if bad or not allowed_token_ids:
            raise ValueError(
                f"allowed_token_ids must be non-empty, in [0, {vocab_size}) and hold no special tokens; "
                f"bad ids: {bad[:5]}"
            )
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        allowed[torch.tensor(allowed_token_ids)] = True
        self.register_buffer("allowed", allowed, persistent=False)
        self.register_buffer("allowed_ids", torch.tensor(sorted(set(allowed_token_ids))), persistent=False)
        self.adaptor = ResidualMLPAdaptor(model.config.hidden_size, adaptor_inner_size)

    def train(self, mode: bool = True) -> PromptPolicy:
        super().train(mode)
        self.lm.eval()  # frozen backbone: no dropout, ever
        return self

    def next_token_logits(self, input_ids: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Logits [n, T, V] for the token after each position (T=1 with ``last_only``);
        disallowed tokens are -inf."""
        with torch.no_grad():
            hidden = self.lm.base_model(input_ids=input_ids).last_hidden_state
        if last_only:
            hidden = hidden[:, -1:]
        hidden = self.adaptor(hidden)
        if self.output_head == "lm_head":
            logits = self.lm.get_output_embeddings()(hidden)
        else:
            logits = hidden @ self.lm.get_input_embeddings().weight.T
        return logits.float().masked_fill(~self.allowed, float("-inf"))

    def _with_start(self, token_ids: torch.Tensor) -> torch.Tensor:
        start = torch.full((token_ids.shape[0], 1), self.start_token_id, device=token_ids.device)
        return torch.cat([start, token_ids], dim=1)

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(token_ids.tolist(), skip_special_tokens=True)]

    @torch.no_grad()
    def sample(
        self,
        n: int,
        top_k: int | None = 256,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, list[str]]:
        """Sample ``n`` prompts token by token with top-k; returns (token_ids [n, L], texts)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        device = self.allowed.device
        ids = torch.empty((n, 0), dtype=torch.long, device=device)
        for _ in range(self.prompt_length):
            logits = self.next_token_logits(self._with_start(ids), last_only=True)[:, -1] / temperature
            if top_k:
                logits = top_k_filter(logits, min(top_k, len(self.allowed_ids)))
            probs = torch.softmax(logits, dim=-1)
            next_ids = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
            ids = torch.cat([ids, next_ids], dim=1)
        return ids, self.decode(ids)

    @torch.no_grad()
    def greedy(self) -> tuple[torch.Tensor, list[str]]:
        """The policy's most likely prompt, token by token: (token_ids [1, L], [text])."""
        ids = torch.empty((1, 0), dtype=torch.long, device=self.allowed.device)
        for _ in range(self.prompt_length):
            logits = self.next_token_logits(self._with_start(ids), last_only=True)[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        return ids, self.decode(ids)

    def log_probs_and_entropy(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log pi(a_t|s_t) and entropy H(pi(.|s_t)), both [n, L], at temperature 1
        over the whole action space (no top-k): the distribution the adaptor is trained on."""
        logits = self.next_token_logits(self._with_start(token_ids)[:, :-1])
        log_probs = torch.log_softmax(logits, dim=-1)
        chosen = log_probs.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
        if torch.isinf(chosen).any():
            raise ValueError("token_ids hold tokens outside the policy's action space; sample them from it")
        probs = log_probs.exp()
        entropy = -(probs * log_probs.masked_fill(~self.allowed, 0.0)).sum(-1)
        return chosen, entropy

    @torch.no_grad()
    def random_prompts(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, list[str]]:
        """Random-search baseline: tokens drawn uniformly from the same action space."""
        picks = torch.randint(len(self.allowed_ids), (n, self.prompt_length), generator=generator)
        ids = self.allowed_ids.cpu()[picks].to(self.allowed.device)
        return ids, self.decode(ids)

    def save_adaptor(self, path: str | Path) -> None:
        torch.save(self.adaptor.state_dict(), path)

    def load_adaptor(self, path: str | Path) -> None:
        state = torch.load(path, map_location=self.allowed.device, weights_only=True)
        expected = {k: tuple(v.shape) for k, v in self.adaptor.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if expected != got:
            raise ValueError(f"adaptor file {path} has shapes {got}, this policy needs {expected}")
        self.adaptor.load_state_dict(state)


def build_prompt_policy(
    name: str = "minilm",
    prompt_length: int = 5,
    adaptor_inner_size: int = 2048,
    whole_words: bool | None = None,
    min_word_length: int = 2,
) -> PromptPolicy:
    """Policy from a model name. "minilm": frozen MiniLM used causally, scored with its word
    embeddings; "tiny": random tiny GPT-2 for tests; other names: a hub causal LM with its LM head.
    ``whole_words`` (default: on for minilm/tiny, off for hub models, as in the paper)."""
    from components.models import EMBEDDED, TINY, ModelSpec, load_model

    tokenizer, model = load_model(ModelSpec(name, "causal_lm"))
    if whole_words is None:
        whole_words = name in (EMBEDDED, TINY)
    allowed = whole_word_token_ids(tokenizer, min_word_length) if whole_words else None
    return PromptPolicy(
        tokenizer,
        model,
        prompt_length=prompt_length,
        adaptor_inner_size=adaptor_inner_size,
        output_head="input_embeddings" if name == EMBEDDED else "lm_head",
        allowed_token_ids=allowed,
    )
