"""Fit a ``TokenRewardModel`` so its aggregated token rewards order candidates like a preference.

Data: ``RankedList(source, candidates, scores)``, K candidates of one input and their
sequence-level preference scores. Each step takes ``batch_size`` lists, scores all B×K
candidates in one forward pass, aggregates the per-token rewards to B×K sequence scores
(``components.aggregation``) and applies a ranking loss (``components.ranking_losses``).

With a frozen backbone the token states of every candidate are computed once per fit and
each epoch only runs the head (memory: lists × K × T × hidden floats). With only a seq2seq
encoder frozen (its parameters set to requires_grad=False), the source states are cached
instead and the decoder and head train.

A slice of the lists is held out: its loss drives early stopping and a ReduceLROnPlateau
schedule, and the best epoch's weights are restored at the end. The report gives the held-out
loss, pairwise ordering accuracy and Kendall tau of the aggregated scores against the true
preference. ``fit`` continues from the current weights (the paper re-fits the guidance every
few policy updates); ``fit(..., from_scratch=True)`` starts again from the initial weights.

Candidates are tokenized without special tokens (reward per content token); sources with them.

Data parallel (optional): give the trainer an ``accelerate.Accelerator`` and launch N processes. Each
process takes its share of every batch of lists and the weighted gradients are summed across processes,
so each step is the one-process step on the whole batch. (The trainer scores through the model's own
methods rather than ``forward``, so it averages gradients itself instead of using a DDP wrapper.) Every
process runs the full validation, so early stopping decides the same everywhere.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from components.aggregation import AGGREGATIONS, aggregate
from components.preferences import RankedList
from components.ranking_losses import LOSSES, kendall_tau, pairwise_accuracy, ranking_loss
from components.reward_model import TokenRewardModel

__all__ = ["GuidanceConfig", "GuidanceTrainer", "FitReport", "RankedList", "score_lists", "token_rewards"]


@dataclass(frozen=True)
class GuidanceConfig:
    """Every field is required: pgg's values live in params.yaml (``GuidanceSection.trainer_config``)."""

    loss: str  # listwise (Plackett-Luce) | pairwise (Bradley-Terry)
    aggregation: str  # avg | sum | softmax | softmin
    tau: float  # temperature of softmax/softmin aggregation
    lr: float  # Adam; ~1e-3 for a head-only fit (frozen backbone), ~5e-5 when the backbone trains
    epochs: int
    batch_size: int  # lists per step: one forward scores batch_size × K sequences
    val_fraction: float  # share of lists held out for early stopping and metrics
    patience: int  # epochs without a better val loss before stopping
    plateau_factor: float  # ReduceLROnPlateau on the val loss
    plateau_patience: int
    min_lr: float
    grad_clip: float | None  # max grad norm per step; None: no clipping
    seed: int
    max_length: int  # candidate tokens kept
    max_source_length: int

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"unknown aggregation {self.aggregation!r}; use one of {', '.join(AGGREGATIONS)}"
            )
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")


@dataclass(frozen=True)
class FitReport:
    train_loss: float  # mean training loss of the best epoch
    val_loss: float  # listwise (Plackett-Luce) loss on held-out lists, whatever the training loss
    val_pairwise_accuracy: float  # share of held-out pairs with distinct preference ordered right
    val_kendall_tau: float  # mean Kendall tau-b per held-out list (nan if every list is all ties)
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    n_train: int
    n_val: int  # 0: no held-out lists, val metrics are on the training lists
    final_lr: float
    seconds: float
    # val_loss of constant rewards (mean ln K! per held-out list): val_loss near it means the fit
    # learned no ordering, and reward-weighted MLE with these rewards is plain MLE
    chance_val_loss: float = math.nan
    # lists whose K candidates all tied (no ordering to learn), left out of the fit
    n_tied_dropped: int = 0
    history: tuple[dict, ...] = field(default=(), repr=False)

    @property
    def learned(self) -> bool:
        """Whether the held-out listwise loss beat constant rewards by at least 0.1 %."""
        return self.val_loss < self.chance_val_loss * 0.999

    def as_dict(self) -> dict:
        """Flat scalars, ready for a metrics logger."""
        out = asdict(self)
        out.pop("history")
        out["learned"] = self.learned
        return out


@dataclass
class _Encoded:
    candidate_ids: list[list[int]]
    source_ids: list[int] | None
    scores: list[float]
    # Per candidate [T_k, H]; cached once per fit when the backbone is frozen.
    token_states: list[torch.Tensor] | None = None
    # Source states [S, H]; cached once per fit when only the seq2seq encoder is frozen.
    encoder_states: torch.Tensor | None = None


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _encode(
    sources: Sequence[str | None],
    candidates: Sequence[Sequence[str]],
    scores: Sequence[Sequence[float]],
    tokenizer,
    max_length: int,
    max_source_length: int,
) -> list[_Encoded]:
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to its eos token)")
    if len({s is None for s in sources}) > 1:
        raise ValueError("some inputs have a source and some do not; give all a source or none")
    out = []
    for source, group, group_scores in zip(sources, candidates, scores, strict=True):
        ids = tokenizer(list(group), add_special_tokens=False, truncation=True, max_length=max_length)[
            "input_ids"
        ]
        source_ids = None
        if source is not None:
            source_ids = tokenizer(source, truncation=True, max_length=max_source_length)["input_ids"]
        out.append(_Encoded(ids, source_ids, list(group_scores)))
    return out


def _drop_fully_tied(lists: Sequence[RankedList]) -> tuple[list[RankedList], int]:
    """(lists with at least two distinct scores, how many were dropped); all of them if none has.

    A fully tied list adds nothing to the loss but still takes a place in a batch and in the
    held-out set, where it dilutes the gradient and the early-stopping signal."""
    untied = [ranked for ranked in lists if len(set(ranked.scores)) > 1]
    if not untied:
        return list(lists), 0
    return untied, len(lists) - len(untied)


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _batch_hidden(
    model: TokenRewardModel, batch: list[_Encoded], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone states ``[B·K, T, H]`` and mask ``[B·K, T]`` of all candidates of equal-K lists,
    in one batched forward; a seq2seq source is encoded once and shared by its K candidates."""
    device = _device(model)
    k = len(batch[0].candidate_ids)
    ids, mask = _pad([row for item in batch for row in item.candidate_ids], pad_id)
    ids, mask = ids.to(device), mask.to(device)
    kwargs = {}
    if batch[0].source_ids is not None:
        source_ids, source_mask = _pad([item.source_ids for item in batch], pad_id)
        source_ids, source_mask = source_ids.to(device), source_mask.to(device)
        if model.kind == "seq2seq":
            if batch[0].encoder_states is not None:
                states = nn.utils.rnn.pad_sequence([item.encoder_states for item in batch], batch_first=True)
                states = states.to(device)
            else:
                states = model.encode_source(source_ids, source_mask)
            kwargs["encoder_hidden_states"] = states.repeat_interleave(k, dim=0)
        else:
            kwargs["source_ids"] = source_ids.repeat_interleave(k, dim=0)
        kwargs["source_attention_mask"] = source_mask.repeat_interleave(k, dim=0)
    return model.token_hidden_states(ids, mask, **kwargs), mask


def _batch_scores(
    model: TokenRewardModel, batch: list[_Encoded], pad_id: int, aggregation: str, tau: float
) -> torch.Tensor:
    """Aggregated scores ``[B, K]`` of a batch of equal-K lists, all B×K candidates in one forward."""
    b, k = len(batch), len(batch[0].candidate_ids)
    if batch[0].token_states is not None:  # frozen backbone: states cached by the trainer
        rows = [states for item in batch for states in item.token_states]
        hidden = nn.utils.rnn.pad_sequence(rows, batch_first=True).to(_device(model))
        lengths = torch.tensor([len(r) for r in rows], device=hidden.device)
        mask = (torch.arange(hidden.shape[1], device=hidden.device) < lengths[:, None]).long()
    else:
        hidden, mask = _batch_hidden(model, batch, pad_id)
    rewards = model.rewards_from_hidden(hidden, mask)
    t = mask.shape[1]
    return aggregate(rewards.view(b, k, t), mask.view(b, k, t), aggregation, tau)


def _encoder_frozen(model: TokenRewardModel) -> bool:
    """True for a seq2seq model whose encoder (and encoder-to-decoder projection) cannot train."""
    if model.kind != "seq2seq":
        return False
    frozen = [model.backbone.get_encoder()]
    if getattr(model.backbone, "enc_to_dec_proj", None) is not None:
        frozen.append(model.backbone.enc_to_dec_proj)
    return not any(p.requires_grad for part in frozen for p in part.parameters())


def _batches(
    items: list[int], k_of: Callable[[int], int], batch_size: int, generator=None
) -> list[list[int]]:
    """Chunks of at most batch_size indices sharing the same K; shuffled when a generator is given."""
    if generator is not None:
        items = [items[i] for i in torch.randperm(len(items), generator=generator).tolist()]
    by_k: dict[int, list[int]] = {}
    for i in items:
        by_k.setdefault(k_of(i), []).append(i)
    chunks = [group[j : j + batch_size] for group in by_k.values() for j in range(0, len(group), batch_size)]
    if generator is not None:
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator).tolist()]
    return chunks


def _metrics(scores: list[list[float]], truths: list[list[float]]) -> tuple[float, float]:
    """(pairwise accuracy, mean Kendall tau) of predicted vs true scores, nan when undefined."""
    correct = total = 0
    taus = []
    for predicted, truth in zip(scores, truths, strict=True):
        c, n = pairwise_accuracy(torch.tensor([predicted]), torch.tensor([truth]))
        correct, total = correct + c, total + n
        tau = kendall_tau(predicted, truth)
        if tau is not None:
            taus.append(tau)
    accuracy = correct / total if total else math.nan
    return accuracy, (sum(taus) / len(taus) if taus else math.nan)


class GuidanceTrainer:
    """Fits ``model`` on ranked lists. Keep one trainer per reward model across policy iterations."""

    def __init__(
        self,
        model: TokenRewardModel,
        tokenizer: PreTrainedTokenizerBase,
        config: GuidanceConfig,
        accelerator=None,
    ):
        """``accelerator``: an ``accelerate.Accelerator`` for its device, bf16 autocast of the training
        forward (``mixed_precision="bf16"``) and data parallelism across its processes."""
        self.model = model if accelerator is None else model.to(accelerator.device)
        self.tokenizer = tokenizer
        self.config = config
        self.accelerator = accelerator
        # For fit(from_scratch=True): the starting values of the trainable backbone weights.
        self._initial_backbone = {
            name: p.detach().clone() for name, p in model.backbone.named_parameters() if p.requires_grad
        }

    def reset(self) -> None:
        """Back to the initial weights: fresh head, and the starting backbone when it trains."""
        self.model.reset_head()
        if self._initial_backbone:
            self.model.backbone.load_state_dict(self._initial_backbone, strict=False)

    def fit(
        self,
        lists: Sequence[RankedList],
        val_lists: Sequence[RankedList] | None = None,
        from_scratch: bool = False,
        on_epoch: Callable[[dict], None] | None = None,
    ) -> FitReport:
        """Train on ``lists``; hold out ``val_fraction`` of them unless ``val_lists`` is given.

        With fewer than 2 lists (or ``val_fraction`` 0) there is no held-out set: early stopping
        and the reported val metrics then use the training lists (``n_val`` = 0).
        Lists whose candidates all tie carry no ordering: they are left out (``n_tied_dropped``),
        unless every list ties, in which case nothing can be learned and the report says so.
        ``on_epoch`` receives ``{"epoch", "train_loss", "val_loss", "lr"}`` after every epoch.
        """
        cfg = self.config
        if not lists:
            raise ValueError("fit got no ranked lists; sample and rank candidates first")
        if len({r.source is None for r in [*lists, *(val_lists or [])]}) > 1:
            raise ValueError("some ranked lists have a source and some do not; give all a source or none")
        start = time.perf_counter()
        lists, n_tied = _drop_fully_tied(lists)
        if val_lists is not None:
            val_lists, _ = _drop_fully_tied(val_lists)
        if from_scratch:
            self.reset()
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            for tensor in self.model.state_dict().values():  # random heads differ per process: take rank 0's
                torch.distributed.broadcast(tensor, src=0)
        device = _device(self.model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            generator = torch.Generator().manual_seed(cfg.seed)
            train_lists, held_out = self._split(list(lists), val_lists, generator)
            train = self._prepare(train_lists)
            val = self._prepare(held_out) if held_out else train
            report = self._train(train, val, n_val=len(held_out), generator=generator, on_epoch=on_epoch)
        chance = sum(math.lgamma(len(item.scores) + 1) for item in val) / len(val)
        return FitReport(
            **report, seconds=time.perf_counter() - start, chance_val_loss=chance, n_tied_dropped=n_tied
        )

    def _split(self, lists, val_lists, generator):
        if val_lists is not None:
            return lists, list(val_lists)
        if len(lists) < 2 or self.config.val_fraction == 0:
            return lists, []
        n_val = min(max(round(len(lists) * self.config.val_fraction), 1), len(lists) - 1)
        order = torch.randperm(len(lists), generator=generator).tolist()
        return [lists[i] for i in order[n_val:]], [lists[i] for i in order[:n_val]]

    def _prepare(self, lists: Sequence[RankedList]) -> list[_Encoded]:
        cfg = self.config
        encoded = _encode(
            [r.source for r in lists], [r.candidates for r in lists], [r.scores for r in lists],
            self.tokenizer, cfg.max_length, cfg.max_source_length,
        )  # fmt: skip
        if self.model.freeze_backbone:
            self._cache_token_states(encoded)
        elif encoded[0].source_ids is not None and _encoder_frozen(self.model):
            self._cache_encoder_states(encoded)
        return encoded

    @torch.no_grad()
    def _cache_token_states(self, encoded: list[_Encoded]) -> None:
        """A frozen backbone gives the same token states every epoch: compute them once per fit,
        so each epoch only runs the head. Costs B·K·T·H floats of CPU memory."""
        self.model.eval()
        chunks = _batches(list(range(len(encoded))), lambda i: len(encoded[i].scores), self.config.batch_size)
        for chunk in chunks:
            batch = [encoded[i] for i in chunk]
            hidden, mask = _batch_hidden(self.model, batch, self.tokenizer.pad_token_id)
            hidden, lengths = hidden.float().cpu(), mask.sum(1).tolist()
            k = len(batch[0].candidate_ids)
            for j, item in enumerate(batch):
                item.token_states = [hidden[j * k + c, : lengths[j * k + c]].clone() for c in range(k)]

    @torch.no_grad()
    def _cache_encoder_states(self, encoded: list[_Encoded]) -> None:
        """Only the decoder and head train: encode each source once per fit (in eval mode)."""
        self.model.eval()
        device = _device(self.model)
        for i in range(0, len(encoded), self.config.batch_size):
            chunk = encoded[i : i + self.config.batch_size]
            ids, mask = _pad([item.source_ids for item in chunk], self.tokenizer.pad_token_id)
            states = self.model.encode_source(ids.to(device), mask.to(device)).float().cpu()
            for item, row, length in zip(chunk, states, mask.sum(1).tolist(), strict=True):
                item.encoder_states = row[:length].clone()

    def _train(self, train: list[_Encoded], val: list[_Encoded], n_val: int, generator, on_epoch) -> dict:
        cfg, model = self.config, self.model
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
        )
        pad_id = self.tokenizer.pad_token_id
        accelerator = self.accelerator
        autocast = accelerator.autocast if accelerator is not None else contextlib.nullcontext
        best_loss, best_epoch, best_state, best_train = math.inf, 0, None, math.nan
        history, stale, epoch = [], 0, 0
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            losses = []
            for chunk in _batches(
                list(range(len(train))), lambda i: len(train[i].scores), cfg.batch_size, generator
            ):
                batch, weight = self._share([train[i] for i in chunk])
                with autocast():
                    scores = _batch_scores(model, batch, pad_id, cfg.aggregation, cfg.tau).float()
                truth = torch.tensor([item.scores for item in batch], device=scores.device)
                # weight = this process's share of the batch: the shares' weighted losses sum to the batch loss
                loss = ranking_loss(cfg.loss, scores, truth, generator=generator) * weight
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if accelerator is not None and accelerator.num_processes > 1:
                    loss = _sum_over_processes(params, loss, accelerator)
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                losses.append(loss.item())
            train_loss = sum(losses) / len(losses)
            val_loss = self._evaluate_encoded(val)["loss"]
            scheduler.step(val_loss)
            lr = optimizer.param_groups[0]["lr"]
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr})
            if on_epoch is not None:
                on_epoch(history[-1])
            if val_loss < best_loss - 1e-6:
                best_loss, best_epoch, best_train, stale = val_loss, epoch, train_loss, 0
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state, strict=False)
        model.eval()
        final = self._evaluate_encoded(val)
        return {
            "train_loss": best_train,
            "val_loss": final["loss"],
            "val_pairwise_accuracy": final["pairwise_accuracy"],
            "val_kendall_tau": final["kendall_tau"],
            "epochs_run": epoch,
            "best_epoch": best_epoch,
            "stopped_early": epoch < cfg.epochs,
            "n_train": len(train),
            "n_val": n_val,
            "final_lr": optimizer.param_groups[0]["lr"],
            "history": tuple(history),
        }

    def _share(self, batch: list[_Encoded]) -> tuple[list[_Encoded], float]:
        """This process's contiguous share of a batch of lists and its weight: the share's part of what
        the loss averages over (lists for listwise, ordered pairs for pairwise). A process left without
        a list scores the first one with weight 0, so that every process draws the same tie-breaking
        randomness and takes part in the gradient sum."""
        if self.accelerator is None or self.accelerator.num_processes == 1:
            return batch, 1.0
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        size = -(-len(batch) // processes)
        share = batch[rank * size : (rank + 1) * size]
        if not share:
            return batch[:1], 0.0
        if self.config.loss == "listwise":
            return share, len(share) / len(batch)
        pairs = [sum(a > b for a in item.scores for b in item.scores) for item in batch]
        total = sum(pairs)
        return share, (sum(pairs[rank * size : (rank + 1) * size]) / total if total else 0.0)

    @torch.no_grad()
    def _evaluate_encoded(self, encoded: list[_Encoded]) -> dict:
        """Listwise loss (fixed tie-breaking), pairwise accuracy and Kendall tau on encoded lists."""
        self.model.eval()
        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed)
        total_loss, predicted, truths = 0.0, [], []
        for chunk in _batches(list(range(len(encoded))), lambda i: len(encoded[i].scores), cfg.batch_size):
            batch = [encoded[i] for i in chunk]
            scores = _batch_scores(self.model, batch, self.tokenizer.pad_token_id, cfg.aggregation, cfg.tau)
            truth = torch.tensor([item.scores for item in batch], device=scores.device)
            total_loss += ranking_loss("listwise", scores, truth, generator=generator).item() * len(batch)
            predicted += scores.cpu().tolist()
            truths += truth.cpu().tolist()
        accuracy, tau = _metrics(predicted, truths)
        return {"loss": total_loss / len(encoded), "pairwise_accuracy": accuracy, "kendall_tau": tau}

    def evaluate(self, lists: Sequence[RankedList]) -> dict:
        """``{"loss", "pairwise_accuracy", "kendall_tau"}`` of the current model on ``lists``
        (fully tied lists left out, as in ``fit``, so the loss compares with ln K!)."""
        if not lists:
            raise ValueError("evaluate got no ranked lists")
        return self._evaluate_encoded(self._prepare(_drop_fully_tied(lists)[0]))

    def score_lists(self, sources: list[str | None], candidates: list[list[str]]) -> list[list[float]]:
        """Aggregated scores of each candidate, with this trainer's aggregation settings."""
        cfg = self.config
        return score_lists(
            self.model, self.tokenizer, sources, candidates, cfg.aggregation, cfg.tau, cfg.batch_size,
            cfg.max_length, cfg.max_source_length,
        )  # fmt: skip


def _sum_over_processes(params: list[nn.Parameter], loss: torch.Tensor, accelerator) -> torch.Tensor:
    """Sum every process's gradients (and weighted loss) in one all-reduce; returns the summed loss."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss.detach().reshape(1).float()])
    flat = accelerator.reduce(flat, "sum")
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
    return flat[-1]


@torch.no_grad()
def score_lists(
    model: TokenRewardModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: list[str | None],
    candidates: list[list[str]],
    aggregation: str = "avg",
    tau: float = 2.0,
    batch_size: int = 8,
    max_length: int = 128,
    max_source_length: int = 512,
) -> list[list[float]]:
    """Aggregated guidance scores ``scores[i][k]`` for ``candidates[i][k]`` given ``sources[i]``
    (a source may be None for unconditional tasks; then all must be None)."""
    if len(sources) != len(candidates):
        raise ValueError(f"got {len(sources)} sources but {len(candidates)} candidate lists")
    if any(len(group) == 0 for group in candidates):
        raise ValueError("every input needs at least one candidate to score")
    model.eval()
    no_scores = [[0.0] * len(group) for group in candidates]
    encoded = _encode(sources, candidates, no_scores, tokenizer, max_length, max_source_length)
    out: list[list[float] | None] = [None] * len(encoded)
    for chunk in _batches(list(range(len(encoded))), lambda i: len(encoded[i].candidate_ids), batch_size):
        scores = _batch_scores(model, [encoded[i] for i in chunk], tokenizer.pad_token_id, aggregation, tau)
        for i, row in zip(chunk, scores.cpu().tolist(), strict=True):
            out[i] = row
    return out


@torch.no_grad()
def token_rewards(
    model: TokenRewardModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    source: str | None = None,
    max_length: int = 512,
) -> list[tuple[str, float]]:
    """(token, reward) for each token of ``text``, e.g. for a heatmap."""
    model.eval()
    ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    if not ids:
        return []
    device = _device(model)
    input_ids = torch.tensor([ids], device=device)
    kwargs = {}
    if source is not None:
        source_ids = tokenizer(source, truncation=True, max_length=max_length, return_tensors="pt")[
            "input_ids"
        ]
        kwargs["source_ids"] = source_ids.to(device)
    rewards = model(input_ids, torch.ones_like(input_ids), **kwargs)[0].cpu().tolist()
    return list(zip(tokenizer.convert_ids_to_tokens(ids), rewards, strict=True))
