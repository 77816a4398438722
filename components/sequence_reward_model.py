"""The sequence-level baseline: a scalar Bradley-Terry reward model, as TRL's RewardTrainer builds it.

A backbone reads [source; candidate]; a linear head on the state of the candidate's last real token
gives one score r; the loss is -log sigmoid(r_chosen - r_rejected) over every ordered pair of a list
with distinct preference (a K-wise list gives all its K(K-1)/2 such pairs). It shares
``TokenRewardModel.token_hidden_states`` with the token-level model, so both read the same states,
and with a frozen backbone those states are computed once and only the head trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from components.guidance_trainer import _encode, _pad
from components.preferences import RankedList
from components.reward_model import TokenRewardModel


@dataclass(frozen=True)
class BaselineConfig:
    lr: float
    epochs: int
    batch_size: int  # pairs per step
    patience: int
    seed: int
    max_length: int
    max_source_length: int


def ordered_pairs(lists: Sequence[RankedList]) -> list[tuple[int, int, int]]:
    """(list, better candidate, worse candidate) for every pair with distinct preference."""
    return [
        (i, a, b)
        for i, ranked in enumerate(lists)
        for a in range(len(ranked.scores))
        for b in range(len(ranked.scores))
        if ranked.scores[a] > ranked.scores[b]
    ]


class SequenceRewardModel(nn.Module):
    """One score per candidate: linear head on the last real token's state of ``states_from``."""

    def __init__(self, states_from: TokenRewardModel):
        super().__init__()
        self.states_from = states_from
        self.head = nn.Linear(states_from._token_body().config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def last_token_states(self, ids: list[list[int]], source_ids: list[list[int]] | None, pad_id: int):
        device = next(self.states_from.parameters()).device
        input_ids, mask = _pad(ids, pad_id)
        kwargs = {}
        if source_ids is not None:
            sources, source_mask = _pad(source_ids, pad_id)
            kwargs = {"source_ids": sources.to(device), "source_attention_mask": source_mask.to(device)}
        hidden = self.states_from.token_hidden_states(input_ids.to(device), mask.to(device), **kwargs)
        last = mask.sum(1).clamp(min=1) - 1
        return hidden[torch.arange(len(ids)), last.to(device)]


@dataclass(frozen=True)
class BaselineReport:
    train_loss: float
    val_loss: float
    val_pairwise_accuracy: float
    n_train_pairs: int
    n_val_pairs: int
    epochs_run: int
    best_epoch: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class BradleyTerryTrainer:
    def __init__(self, model: SequenceRewardModel, tokenizer, config: BaselineConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config

    def _candidates(self, lists: Sequence[RankedList]) -> tuple[list, list | None]:
        encoded = _encode(
            [r.source for r in lists], [r.candidates for r in lists], [r.scores for r in lists],
            self.tokenizer, self.config.max_length, self.config.max_source_length,
        )  # fmt: skip
        ids = [row for item in encoded for row in item.candidate_ids]
        sources = None
        if encoded[0].source_ids is not None:
            sources = [item.source_ids for item in encoded for _ in item.candidate_ids]
        return ids, sources

    def _offsets(self, lists):
        offsets, total = [], 0
        for ranked in lists:
            offsets.append(total)
            total += len(ranked.candidates)
        return offsets

    def _scores(
        self, lists, features: torch.Tensor | None, ids, sources
    ) -> Callable[[list[int]], torch.Tensor]:
        """A function: candidate rows -> scores; reads cached features when the backbone is frozen."""
        pad = self.tokenizer.pad_token_id

        def score(rows: list[int]) -> torch.Tensor:
            if features is not None:
                states = features[rows]
            else:
                states = self.model.last_token_states(
                    [ids[r] for r in rows], None if sources is None else [sources[r] for r in rows], pad
                )
            return self.model.head(states.to(self.model.head.weight.dtype)).squeeze(-1)

        return score

    @torch.no_grad()
    def _features(self, ids, sources) -> torch.Tensor | None:
        if not self.model.states_from.freeze_backbone:
            return None
        self.model.eval()
        pad, size, out = self.tokenizer.pad_token_id, 64, []
        for i in range(0, len(ids), size):
            part_sources = None if sources is None else sources[i : i + size]
            out.append(self.model.last_token_states(ids[i : i + size], part_sources, pad).float())
        return torch.cat(out)

    def _loss_and_accuracy(self, score, pairs, offsets) -> tuple[torch.Tensor, float]:
        better = score([offsets[i] + a for i, a, _ in pairs])
        worse = score([offsets[i] + b for i, _, b in pairs])
        margin = better - worse
        return -F.logsigmoid(margin).mean(), (margin > 0).float().mean().item()

    def fit(self, train_lists: Sequence[RankedList], val_lists: Sequence[RankedList]) -> BaselineReport:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        train_pairs, val_pairs = ordered_pairs(train_lists), ordered_pairs(val_lists)
        if not train_pairs or not val_pairs:
            raise ValueError(
                "the baseline needs pairs with distinct preference in both train and held-out lists"
            )
        train_ids, train_sources = self._candidates(train_lists)
        val_ids, val_sources = self._candidates(val_lists)
        train_score = self._scores(
            train_lists, self._features(train_ids, train_sources), train_ids, train_sources
        )
        val_score = self._scores(val_lists, self._features(val_ids, val_sources), val_ids, val_sources)
        train_offsets, val_offsets = self._offsets(train_lists), self._offsets(val_lists)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        best = (math.inf, 0, None, math.nan)  # val loss, epoch, head state, train loss
        stale, epoch = 0, 0
        for epoch in range(1, cfg.epochs + 1):
            self.model.train()
            if self.model.states_from.freeze_backbone:
                self.model.states_from.eval()
            order = torch.randperm(len(train_pairs), generator=generator).tolist()
            losses = []
            for start in range(0, len(order), cfg.batch_size):
                batch = [train_pairs[i] for i in order[start : start + cfg.batch_size]]
                loss, _ = self._loss_and_accuracy(train_score, batch, train_offsets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            self.model.eval()
            with torch.no_grad():
                val_loss = self._loss_and_accuracy(val_score, val_pairs, val_offsets)[0].item()
            if val_loss < best[0] - 1e-6:
                state = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
                best, stale = (val_loss, epoch, state, sum(losses) / len(losses)), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        if best[2] is not None:
            self.model.load_state_dict(best[2], strict=False)
        self.model.eval()
        with torch.no_grad():
            val_loss, accuracy = self._loss_and_accuracy(val_score, val_pairs, val_offsets)
        return BaselineReport(
            train_loss=best[3], val_loss=val_loss.item(), val_pairwise_accuracy=accuracy,
            n_train_pairs=len(train_pairs), n_val_pairs=len(val_pairs), epochs_run=epoch, best_epoch=best[1],
        )  # fmt: skip
