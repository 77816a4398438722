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


def test_sample_guidance_reads_each_samples_own_article():
    reward_model = _reward_model()
    labels = torch.randint(1000, 2000, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float)
    sources = {
        "input_ids": torch.randint(1000, 2000, (3, 4)),
        "attention_mask": torch.ones(3, 4, dtype=torch.long),
    }
    rows = torch.tensor([2, 0])
    rewards = sample_guidance(reward_model, sources, "cpu")(labels, mask, rows)
    live = reward_model(labels, mask.long(), sources["input_ids"][rows], sources["attention_mask"][rows])
    assert torch.allclose(rewards, live) and rewards[0, 3:].eq(0).all()
