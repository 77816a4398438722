import pytest
import torch

from components.models import ModelSpec, load_model
from components.prompt_losses import token_guided_reinforce_loss
from components.prompt_policy import PromptPolicy, build_prompt_policy, whole_word_token_ids


@pytest.fixture(scope="module")
def tiny_lm():
    return load_model(ModelSpec("tiny", "causal_lm"))


def _policy(tiny_lm, **kwargs):
    tokenizer, model = tiny_lm
    kwargs.setdefault("allowed_token_ids", whole_word_token_ids(tokenizer))
    return PromptPolicy(tokenizer, model, adaptor_inner_size=64, **kwargs)


def test_whole_word_vocabulary(tiny_lm):
    tokenizer, _ = tiny_lm
    words = tokenizer.convert_ids_to_tokens(whole_word_token_ids(tokenizer))
    assert "great" in words and "movie" in words
    assert all(w.isalpha() and w.isascii() and len(w) >= 2 for w in words)
    assert not any(w.startswith("##") or w.startswith("[") for w in words)


def test_sampling_returns_prompt_length_whole_words(tiny_lm):
    policy = _policy(tiny_lm, prompt_length=5)
    allowed = set(whole_word_token_ids(tiny_lm[0]))
    ids, texts = policy.sample(6, top_k=256, generator=torch.Generator().manual_seed(0))
    assert ids.shape == (6, 5)
    assert all(i in allowed for i in ids.flatten().tolist())
    assert all(len(t.split()) == 5 and t.replace(" ", "").isalpha() for t in texts)
    again, _ = policy.sample(6, top_k=256, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ids, again)
    random_ids, random_texts = policy.random_prompts(4, generator=torch.Generator().manual_seed(0))
    assert random_ids.shape == (4, 5) and all(i in allowed for i in random_ids.flatten().tolist())
    assert all(len(t.split()) == 5 for t in random_texts)


def test_top_k_limits_each_step_to_the_k_best_tokens(tiny_lm):
    policy = _policy(tiny_lm, prompt_length=1)
    ids, _ = policy.sample(20, top_k=3, generator=torch.Generator().manual_seed(0))
    start = torch.tensor([[policy.start_token_id]])
    top3 = policy.next_token_logits(start)[0, -1].topk(3).indices.tolist()
    assert set(ids.flatten().tolist()) <= set(top3)


def test_teacher_forced_log_probs_match_step_by_step_recomputation(tiny_lm):
    policy = _policy(tiny_lm)
    with torch.no_grad():  # move the adaptor away from identity so it matters
        policy.adaptor.down.weight.normal_(std=0.1)
    ids, _ = policy.sample(3, generator=torch.Generator().manual_seed(1))
    log_probs, entropy = policy.log_probs_and_entropy(ids)
    assert log_probs.shape == entropy.shape == (3, 5)
    n_allowed = len(policy.allowed_ids)
    assert (entropy > 0).all() and (entropy <= torch.log(torch.tensor(float(n_allowed))) + 1e-4).all()
    for t in range(5):
        prefix = torch.cat([torch.full((3, 1), policy.start_token_id), ids[:, :t]], dim=1)
        step = torch.log_softmax(policy.next_token_logits(prefix)[:, -1], -1)
        assert torch.allclose(log_probs[:, t], step.gather(-1, ids[:, t : t + 1]).squeeze(-1), atol=1e-5)
        probs = step.exp()
        assert torch.allclose(entropy[:, t], -(probs * step.nan_to_num(neginf=0.0)).sum(-1), atol=1e-4)


def test_initial_policy_is_the_base_lm(tiny_lm):
    tokenizer, model = tiny_lm
    policy = _policy(tiny_lm)
    ids = torch.tensor([[policy.start_token_id, 2307, 3185]])
    base = model(input_ids=ids).logits.masked_fill(~policy.allowed, float("-inf"))
    assert torch.allclose(policy.next_token_logits(ids), base, atol=1e-5)


def test_reinforce_on_a_reward_for_one_token_raises_its_probability(tiny_lm):
    tokenizer, _ = tiny_lm
    allowed = whole_word_token_ids(tokenizer)[:20]
    policy = _policy(tiny_lm, prompt_length=2, allowed_token_ids=allowed)
    target = allowed[7]
    start = torch.tensor([[policy.start_token_id]])

    def target_prob():
        with torch.no_grad():
            return torch.softmax(policy.next_token_logits(start)[0, -1], -1)[target].item()

    before = target_prob()
    optimizer = torch.optim.Adam(policy.adaptor.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        ids, _ = policy.sample(16, top_k=None, generator=generator)
        log_probs, entropy = policy.log_probs_and_entropy(ids)
        rewards = (ids == target).float() - 0.05
        loss = token_guided_reinforce_loss(log_probs, entropy, rewards, entropy_coef=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert target_prob() > 2 * before
    assert all(p.grad is None for p in policy.lm.parameters())  # the backbone stays frozen


def test_adaptor_save_and_load_round_trip(tiny_lm, tmp_path):
    policy = _policy(tiny_lm)
    with torch.no_grad():
        policy.adaptor.down.weight.normal_(std=0.1)
    policy.save_adaptor(tmp_path / "adaptor.pt")
    fresh = _policy(tiny_lm)
    fresh.load_adaptor(tmp_path / "adaptor.pt")
    ids = torch.tensor([[policy.start_token_id, 2307]])
    assert torch.allclose(policy.next_token_logits(ids), fresh.next_token_logits(ids))
    other = PromptPolicy(*tiny_lm, adaptor_inner_size=32, allowed_token_ids=[2307, 3185])
    with pytest.raises(ValueError, match="shapes"):
        other.load_adaptor(tmp_path / "adaptor.pt")


def test_bad_policy_arguments(tiny_lm):
    tokenizer, _ = tiny_lm
    with pytest.raises(ValueError, match="special"):
        _policy(tiny_lm, allowed_token_ids=[tokenizer.pad_token_id, 2307])
    with pytest.raises(ValueError, match="prompt_length"):
        _policy(tiny_lm, prompt_length=0)
    policy = _policy(tiny_lm, allowed_token_ids=[2307, 3185])
    with pytest.raises(ValueError, match="action space"):
        policy.log_probs_and_entropy(torch.tensor([[2307, 4000, 3185, 2307, 2307]]))


def test_minilm_policy_writes_words():
    policy = build_prompt_policy("minilm", adaptor_inner_size=64)
    assert policy.output_head == "input_embeddings"
    ids, texts = policy.sample(2, generator=torch.Generator().manual_seed(0))
    log_probs, _ = policy.log_probs_and_entropy(ids)
    assert ids.shape == (2, 5) and torch.isfinite(log_probs).all()
    assert all(len(t.split()) == 5 for t in texts)
