import pytest
import torch

from components.encoder_cache import encode_sources
from components.models import ModelSpec, load_model
from components.policy_trainer import guidance_without_eos, train_policy
from components.seq2seq_policy import encode_targets, freeze_encoder, special_ids, tokenize_sources
from tests.conftest import policy_config

ARTICLES = [f"the {w} market rose sharply on monday as traders bought {w} shares" for w in
            ("stock", "bond", "gold", "oil", "tech", "bank", "car", "food")]  # fmt: skip
TITLES = [f"{w} prices rise" for w in ("stock", "bond", "gold", "oil", "tech", "bank", "car", "food")]


@pytest.fixture
def tiny():
    tokenizer, model = load_model(ModelSpec("tiny", "seq2seq"))
    freeze_encoder(model)
    sources = encode_sources(model.get_encoder(), tokenizer, ARTICLES, max_length=24, dtype=torch.float32)
    labels, mask = encode_targets(tokenizer, TITLES, 8, model)
    return tokenizer, model, sources, labels, mask


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_mle_lowers_the_loss(tiny):
    tokenizer, model, sources, labels, mask = tiny
    history = train_policy(
        model, tokenizer, sources, labels, mask, policy_config(steps=30, lr=3e-3, batch_size=8)
    )
    assert history[-1]["loss"] < history[0]["loss"] - 1.0


def test_pgg_with_constant_rewards_is_mle(tiny):
    tokenizer, model, sources, labels, mask = tiny
    start = _state(model)
    mle = train_policy(model, tokenizer, sources, labels, mask, policy_config(steps=3, lr=1e-3, batch_size=4))
    model.load_state_dict(start)
    pgg = train_policy(
        model, tokenizer, sources, labels, mask,
        policy_config(method="pgg", steps=3, lr=1e-3, batch_size=4),
        token_rewards=torch.full_like(mask, 0.7) * mask,
    )  # fmt: skip
    assert [h["loss"] for h in pgg] == pytest.approx([h["loss"] for h in mle], rel=1e-5)


def test_grad_accumulation_matches_one_big_batch(tiny):
    tokenizer, model, sources, labels, mask = tiny
    for module in model.modules():  # dropout would draw different masks for 1x8 and 2x4
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    start = _state(model)
    config = dict(steps=3, lr=1e-3, seed=3)
    big = train_policy(model, tokenizer, sources, labels, mask, policy_config(batch_size=8, **config))
    model.load_state_dict(start)
    small = train_policy(
        model,
        tokenizer,
        sources,
        labels,
        mask,
        policy_config(batch_size=4, grad_accumulation=2, **config),
    )
    assert big[2]["loss"] < big[0]["loss"]
    assert [h["loss"] for h in small] == pytest.approx([h["loss"] for h in big], rel=1e-4)
    assert small[0]["grad_norm"] == pytest.approx(big[0]["grad_norm"], rel=1e-4)


def test_seqpg_and_live_encoder_paths(tiny):
    tokenizer, model, _, labels, mask = tiny
    live = dict(tokenize_sources(tokenizer, ARTICLES, 24))
    history = train_policy(
        model, tokenizer, live, labels, mask,
        policy_config(method="seqpg", steps=2, batch_size=4, k=2, reinforce_coef=1.0, max_target_tokens=4),
        references=TITLES, sequence_reward=lambda texts, refs: torch.rand(len(texts)),
    )  # fmt: skip
    assert all("pg_loss" in h and "sample_reward" in h for h in history)


def test_sampled_articles_limits_the_sampled_term_to_a_sub_batch(tiny):
    tokenizer, model, sources, labels, mask = tiny
    scored_refs = []

    def reward(texts, refs):
        scored_refs.append(list(refs))
        return torch.rand(len(texts))

    config = policy_config(
        method="seqpg",
        steps=2,
        batch_size=4,
        k=3,
        reinforce_coef=1.0,
        max_target_tokens=4,
        sampled_articles=2,
    )
    train_policy(model, tokenizer, sources, labels, mask, config, references=TITLES, sequence_reward=reward)
    assert [len(refs) for refs in scored_refs] == [2 * 3, 2 * 3]  # 2 articles x k samples, not 4 x k
    assert all(refs[0] == refs[2] and refs[0] != refs[3] for refs in scored_refs)  # k per article in a row
    with pytest.raises(ValueError, match="sampled_articles"):
        policy_config(method="seqpg", batch_size=4, sampled_articles=5)


def test_missing_inputs_are_clear_errors(tiny):
    tokenizer, model, sources, labels, mask = tiny
    with pytest.raises(ValueError, match="token_rewards"):
        train_policy(model, tokenizer, sources, labels, mask, policy_config(method="pgg", steps=1))
    with pytest.raises(ValueError, match="unknown method"):
        policy_config(method="ppo")


def test_sampled_eos_gets_its_sequence_mean_reward_and_the_guidance_never_sees_it():
    eos, pad = 9, 0
    # eos after 3 tokens; eos alone; cut at the length limit (no eos)
    labels = torch.tensor([[4, 5, 6, eos], [eos, pad, pad, pad], [4, 4, 5, 6]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]])
    seen = []

    def guidance(sample_labels, sample_mask, rows):
        seen.append(sample_mask.clone())
        return (sample_labels.float() / 10) * sample_mask  # r_t = token id / 10 on what it is shown

    rewards = guidance_without_eos(guidance, labels, mask, torch.arange(3), eos)
    assert seen[0].tolist() == [[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]  # eos hidden from the guidance
    assert rewards[0].tolist() == pytest.approx([0.4, 0.5, 0.6, 0.5])  # eos: mean of its sequence
    assert rewards[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # eos alone: no body, reward 0
    assert rewards[2].tolist() == pytest.approx([0.4, 0.4, 0.5, 0.6])  # no eos: scored whole


def test_pgg_reinforce_scores_samples_without_eos(tiny):
    tokenizer, model, sources, labels, mask = tiny
    _, eos, _ = special_ids(model)
    shown = []

    def guidance(sample_labels, sample_mask, rows):
        shown.append(((sample_labels == eos) & sample_mask.bool()).sum().item())
        return torch.full(sample_labels.shape, 0.5) * sample_mask

    config = policy_config(method="pgg", steps=2, batch_size=4, k=2, reinforce_coef=1.0, max_target_tokens=4)
    train_policy(
        model, tokenizer, sources, labels, mask, config, token_rewards=torch.full_like(mask, 0.5) * mask,
        guidance=guidance,
    )  # fmt: skip
    assert len(shown) == 2 and shown == [0, 0]  # the guidance was called each step, never shown an eos


def test_pgg_reinforce_baseline_switch(tiny):
    """A constant guidance reward: centred by the baseline it is 0 everywhere (no REINFORCE signal);
    raw, as the authors' code uses it (reinforce_baseline false), it weights every sampled token."""
    tokenizer, model, sources, labels, mask = tiny

    def guidance(sample_labels, sample_mask, rows):
        return torch.full(sample_labels.shape, 0.5) * sample_mask

    pg_losses = {}
    for baseline in (True, False):
        config = policy_config(
            method="pgg", steps=1, batch_size=4, k=2, reinforce_coef=1.0, max_target_tokens=4,
            reinforce_baseline=baseline, reinforce_mean="token",
        )  # fmt: skip
        history = train_policy(
            model, tokenizer, sources, labels, mask, config, token_rewards=torch.full_like(mask, 0.5) * mask,
            guidance=guidance,
        )  # fmt: skip
        pg_losses[baseline] = history[0]["pg_loss"]
    assert pg_losses[True] == pytest.approx(0.0, abs=1e-7)
    assert pg_losses[False] > 0.1  # 0.5 x the mean NLL of the sampled tokens
    with pytest.raises(ValueError, match="reinforce_mean"):
        policy_config(method="pgg", reinforce_mean="batch")
