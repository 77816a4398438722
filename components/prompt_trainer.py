"""One step of the discrete-prompt search: sample prompts, score them with the frozen task model, update.

    ids, texts = trainer.sample(n, generator)                         # the policy's prompts (random: uniform)
    rewards, accuracy = trainer.score(texts, inputs, labels, generator)  # gap reward of the task model
    stats = trainer.update(ids, rewards)                              # REINFORCE + max-entropy
    stats = trainer.guidance_update(samples, generator)              # pgg: r_t only, no task-model call
    stats = trainer.learned_update(ids, rewards, generator)           # pgg, the authors': the update is
                                                                      # guidance-only, the scores measure it

Methods (``PromptTrainConfig.method``):
  pgg     every token's log-prob is weighted by the learned token reward r(s_t, a_t) of the fitted
          ``TokenRewardModel`` (``prompt_losses.token_guided_reinforce_loss``). The aggregate of
          those r_t orders each list of K prompts; ``update`` reports how often it agrees with the
          gap reward on these fresh prompts (the guidance's online ordering accuracy).
  seqpg   every token is weighted by the whole prompt's gap reward (``bandit_reinforce_loss``).
  random  uniform prompts from the same action space, no update.
pgg can also use the guidance as the cheap, dense surrogate it is meant to be: after each real
update, ``guidance_updates`` more updates, each on ``guidance_samples`` fresh prompts scored by the
learned token reward alone (``guidance_update``), so a task-model query buys several updates.
With ``pgg_update: learned`` (the authors' protocol) that surrogate update is pgg's only one: a step's
scored prompts measure the guidance and feed its next fit, and never weight an update themselves.
With ``reward_to_go`` a token is weighted by the sum of the token rewards from it to the end. With
``guidance_credit: sequence`` every token of a prompt is weighted by the prompt's aggregated learned
reward, as seqpg weights it by the gap reward (an ablation of the token-level credit). With
``guidance_credit: gap_spread`` a prompt's words share its true gap reward as seqpg's do, and the guidance
only moves credit between them: z(R)_i + z(r)_{i,t} - mean_t z(r)_{i,t}, so a prompt's weights still sum to
L z(R)_i (the guidance as credit assignment, not as the reward; needs normalize_rewards).
With ``normalize_rewards`` the weights are z-scored over the batch (token rewards centred per
position), so the entropy coefficient weighs the same for both methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from components.aggregation import aggregate
from components.gap_reward import accuracy, gap_reward
from components.prompt_losses import bandit_reinforce_loss, reward_to_go, token_guided_reinforce_loss
from components.prompt_policy import PromptPolicy
from components.ranking_losses import pairwise_accuracy
from components.reward_model import TokenRewardModel

ADAPTOR_FILE = "adaptor.pt"
OPTIMIZER_FILE = "optimizer.pt"

METHODS = ("pgg", "seqpg", "random")
CREDITS = ("token", "sequence", "gap_spread")


@dataclass(frozen=True)
class PromptTrainConfig:
    method: str  # pgg | seqpg | random
    lr: float  # Adam on the policy's adaptor
    k: int  # prompts per ranked list
    top_k: int  # sampling
    temperature: float
    entropy_coef: float  # alpha of the max-entropy bonus
    normalize_rewards: bool  # z-score the REINFORCE weights over the batch
    aggregation: str  # pgg: how token rewards aggregate to a prompt score (online ordering accuracy)
    tau: float
    gap_positive: float  # RLPrompt's gap reward
    gap_negative: float
    reward_fraction: float  # share of the training examples that score a prompt, redrawn every call
    guidance_updates: int  # pgg: surrogate updates on the learned reward after each real one
    guidance_samples: int  # prompts per surrogate update
    reward_to_go: bool  # pgg: weight token t by sum_{t' >= t} r_t' instead of r_t
    guidance_credit: str  # pgg: token (r_t, the paper's) | sequence (the prompt's aggregate) | gap_spread
    pgg_update: str  # pgg: scored (on the step's scored prompts) | learned (guidance-only)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown prompt method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.guidance_credit not in CREDITS:
            raise ValueError(
                f"unknown guidance credit {self.guidance_credit!r}; use one of {', '.join(CREDITS)}"
            )
        if self.guidance_credit == "gap_spread" and not self.normalize_rewards:
            raise ValueError("guidance_credit gap_spread adds z-scores; set normalize_rewards: true")
        if self.pgg_update not in ("scored", "learned"):
            raise ValueError(f"unknown pgg_update {self.pgg_update!r}; use scored or learned")


def z_score(rewards: torch.Tensor) -> torch.Tensor:
    """Centre over the batch (per position for token rewards), scale by the batch std."""
    centred = rewards - rewards.mean(0, keepdim=True)
    return centred / centred.std().clamp(min=1e-8)


def gap_spread_weights(token_rewards: torch.Tensor, gap_rewards: torch.Tensor) -> torch.Tensor:
    """``[n, L]``: z(R)_i + z(r)_{i,t} - mean_t z(r)_{i,t}; each prompt's weights sum to L z(R)_i."""
    token_credit = z_score(token_rewards)
    return z_score(gap_rewards)[:, None] + token_credit - token_credit.mean(1, keepdim=True)


class PromptTrainer:
    """The prompt policy, its optimizer, the frozen task model and (pgg) the token reward model
    (``reward_model`` may be None until the first fit: warm-up lists are sampled and scored only)."""

    def __init__(
        self,
        policy: PromptPolicy,
        task_model,
        config: PromptTrainConfig,
        reward_model: TokenRewardModel | None = None,
    ):
        self.policy = policy
        self.task_model = task_model
        self.config = config
        self.reward_model = reward_model
        self.optimizer = torch.optim.Adam(policy.adaptor.parameters(), lr=config.lr)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """``n`` prompts: token ids ``[n, L]`` and texts."""
        if self.config.method == "random":
            return self.policy.random_prompts(n, generator=generator)
        return self.policy.sample(
            n, top_k=self.config.top_k, temperature=self.config.temperature, generator=generator
        )

    def score(self, texts: list[str], inputs, labels: torch.Tensor, generator: torch.Generator):
        """(gap reward ``[n]``, training accuracy ``[n]`` in 0..1) of each prompt on ``inputs``: the
        task-model queries the search is charged for. One example subset is shared by all prompts."""
        cfg = self.config
        probs = self.task_model.class_probs(texts, inputs)
        rewards = gap_reward(
            probs, labels, cfg.gap_positive, cfg.gap_negative, cfg.reward_fraction, generator
        )
        return rewards, accuracy(probs, labels)

    def update(self, ids: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        """One policy-gradient step on the prompts ``ids`` and their gap rewards (pgg: the rewards only
        measure the guidance; the step uses its token rewards). Returns loss, entropy and, for pgg,
        the pairs of each list the guidance orders like the gap reward (correct, total)."""
        cfg = self.config
        if cfg.method == "pgg" and self.reward_model is None:
            raise ValueError("method pgg needs the fitted token reward model; fit the guidance first")
        log_probs, entropy = self.policy.log_probs_and_entropy(ids)
        stats: dict[str, float] = {}
        if cfg.method == "pgg":
            with torch.no_grad():
                token_rewards = self.reward_model(ids, torch.ones_like(ids))
            n, length = ids.shape
            scores = aggregate(
                token_rewards.view(-1, cfg.k, length),
                torch.ones(n // cfg.k, cfg.k, length, device=ids.device),
                cfg.aggregation,
                cfg.tau,
            )
            stats["guidance_correct"], stats["guidance_pairs"] = pairwise_accuracy(
                scores, rewards.view(-1, cfg.k)
            )
            loss = token_guided_reinforce_loss(
                log_probs, entropy, self._weights(token_rewards, rewards), cfg.entropy_coef
            )
        elif cfg.method == "seqpg":
            sequence_rewards = rewards / rewards.std().clamp(min=1e-8) if cfg.normalize_rewards else rewards
            loss = bandit_reinforce_loss(log_probs, entropy, sequence_rewards, cfg.entropy_coef)
        else:
            raise ValueError("random search takes no policy update")
        return {**stats, **self._step(loss, entropy)}

    def learned_update(
        self, ids: torch.Tensor, rewards: torch.Tensor, generator: torch.Generator
    ) -> dict[str, float]:
        """pgg, the authors' step: one update on guidance_samples fresh prompts scored by the learned
        reward alone. The step's scored prompts ``ids`` (one example subset) only measure the guidance:
        the pairs of the whole batch it orders like the gap reward (correct, total)."""
        correct, pairs = pairwise_accuracy(self.guidance_scores(ids)[None], rewards[None])
        stats = self._guidance_step(self.config.guidance_samples, generator)
        return {"guidance_correct": correct, "guidance_pairs": pairs, **stats}

    def guidance_update(self, n: int, generator: torch.Generator) -> dict[str, float]:
        """pgg: one update on ``n`` fresh prompts whose only reward is the learned token reward; the
        task model is not called."""
        return {f"surrogate_{key}": value for key, value in self._guidance_step(n, generator).items()}

    def _guidance_step(self, n: int, generator: torch.Generator) -> dict[str, float]:
        cfg = self.config
        if cfg.method != "pgg" or self.reward_model is None:
            raise ValueError("guidance-only updates need method pgg and a fitted token reward model")
        if cfg.guidance_credit == "gap_spread":
            raise ValueError(
                "guidance_credit gap_spread needs each prompt's gap reward; guidance-only updates have none"
            )
        ids, _ = self.sample(n, generator)
        log_probs, entropy = self.policy.log_probs_and_entropy(ids)
        with torch.no_grad():
            token_rewards = self.reward_model(ids, torch.ones_like(ids))
        return self._step(
            token_guided_reinforce_loss(log_probs, entropy, self._weights(token_rewards), cfg.entropy_coef),
            entropy,
        )

    def _weights(self, token_rewards: torch.Tensor, gap_rewards: torch.Tensor | None = None) -> torch.Tensor:
        """pgg's REINFORCE weights ``[n, L]``: r_t (or its reward-to-go), z-scored when normalize_rewards.
        With sequence credit, every token of a prompt gets the prompt's aggregated learned reward, centred
        over the batch: seqpg's update with the learned reward in place of the gap reward (an ablation:
        what the token-level credit adds). With gap_spread credit, seqpg's z-scored gap reward of each
        prompt plus each token's deviation from its prompt's mean z-scored r_t."""
        cfg = self.config
        if cfg.guidance_credit == "gap_spread":
            if gap_rewards is None:
                raise ValueError("guidance_credit gap_spread needs the gap reward of each prompt")
            return gap_spread_weights(token_rewards, gap_rewards)
        if cfg.guidance_credit == "sequence":
            scores = self._aggregate(token_rewards)
            scores = scores - scores.mean()
            scores = scores / scores.std().clamp(min=1e-8) if cfg.normalize_rewards else scores
            return scores[:, None].expand_as(token_rewards)
        weights = reward_to_go(token_rewards) if cfg.reward_to_go else token_rewards
        return z_score(weights) if cfg.normalize_rewards else weights

    def _aggregate(self, token_rewards: torch.Tensor) -> torch.Tensor:
        """Each prompt's score ``[n]``: its token rewards aggregated as the guidance fit aggregates them."""
        mask = torch.ones_like(token_rewards)
        return aggregate(token_rewards[:, None], mask[:, None], self.config.aggregation, self.config.tau)[
            :, 0
        ]

    @torch.no_grad()
    def guidance_scores(self, ids: torch.Tensor) -> torch.Tensor:
        """The learned reward's score of each prompt ``[n]`` (token rewards aggregated as in the fit)."""
        return self._aggregate(self.reward_model(ids, torch.ones_like(ids)))

    def _step(self, loss: torch.Tensor, entropy: torch.Tensor) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "entropy": entropy.mean().item()}

    def save(self, folder: Path) -> None:
        """Adaptor and optimizer state (what a resumed search continues from)."""
        self.policy.save_adaptor(folder / ADAPTOR_FILE)
        torch.save(self.optimizer.state_dict(), folder / OPTIMIZER_FILE)

    def load(self, folder: Path, with_optimizer: bool = True) -> None:
        """The adaptor, and the optimizer state to keep training (not needed to sample or evaluate)."""
        self.policy.load_adaptor(folder / ADAPTOR_FILE)
        if with_optimizer:
            self.optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True))
