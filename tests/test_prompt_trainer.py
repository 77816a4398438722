"""One step of the prompt search (components/prompt_trainer.py) with tiny models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from components.models import ModelSpec, load_model
from components.prompt_policy import PromptPolicy, whole_word_token_ids
from components.prompt_trainer import PromptTrainer, z_score
from components.reward_model import TokenRewardModel
from components.task_models import build_task_model
from tests.conftest import params_config


class CountingTaskModel:
    """The tiny prototype task model, counting the prompts it is asked to score."""

    def __init__(self):
        self.model = build_task_model("tiny", "sst-2", "prototype")
        self.prompts = 0

    def class_probs(self, prompts, inputs):
        self.prompts += len(prompts)
        return self.model.class_probs(prompts, inputs)


@pytest.fixture
def parts():
    torch.manual_seed(0)
    tokenizer, model = load_model(ModelSpec("tiny", "causal_lm"))
    policy = PromptPolicy(
        tokenizer, model, adaptor_inner_size=32, allowed_token_ids=whole_word_token_ids(tokenizer)
    )
    _, reward_model = TokenRewardModel.from_spec(
        ModelSpec("tiny", "causal_lm"), head_hidden=8, freeze_backbone=True
    )
    torch.nn.init.normal_(reward_model.head[0].weight)
    task_model = CountingTaskModel()
    inputs = task_model.model.encode_inputs(["a great film", "an awful film", "great fun", "dull and bad"])
    return policy, reward_model, task_model, inputs, torch.tensor([1, 0, 1, 0])


def _config(method, **fields):
    base = params_config({"sampling.prompt.k": 2, "sampling.prompt.top_k": 20}).prompt_train_config(method)
    return dataclasses.replace(base, **fields)


def test_a_pgg_step_scores_updates_and_measures_the_guidance(parts):
    policy, reward_model, task_model, inputs, labels = parts
    trainer = PromptTrainer(policy, task_model, _config("pgg", lr=1e-2), reward_model)
    generator = torch.Generator().manual_seed(0)
    ids, texts = trainer.sample(4, generator)
    rewards, train_accuracy = trainer.score(texts, inputs, labels, generator)
    assert (
        rewards.shape == (4,)
        and task_model.prompts == 4
        and ((0 <= train_accuracy) & (train_accuracy <= 1)).all()
    )
    before = [p.detach().clone() for p in policy.adaptor.parameters()]
    stats = trainer.update(ids, rewards)
    assert stats["guidance_pairs"] <= 2 and 0 <= stats["guidance_correct"] <= stats["guidance_pairs"]
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.adaptor.parameters(), strict=True))


def test_guidance_only_updates_move_the_policy_without_a_task_model_query(parts):
    policy, reward_model, task_model, *_ = parts
    trainer = PromptTrainer(policy, task_model, _config("pgg", lr=1e-2), reward_model)
    before = [p.detach().clone() for p in policy.adaptor.parameters()]
    stats = trainer.guidance_update(8, torch.Generator().manual_seed(1))
    assert task_model.prompts == 0  # the surrogate: the learned reward alone
    assert set(stats) == {"surrogate_loss", "surrogate_entropy"}
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.adaptor.parameters(), strict=True))
    with pytest.raises(ValueError, match="need method pgg"):
        PromptTrainer(policy, task_model, _config("seqpg")).guidance_update(4, torch.Generator())


def test_the_authors_pgg_step_updates_on_learned_samples_and_only_measures_the_scored_batch(parts):
    policy, reward_model, task_model, inputs, labels = parts
    config = _config("pgg", lr=1e-2, pgg_update="learned", guidance_samples=6)
    trainer = PromptTrainer(policy, task_model, config, reward_model)
    generator = torch.Generator().manual_seed(0)
    ids, texts = trainer.sample(5, generator)  # a batch need not form lists of k = 2
    rewards, _ = trainer.score(texts, inputs, labels, generator)
    before = [p.detach().clone() for p in policy.adaptor.parameters()]
    stats = trainer.learned_update(ids, rewards, generator)
    assert task_model.prompts == 5  # the update itself queries nothing
    distinct = len(set(rewards.tolist()))
    assert stats["guidance_pairs"] == distinct * (distinct - 1) // 2 and set(stats) >= {"loss", "entropy"}
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.adaptor.parameters(), strict=True))
    with pytest.raises(ValueError, match="unknown pgg_update 'both'"):
        _config("pgg", pgg_update="both")


def test_reward_to_go_weights_each_token_by_the_rewards_it_leads_to(parts):
    from components.prompt_losses import reward_to_go

    assert torch.equal(reward_to_go(torch.tensor([[1.0, 2.0, 3.0]])), torch.tensor([[6.0, 5.0, 3.0]]))
    policy, reward_model, task_model, *_ = parts
    ids, _ = policy.sample(4, top_k=20, generator=torch.Generator().manual_seed(3))
    rewards = reward_model(ids, torch.ones_like(ids)).detach()
    raw = PromptTrainer(
        policy, task_model, _config("pgg", normalize_rewards=False, reward_to_go=True), reward_model
    )
    assert torch.allclose(raw._weights(rewards), rewards.flip(-1).cumsum(-1).flip(-1))
    plain = PromptTrainer(policy, task_model, _config("pgg", normalize_rewards=False), reward_model)
    assert torch.equal(plain._weights(rewards), rewards)


def test_guidance_scores_rank_prompts_like_the_fit_aggregates(parts):
    policy, reward_model, task_model, *_ = parts
    trainer = PromptTrainer(policy, task_model, _config("pgg", aggregation="sum"), reward_model)
    ids, _ = trainer.sample(3, torch.Generator().manual_seed(2))
    expected = reward_model(ids, torch.ones_like(ids)).sum(dim=1)
    assert torch.allclose(trainer.guidance_scores(ids), expected)


def test_random_search_never_updates_and_z_score_centres(parts):
    policy, _, task_model, *_ = parts
    trainer = PromptTrainer(policy, task_model, _config("random"))
    ids, _ = trainer.sample(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no policy update"):
        trainer.update(ids, torch.zeros(4))
    weights = z_score(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    assert torch.allclose(weights.mean(0), torch.zeros(2))
    greedy_ids, greedy_text = policy.greedy()
    assert greedy_ids.shape == (1, policy.prompt_length) and torch.equal(policy.greedy()[0], greedy_ids)


def test_sequence_credit_gives_every_token_of_a_prompt_its_centred_aggregate(parts):
    policy, reward_model, task_model, *_ = parts
    ids, _ = policy.sample(4, top_k=20, generator=torch.Generator().manual_seed(4))
    rewards = reward_model(ids, torch.ones_like(ids)).detach()
    raw = PromptTrainer(
        policy, task_model, _config("pgg", normalize_rewards=False, guidance_credit="sequence"), reward_model
    )
    scores = rewards.sum(dim=1)  # the default prompt aggregation: sum
    assert torch.allclose(raw._weights(rewards), (scores - scores.mean())[:, None].expand_as(rewards))
    token = PromptTrainer(policy, task_model, _config("pgg", normalize_rewards=False), reward_model)
    assert not torch.allclose(token._weights(rewards), raw._weights(rewards))
    with pytest.raises(ValueError, match="unknown guidance credit"):
        _config("pgg", guidance_credit="prompt")


def test_gap_spread_credit_keeps_each_prompts_gap_reward_and_moves_it_between_words_by_r_t(parts):
    policy, reward_model, task_model, *_ = parts
    ids, _ = policy.sample(4, top_k=20, generator=torch.Generator().manual_seed(5))
    token_rewards = reward_model(ids, torch.ones_like(ids)).detach()
    gap = torch.tensor([3.0, -1.0, 0.5, 2.0])
    trainer = PromptTrainer(policy, task_model, _config("pgg", guidance_credit="gap_spread"), reward_model)
    weights = trainer._weights(token_rewards, gap)
    length = ids.shape[1]
    # A prompt's words share exactly seqpg's z-scored reward; the guidance only reorders it inside the prompt.
    assert torch.allclose(weights.sum(1), length * z_score(gap), atol=1e-5)
    assert torch.allclose(weights - weights.mean(1, keepdim=True),
                          z_score(token_rewards) - z_score(token_rewards).mean(1, keepdim=True), atol=1e-6)  # fmt: skip
    assert not torch.allclose(weights, trainer._weights(token_rewards, -gap))
    with pytest.raises(ValueError, match="needs the gap reward"):
        trainer._weights(token_rewards)
    with pytest.raises(ValueError, match="guidance-only updates have none"):
        trainer.guidance_update(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="normalize_rewards: true"):
        _config("pgg", guidance_credit="gap_spread", normalize_rewards=False)
    stats = trainer.update(ids, gap)
    assert {"loss", "entropy", "guidance_correct", "guidance_pairs"} <= stats.keys()


def test_a_blank_training_input_gives_finite_rewards_and_a_finite_step(parts):
    """A published split's blank row is scored with the others: no error, no NaN in the gap reward or the
    policy update."""
    policy, reward_model, task_model, _, labels = parts
    trainer = PromptTrainer(policy, task_model, _config("pgg", lr=1e-2, reward_fraction=1.0), reward_model)
    generator = torch.Generator().manual_seed(0)
    inputs = task_model.model.encode_inputs(["a great film", "", "great fun", " "])
    ids, texts = trainer.sample(4, generator)
    rewards, train_accuracy = trainer.score(texts, inputs, labels, generator)
    assert torch.isfinite(rewards).all() and ((0 <= train_accuracy) & (train_accuracy <= 1)).all()
    stats = trainer.update(ids, rewards)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
