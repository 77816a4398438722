import pytest
import torch

from components.encoder_cache import encode_sources
from components.models import ModelSpec, load_model
from components.seq2seq_policy import (
    encode_targets,
    freeze_encoder,
    generate_greedy,
    generated_to_targets,
    sample_k,
    sequence_log_probs,
    source_prefix,
    special_ids,
    tokenize_sources,
)

TEXTS = ["the cat sat on the mat", "stocks fell sharply in london on friday after weak data"]


@pytest.fixture(scope="module")
def tiny():
    tokenizer, model = load_model(ModelSpec("tiny", "seq2seq"))
    torch.manual_seed(1)
    with torch.no_grad():  # sharpen the random cross-attention so the source visibly matters
        for name, param in model.decoder.named_parameters():
            if "crossattention" in name and param.dim() == 2:
                param.mul_(8)
    return tokenizer, model


@pytest.fixture(scope="module")
def sources(tiny):
    tokenizer, model = tiny
    live = tokenize_sources(tokenizer, TEXTS, max_length=16)
    cached = encode_sources(model.get_encoder(), tokenizer, TEXTS, max_length=16, dtype=torch.float32)
    return live, cached


def test_greedy_with_cached_states_equals_greedy_with_live_encoder(tiny, sources):
    tokenizer, model = tiny
    live, cached = sources
    a = generate_greedy(model, tokenizer, input_ids=live["input_ids"], attention_mask=live["attention_mask"])
    b = generate_greedy(model, tokenizer, encoder_hidden=cached.hidden, attention_mask=cached.attention_mask)
    assert torch.equal(a.labels, b.labels) and a.texts == b.texts
    assert not torch.equal(a.labels[0], a.labels[1])  # the source matters, so the check can fail
    assert a.labels.shape[1] == 24


def test_log_probs_with_cached_states_equal_live_and_depend_on_the_source(tiny, sources):
    tokenizer, model = tiny
    live, cached = sources
    labels, mask = encode_targets(tokenizer, ["cat on mat", "stocks fall"], 8, model)
    a = sequence_log_probs(
        model, labels, mask, input_ids=live["input_ids"], attention_mask=live["attention_mask"]
    )
    b = sequence_log_probs(
        model, labels, mask, encoder_hidden=cached.hidden, attention_mask=cached.attention_mask
    )
    assert torch.allclose(a.logp, b.logp, atol=1e-5)
    assert torch.equal(a.logp * (1 - mask), torch.zeros_like(a.logp))
    swapped = sequence_log_probs(
        model,
        labels,
        mask,
        encoder_hidden=cached.hidden.flip(0),
        attention_mask=cached.attention_mask.flip(0),
    )
    assert not torch.allclose(a.logp, swapped.logp, atol=1e-3)


def test_log_probs_of_greedy_output_are_the_step_maxima(tiny, sources):
    tokenizer, model = tiny
    _, cached = sources
    out = generate_greedy(
        model, tokenizer, encoder_hidden=cached.hidden, attention_mask=cached.attention_mask, max_new_tokens=6
    )
    lp = sequence_log_probs(
        model,
        out.labels,
        out.mask,
        encoder_hidden=cached.hidden,
        attention_mask=cached.attention_mask,
        return_entropy=True,
    )
    # Greedy picks the argmax, so teacher-forced log-probs must be each step's maximum log-prob.
    with torch.no_grad():
        start, _, _ = special_ids(model)
        dec_in = torch.cat([torch.full_like(out.labels[:, :1], start), out.labels[:, :-1]], dim=1)
        logits = model(
            encoder_outputs=(cached.hidden,), attention_mask=cached.attention_mask, decoder_input_ids=dec_in
        ).logits
    assert torch.equal(logits.argmax(-1)[out.mask.bool()], out.labels[out.mask.bool()])
    assert torch.allclose(lp.logp, logits.log_softmax(-1).max(-1).values * out.mask, atol=1e-5)
    assert (lp.entropy >= 0).all() and (lp.entropy[out.mask.bool()] > 0).all()


def test_sample_k_is_reproducible_and_leaves_global_rng_alone(tiny, sources):
    tokenizer, model = tiny
    _, cached = sources
    kwargs = dict(encoder_hidden=cached.hidden, attention_mask=cached.attention_mask, k=3, max_new_tokens=10)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = sample_k(model, tokenizer, seed=7, **kwargs)
    after = torch.rand(1)
    b = sample_k(model, tokenizer, seed=7, **kwargs)
    c = sample_k(model, tokenizer, seed=8, **kwargs)
    assert torch.equal(before, after)
    assert a.labels.shape[0] == 6 and len(a.texts) == 6
    assert torch.equal(a.labels, b.labels) and a.texts == b.texts
    assert not torch.equal(a.labels[0], a.labels[1])  # the source matters, so the check can fail
    assert not torch.equal(a.labels, c.labels)


def test_encode_targets_ends_with_eos_and_truncates(tiny):
    tokenizer, model = tiny
    _, eos, pad = special_ids(model)
    labels, mask = encode_targets(tokenizer, ["hello world", "one two three four five six seven"], 5, model)
    assert labels.shape == (2, 5)
    assert labels[0].tolist()[:3] == tokenizer("hello world", add_special_tokens=False)["input_ids"] + [eos]
    assert labels[0, 3:].tolist() == [pad, pad] and mask[0].tolist() == [1, 1, 1, 0, 0]
    assert labels[1, -1].item() == eos and mask[1].sum().item() == 5


def test_generated_to_targets_cuts_after_the_first_eos():
    sequences = torch.tensor([[101, 5, 6, 102, 7, 102], [101, 5, 6, 7, 8, 9]])
    labels, mask = generated_to_targets(sequences, eos=102, pad=0)
    assert labels.tolist() == [[5, 6, 102, 0, 0], [5, 6, 7, 8, 9]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_freeze_encoder_stops_encoder_gradients_only():
    tokenizer, model = load_model(ModelSpec("tiny", "seq2seq"))
    assert freeze_encoder(model) == sum(p.numel() for p in model.get_encoder().parameters())
    live = tokenize_sources(tokenizer, TEXTS, max_length=16)
    labels, mask = encode_targets(tokenizer, ["a b", "c d"], 6, model)
    lp = sequence_log_probs(
        model, labels, mask, input_ids=live["input_ids"], attention_mask=live["attention_mask"]
    )
    lp.logp.sum().backward()
    assert all(p.grad is None for p in model.get_encoder().parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    assert source_prefix(model) == ""


def test_exactly_one_source_form_is_required(tiny, sources):
    tokenizer, model = tiny
    live, cached = sources
    with pytest.raises(ValueError, match="exactly one"):
        generate_greedy(model, tokenizer, attention_mask=live["attention_mask"])


def test_helpers_work_with_a_t5_style_model():
    from transformers import T5Config, T5ForConditionalGeneration

    from components.models import load_tokenizer

    tokenizer = load_tokenizer("tiny")
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    model = T5ForConditionalGeneration(config).eval()
    assert source_prefix(model) == "summarize: "
    live = tokenize_sources(tokenizer, TEXTS, max_length=16, prefix=source_prefix(model))
    cached = encode_sources(
        model.get_encoder(), tokenizer, TEXTS, max_length=16, prefix=source_prefix(model), dtype=torch.float32
    )
    a = generate_greedy(model, tokenizer, input_ids=live["input_ids"], attention_mask=live["attention_mask"])
    b = generate_greedy(model, tokenizer, encoder_hidden=cached.hidden, attention_mask=cached.attention_mask)
    assert torch.equal(a.labels, b.labels)
    # T5's start token equals pad: log-probs must still match a plain forward pass with every position seen.
    lp = sequence_log_probs(
        model, a.labels, a.mask, encoder_hidden=cached.hidden, attention_mask=cached.attention_mask
    )
    with torch.no_grad():
        full = model(
            input_ids=live["input_ids"],
            attention_mask=live["attention_mask"],
            decoder_input_ids=torch.cat([torch.zeros_like(a.labels[:, :1]), a.labels[:, :-1]], dim=1),
        ).logits.log_softmax(-1)
    expected = full.gather(-1, a.labels.unsqueeze(-1)).squeeze(-1) * a.mask
    assert torch.allclose(lp.logp, expected, atol=1e-5)
