"""A BERT encoder read as a prefix LM: an input's states are computed once, short continuations reuse them.

The attention mask is the prefix-LM one: input tokens ``[CLS] x`` attend only to input tokens, and
the tokens appended after them (a prompt, a verbalizer, ``[SEP]``) attend to the input and to
their own continuation. The input's states, and each layer's keys and values, therefore do not
depend on what is appended: ``encode`` computes them once per split, and ``extend`` runs only the
appended positions (about 7 per prompt) through the layers against the cached keys and values.

Several continuations of one input are scored in one call: they are laid side by side after the
input, with a block-diagonal mask so that a continuation never sees another one, and position ids
that restart after the input for each of them. The result equals the full forward of each
``[CLS] x continuation`` with the prefix-LM mask (tests check it against the Hugging Face model).

``pool_shared_continuations`` is the fast path of the task model, where every input gets the same
continuations and only their mean-pooled states are needed: the same numbers as ``extend`` (to float
rounding) without padding tokens, copies of the cache or a block-diagonal mask. ``extend`` stays the
straightforward reference it is checked against. The continuation tokens attend to each other in
both directions, so a prompt's states depend on the verbalizer after it: they cannot be shared
across classes without changing the scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel


@dataclass(frozen=True)
class PrefixStates:
    """Cached states of N inputs padded to length L (all tensors on the encoder's device)."""

    keys: tuple[torch.Tensor, ...]  # per layer [N, heads, L, head_dim]
    values: tuple[torch.Tensor, ...]  # per layer [N, heads, L, head_dim]
    mask: torch.Tensor  # [N, L] bool, True on real tokens
    state_sum: torch.Tensor  # [N, H] sum of the last layer's states over real tokens (for mean pooling)
    lengths: torch.Tensor  # [N] number of real tokens ([CLS] included)

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, index: slice) -> PrefixStates:
        return PrefixStates(
            tuple(k[index] for k in self.keys),
            tuple(v[index] for v in self.values),
            self.mask[index],
            self.state_sum[index],
            self.lengths[index],
        )


def _check_bert(encoder: PreTrainedModel) -> None:
    layer = encoder.encoder.layer[0] if hasattr(encoder, "encoder") else None
    if layer is None or not hasattr(layer, "attention") or not hasattr(encoder, "embeddings"):
        raise ValueError(f"{type(encoder).__name__} is not a BERT-style encoder; the prefix cache needs one")
    if getattr(encoder.config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError("the prefix cache needs absolute position embeddings")


@torch.no_grad()
def encode_prefix(
    encoder: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> PrefixStates:
    """Run ``[CLS] x`` (padded, right) through the encoder once; keep every layer's keys and values."""
    _check_bert(encoder)
    out = encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    heads = encoder.config.num_attention_heads
    n, length = input_ids.shape
    keys, values = [], []
    for layer, hidden in zip(encoder.encoder.layer, out.hidden_states[:-1], strict=True):
        attention = layer.attention.self
        keys.append(attention.key(hidden).view(n, length, heads, -1).transpose(1, 2))
        values.append(attention.value(hidden).view(n, length, heads, -1).transpose(1, 2))
    mask = attention_mask.bool()
    last = out.last_hidden_state * mask.unsqueeze(-1)
    return PrefixStates(tuple(keys), tuple(values), mask, last.sum(1), mask.sum(1))


@torch.no_grad()
def extend(
    encoder: PreTrainedModel, prefix: PrefixStates, continuations: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Last-layer states of S continuations of each input: ``continuations`` [N, S, T] -> [N, S, T, H].

    ``mask`` [N, S, T] is True on real continuation tokens (padding is on the right).
    """
    n, s, t = continuations.shape
    device = continuations.device
    heads = encoder.config.num_attention_heads
    # Positions restart after each input for every continuation.
    positions = prefix.lengths.view(n, 1, 1) + torch.arange(t, device=device).view(1, 1, t)
    hidden = encoder.embeddings(
        input_ids=continuations.view(n, s * t),
        position_ids=positions.expand(n, s, t).reshape(n, s * t),
        token_type_ids=torch.zeros(n, s * t, dtype=torch.long, device=device),
    )
    # Query (s, i) sees the input's real tokens and the real tokens of its own continuation s.
    own = torch.eye(s, dtype=torch.bool, device=device).repeat_interleave(t, 0).repeat_interleave(t, 1)
    new_keys = own.unsqueeze(0) & mask.view(n, 1, s * t)
    old_keys = prefix.mask.unsqueeze(1).expand(n, s * t, -1)
    attend = torch.cat([old_keys, new_keys], dim=-1).unsqueeze(1)  # [N, 1, S*T, L + S*T]
    for layer, cached_k, cached_v in zip(encoder.encoder.layer, prefix.keys, prefix.values, strict=True):
        attention = layer.attention.self

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(n, s * t, heads, -1).transpose(1, 2)

        query = split(attention.query(hidden))
        key = torch.cat([cached_k, split(attention.key(hidden))], dim=2)
        value = torch.cat([cached_v, split(attention.value(hidden))], dim=2)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=attend)
        context = context.transpose(1, 2).reshape(n, s * t, -1)
        hidden = layer.attention.output(context, hidden)
        hidden = layer.output(layer.intermediate(hidden), hidden)
    return hidden.view(n, s, t, -1)


def pooled_continuations(prefix: PrefixStates, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit-norm mean pool over ``[CLS] x continuation`` for each continuation: [N, S, H]."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    total = prefix.state_sum.unsqueeze(1) + (states * weights).sum(2)
    count = prefix.lengths.view(-1, 1, 1) + weights.sum(2)
    return F.normalize(total / count, dim=-1)


@torch.no_grad()
def pool_shared_continuations(
    encoder: PreTrainedModel, prefix: PrefixStates, continuations: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``pooled_continuations(prefix, extend(...), mask)`` when every input gets the same S continuations.

    ``continuations`` and ``mask`` are [S, T] (padding on the right); returns [N, S, H]. The same
    numbers as ``extend`` (to float rounding) for less work and fewer copies:
    - the projections and the feed-forward, nearly all the FLOPs, run on the real continuation
      tokens only, packed ([N, M, H], M = the real tokens of all S continuations);
    - attention is split in two products with one softmax over both: the queries against the
      input's cached keys (one batched matmul; the cache is never copied or concatenated) and each
      continuation's queries against its own keys ([S, T, T] blocks, not an [S*T, S*T]
      block-diagonal mask). A continuation sees the input and all of itself, nothing else;
    - the query, key and value projections are one matmul.
    """
    n, (s, t) = len(prefix), continuations.shape
    heads, device = encoder.config.num_attention_heads, continuations.device
    real = mask.reshape(-1).nonzero().squeeze(-1)  # packed token -> its place in the [S*T] grid
    hidden = encoder.embeddings(
        input_ids=continuations.reshape(-1)[real].expand(n, -1),
        position_ids=prefix.lengths.view(n, 1) + torch.arange(t, device=device).repeat(s)[real].view(1, -1),
        token_type_ids=torch.zeros(n, len(real), dtype=torch.long, device=device),
    )  # [N, M, H]
    width, length = hidden.shape[-1], prefix.mask.shape[1]
    head_dim = width // heads

    def grid(packed: torch.Tensor) -> torch.Tensor:
        """[N, M, X] -> [N, S, T, X], zeros on the padding."""
        out = packed.new_zeros(n, s * t, packed.shape[-1]).index_copy_(1, real, packed)
        return out.view(n, s, t, -1)

    # Additive masks: the input's padding, and the padding of the query's own continuation.
    no_prefix = hidden.new_zeros(n, 1, 1, 1, length).masked_fill_(
        ~prefix.mask.view(n, 1, 1, 1, -1), -torch.inf
    )
    no_own = hidden.new_zeros(1, 1, s, 1, t).masked_fill_(~mask.view(1, 1, s, 1, t), -torch.inf)
    for layer, cached_k, cached_v in zip(encoder.encoder.layer, prefix.keys, prefix.values, strict=True):
        projections = (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value)
        weight, bias = torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections])
        qkv = grid(F.linear(hidden, weight, bias)).view(n, s, t, 3, heads, head_dim)
        query, key, value = qkv.permute(3, 0, 4, 1, 2, 5)  # each [N, heads, S, T, head_dim]
        on_prefix = query.reshape(n, heads, s * t, head_dim) @ cached_k.transpose(-1, -2)
        on_own = query @ key.transpose(-1, -2)  # [N, heads, S, T, T]
        scores = torch.cat([on_prefix.view(n, heads, s, t, length) + no_prefix, on_own + no_own], dim=-1)
        weights = torch.softmax(scores.mul_(head_dim**-0.5), dim=-1)
        context = (weights[..., :length].reshape(n, heads, s * t, length) @ cached_v).view_as(query)
        context += weights[..., length:] @ value
        context = context.permute(0, 2, 3, 1, 4).reshape(n, s * t, width)[:, real]
        hidden = layer.attention.output(context, hidden)
        hidden = layer.output(layer.intermediate(hidden), hidden)
    # Mean pool over [CLS] x continuation: the input's cached sum plus each continuation's tokens.
    total = prefix.state_sum.unsqueeze(1) + grid(hidden).sum(2)
    count = prefix.lengths.view(-1, 1, 1) + mask.sum(-1).view(1, -1, 1)
    return F.normalize(total / count, dim=-1)
