import math
import random

import pytest
import torch

from components.guidance_trainer import (
    GuidanceTrainer,
    RankedList,
    _batch_scores,
    _Encoded,
    score_lists,
    token_rewards,
)
from components.models import ModelSpec, load_tokenizer
from components.reward_model import TokenRewardModel
from tests.conftest import guidance_config

FILLER = "apple river table green music stone cloud paper house light".split()
MARKER = "zebra"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")


def marker_lists(n, k=4, seed=0, source=None):
    """Lists whose preference is the number of MARKER words in a candidate.

    Candidates of one list differ in length by at most one word, so ordering by marker count
    and by marker fraction agree: both ``sum`` and ``avg`` can represent the preference.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        base = rng.randint(5, 9)
        candidates, scores = [], []
        for _ in range(k):
            markers = rng.randint(0, 3)
            words = [MARKER] * markers + [
                rng.choice(FILLER) for _ in range(base + rng.randint(0, 1) - markers)
            ]
            rng.shuffle(words)
            candidates.append(" ".join(words))
            scores.append(float(markers))
        out.append(RankedList(source, candidates, scores))
    return out


def tiny_reward_model(kind="encoder", **kwargs):
    torch.manual_seed(0)
    return TokenRewardModel.from_spec(ModelSpec("tiny", kind), head_hidden=64, **kwargs)[1]


@pytest.mark.parametrize("aggregation", ["avg", "sum"])
@pytest.mark.parametrize("loss", ["listwise", "pairwise"])
def test_ground_truth_credit_assignment(tokenizer, loss, aggregation):
    for word in FILLER + [MARKER]:
        assert tokenizer.tokenize(word) == [word]
    model = tiny_reward_model()
    config = guidance_config(loss=loss, aggregation=aggregation, lr=1e-3, epochs=6, batch_size=8)
    trainer = GuidanceTrainer(model, tokenizer, config)
    report = trainer.fit(marker_lists(80, seed=1))
    kept = 80 - report.n_tied_dropped  # a few random lists have all candidates equal
    assert report.n_val == round(0.2 * kept) and report.n_train + report.n_val == kept
    held_out = trainer.evaluate(marker_lists(40, seed=2))
    assert held_out["pairwise_accuracy"] >= 0.9, held_out
    assert report.learned and report.val_loss < report.chance_val_loss
    marker, other = [], []
    for ranked in marker_lists(10, seed=3):
        for candidate in ranked.candidates:
            for token, reward in token_rewards(model, tokenizer, candidate):
                (marker if token == MARKER else other).append(reward)
    assert sum(marker) / len(marker) > sum(other) / len(other) + 0.2


def test_report_fields_and_refit_continues_from_current_weights(tokenizer):
    model = tiny_reward_model()
    trainer = GuidanceTrainer(model, tokenizer, guidance_config(lr=1e-3, epochs=2, batch_size=8))
    lists = marker_lists(20, seed=4)
    seen = []
    first = trainer.fit(lists, on_epoch=seen.append)
    assert [h["epoch"] for h in seen] == [1, 2] and first.epochs_run == 2
    assert set(first.as_dict()) >= {"train_loss", "val_loss", "val_pairwise_accuracy", "val_kendall_tau"}
    assert 0 <= first.val_pairwise_accuracy <= 1 and -1 <= first.val_kendall_tau <= 1
    trained_head = model.head[2].weight.detach().clone()
    second = trainer.fit(lists)
    assert second.history[0]["val_loss"] <= first.history[0]["val_loss"]  # started from the trained weights
    initial_embedding = trainer._initial_backbone["embeddings.word_embeddings.weight"]
    assert not torch.equal(model.backbone.embeddings.word_embeddings.weight, initial_embedding)
    trainer.reset()
    assert torch.equal(model.backbone.embeddings.word_embeddings.weight, initial_embedding)
    assert model.head[2].weight.abs().max() < trained_head.abs().max() / 10  # fresh tiny-gain head
    report = trainer.fit(lists[:2], from_scratch=True, val_lists=lists[2:4])
    assert report.n_train == 2 and report.n_val == 2


def test_a_fit_that_cannot_move_reports_it_learned_nothing(tokenizer):
    """The flows warn when a fit does no better than constant rewards (then weighted MLE is MLE)."""
    model = tiny_reward_model()
    config = guidance_config(lr=1e-12, epochs=1, batch_size=8)
    report = GuidanceTrainer(model, tokenizer, config).fit(marker_lists(10, k=3, seed=7))
    assert report.chance_val_loss == pytest.approx(math.log(6))  # ln 3! per list of 3
    assert not report.learned and report.as_dict()["learned"] is False


def test_fully_tied_lists_are_left_out_of_fit_and_evaluation(tokenizer):
    lists = marker_lists(12, k=3, seed=8)
    tied = [RankedList(None, ranked.candidates, (1.0, 1.0, 1.0)) for ranked in marker_lists(6, k=3, seed=9)]
    config = guidance_config(lr=1e-3, epochs=1, batch_size=4, val_fraction=0.25)
    trainer = GuidanceTrainer(tiny_reward_model(), tokenizer, config)
    report = trainer.fit(lists + tied)
    assert report.n_tied_dropped == 6 and report.n_train + report.n_val == 12
    assert trainer.evaluate(lists + tied)["loss"] == pytest.approx(trainer.evaluate(lists)["loss"])
    only_tied = GuidanceTrainer(tiny_reward_model(), tokenizer, config).fit(tied)
    assert only_tied.n_tied_dropped == 0 and not only_tied.learned  # nothing to learn, and it says so


def test_early_stopping_and_best_weights(tokenizer):
    model = tiny_reward_model()
    config = guidance_config(lr=0.0, epochs=10, patience=2, batch_size=4)  # lr 0: val loss never improves
    report = GuidanceTrainer(model, tokenizer, config).fit(marker_lists(10, seed=5))
    assert report.stopped_early and report.epochs_run == 3 and report.best_epoch == 1


def test_one_forward_per_batch_scores_all_candidates(tokenizer, monkeypatch):
    model = tiny_reward_model()
    calls = []
    original = model.token_hidden_states

    def counting(input_ids, attention_mask, **kwargs):
        calls.append(input_ids.shape[0])
        return original(input_ids, attention_mask, **kwargs)

    monkeypatch.setattr(model, "token_hidden_states", counting)
    config = guidance_config(epochs=1, batch_size=4, val_fraction=0.0)
    GuidanceTrainer(model, tokenizer, config).fit(marker_lists(8, k=3, seed=6))
    # one training epoch (2 batches of 4 lists × 3) + one val pass + final evaluation (2 batches each)
    assert calls == [12] * 6


def test_frozen_backbone_states_are_computed_once_per_fit(tokenizer, monkeypatch):
    model = tiny_reward_model("seq2seq", freeze_backbone=True)
    encoder = model.backbone.get_encoder()
    encoded_rows = []
    original = encoder.forward

    def counting_encoder(*args, **kwargs):
        encoded_rows.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(encoder, "forward", counting_encoder)
    lists = marker_lists(10, k=3, seed=7, source="write many zebra words")
    trainer = GuidanceTrainer(model, tokenizer, guidance_config(lr=1e-3, epochs=3, batch_size=4))
    report = trainer.fit(lists)
    # every kept list's source encoded exactly once, not per epoch or candidate
    assert sum(encoded_rows) == 10 - report.n_tied_dropped
    assert report.epochs_run == 3 and math.isfinite(report.val_loss)
    # Cached states give the same scores as running the backbone.
    cached = trainer._prepare(lists[:4])
    assert cached[0].token_states is not None
    fresh = [_Encoded(e.candidate_ids, e.source_ids, e.scores) for e in cached]
    pad = tokenizer.pad_token_id
    assert torch.allclose(
        _batch_scores(model, cached, pad, "avg", 2.0), _batch_scores(model, fresh, pad, "avg", 2.0)
    )


def test_frozen_encoder_only_caches_source_states_and_trains_the_decoder(tokenizer, monkeypatch):
    model = tiny_reward_model("seq2seq")
    encoder = model.backbone.get_encoder()
    encoder.requires_grad_(False)
    encoded_rows = []
    original = encoder.forward

    def counting_encoder(*args, **kwargs):
        encoded_rows.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(encoder, "forward", counting_encoder)
    decoder_before = [p.detach().clone() for p in model.backbone.get_decoder().parameters()]
    lists = marker_lists(10, k=3, seed=7, source="write many zebra words")
    trainer = GuidanceTrainer(model, tokenizer, guidance_config(lr=1e-3, epochs=3, batch_size=4))
    report = trainer.fit(lists)
    assert sum(encoded_rows) == 10 - report.n_tied_dropped
    after = list(model.backbone.get_decoder().parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, decoder_before, strict=True))
    cached = trainer._prepare(lists[:4])
    assert cached[0].encoder_states is not None and cached[0].token_states is None
    fresh = [_Encoded(e.candidate_ids, e.source_ids, e.scores) for e in cached]
    pad = tokenizer.pad_token_id
    model.eval()
    assert torch.allclose(
        _batch_scores(model, cached, pad, "avg", 2.0), _batch_scores(model, fresh, pad, "avg", 2.0), atol=1e-6
    )


def test_trainable_seq2seq_and_causal_with_sources_run(tokenizer):
    for kind in ("seq2seq", "causal_lm"):
        model = tiny_reward_model(kind)
        lists = marker_lists(6, k=2, seed=8, source="a source text")
        report = GuidanceTrainer(model, tokenizer, guidance_config(epochs=1, batch_size=3)).fit(lists)
        assert math.isfinite(report.train_loss)
        scores = score_lists(
            model, tokenizer, ["a source text"] * 2, [["zebra zebra", "apple"], ["apple"] * 3]
        )
        assert [len(s) for s in scores] == [2, 3]


def test_score_lists_matches_evaluation_order_and_handles_varying_k(tokenizer):
    model = tiny_reward_model()
    GuidanceTrainer(model, tokenizer, guidance_config(lr=1e-3, epochs=4)).fit(marker_lists(40, seed=9))
    scores = score_lists(
        model, tokenizer, [None, None], [["zebra zebra apple", "apple apple apple"], ["river"] * 3]
    )
    assert scores[0][0] > scores[0][1] and len(scores[1]) == 3
    pairs = token_rewards(model, tokenizer, "zebra apple")
    assert [t for t, _ in pairs] == ["zebra", "apple"] and pairs[0][1] > pairs[1][1]


def test_bad_inputs_raise_value_errors(tokenizer):
    with pytest.raises(ValueError, match="unknown loss"):
        guidance_config(loss="pointwise")
    with pytest.raises(ValueError, match="unknown aggregation"):
        guidance_config(aggregation="median")
    with pytest.raises(ValueError, match="val_fraction"):
        guidance_config(val_fraction=1.0)
    trainer = GuidanceTrainer(tiny_reward_model(), tokenizer, guidance_config(epochs=1))
    with pytest.raises(ValueError, match="no ranked lists"):
        trainer.fit([])
    mixed = [RankedList("s", ["a", "b"], [1, 0]), RankedList(None, ["a", "b"], [1, 0])]
    with pytest.raises(ValueError, match="give all a source or none"):
        trainer.fit(mixed)
