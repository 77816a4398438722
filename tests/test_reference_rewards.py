"""pgg's token weights read off the references and samples: cached states, the eos rule."""

import torch

from components.models import ModelSpec
from components.reference_rewards import reference_states, reference_token_rewards, sample_guidance
from components.reward_model import TokenRewardModel


def _reward_model():
    torch.manual_seed(0)
    _, reward_model = TokenRewardModel.from_spec(
        ModelSpec("tiny", "causal_lm"), head_hidden=8, freeze_backbone=True
    )
    torch.nn.init.normal_(reward_model.head[0].weight)  # rewards that differ per token
    return reward_model


def test_reference_rewards_from_cached_backbone_states_match_the_live_model():
    """A frozen reward backbone's states are cached across refits; the head on them must give the
    same rewards as the whole model, with eos given its sequence's mean."""
    reward_model = _reward_model()
    labels = torch.randint(1000, 2000, (5, 7))
    mask = torch.tensor([[1] * n + [0] * (7 - n) for n in (7, 5, 3, 6, 2)], dtype=torch.float)
    sources = {
        "input_ids": torch.randint(1000, 2000, (5, 9)),
        "attention_mask": torch.ones(5, 9, dtype=torch.long),
    }
    live = reference_token_rewards(reward_model, labels, mask, sources, chunk=2)
    states = reference_states(reward_model, labels, mask, sources, chunk=3)
    cached = reference_token_rewards(reward_model, labels, mask, sources, chunk=2, states=states)
    assert torch.allclose(live, cached, atol=1e-3) and live.std() > 1e-3
    eos = mask.sum(dim=1).long() - 1
    assert torch.allclose(live[torch.arange(5), eos], live.sum(dim=1).sub(live[torch.arange(5), eos]) / eos)
    assert torch.equal(live * (1 - mask), torch.zeros_like(live))


def test_sampled_eos_gets_the_mean_and_a_cut_sample_is_read_whole():
    """The REINFORCE path treats eos as the reference path does: the guidance never saw one."""
    reward_model, eos = _reward_model(), 102
    labels = torch.tensor([[1500, 1600, 1700, eos, 0], [1500, 1600, 1700, 1800, 1900]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.float)
    sources = {
        "input_ids": torch.randint(1000, 2000, (2, 4)),
        "attention_mask": torch.ones(2, 4, dtype=torch.long),
    }
    rewards = sample_guidance(reward_model, sources, eos, "cpu")(labels, mask, torch.arange(2))
    assert torch.allclose(rewards[0, 3], rewards[0, :3].mean()) and rewards[0, 4] == 0
    body = reward_model(
        labels[:1, :3],
        torch.ones(1, 3, dtype=torch.long),
        sources["input_ids"][:1],
        sources["attention_mask"][:1],
    )
    assert torch.allclose(rewards[0, :3], body[0])  # the eos did not change the body's rewards (causal)
    whole = reward_model(
        labels[1:],
        torch.ones(1, 5, dtype=torch.long),
        sources["input_ids"][1:],
        sources["attention_mask"][1:],
    )
    assert torch.allclose(rewards[1], whole[0])  # no eos: every token through the reward model
