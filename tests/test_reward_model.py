import json

import pytest
import torch

from components.models import ModelSpec
from components.reward_model import TokenRewardModel, backbone_kind, transformer_layers

KINDS = ["encoder", "causal_lm", "seq2seq"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(kind, **kwargs):
    torch.manual_seed(0)
    # A large head gain makes rewards differ per token, so leaks would show.
    kwargs.setdefault("init_gain", 3.0)
    return TokenRewardModel.from_spec(ModelSpec("tiny", kind), head_hidden=16, **kwargs)[1]


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 3000, (3, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    mask[2, 1:] = 0
    source = torch.randint(1000, 3000, (3, 5), generator=g)
    source_mask = torch.ones_like(source)
    source_mask[1, 3:] = 0
    return ids, mask, source, source_mask


@pytest.mark.parametrize("kind", KINDS)
def test_rewards_are_zero_at_pads_and_unchanged_by_extra_padding(kind):
    model = _model(kind).eval()
    ids, mask, source, source_mask = _inputs()
    rewards = model(ids, mask, source_ids=source, source_attention_mask=source_mask)
    assert rewards.shape == ids.shape
    assert (rewards[mask == 0] == 0).all()
    assert (rewards[mask == 1] > 0).all()
    assert rewards[mask == 1].std() > 1e-3  # not a constant, or the next check would prove nothing

    pad = torch.zeros(3, 4, dtype=torch.long)
    more = model(
        torch.cat([ids, pad + 7], 1),  # arbitrary ids under the pads
        torch.cat([mask, pad], 1),
        source_ids=torch.cat([source, pad + 9], 1),
        source_attention_mask=torch.cat([source_mask, pad], 1),
    )
    assert torch.allclose(more[:, :6], rewards, atol=1e-5)
    assert (more[:, 6:] == 0).all()


@pytest.mark.parametrize("kind", ["causal_lm", "seq2seq"])
def test_decoder_reward_at_t_sees_tokens_up_to_t_only(kind):
    model = _model(kind).eval()
    ids, _, source, _ = _inputs()
    base = model(ids, source_ids=source)
    changed = ids.clone()
    changed[:, 3] += 1
    after = model(changed, source_ids=source)
    assert torch.allclose(after[:, :3], base[:, :3], atol=1e-6)  # the past does not see the future
    assert not torch.allclose(after[:, 3], base[:, 3])  # r_t reads y_t itself


def test_seq2seq_accepts_precomputed_encoder_states_and_source_changes_rewards():
    model = _model("seq2seq").eval()
    ids, mask, source, source_mask = _inputs()
    direct = model(ids, mask, source_ids=source, source_attention_mask=source_mask)
    states = model.encode_source(source, source_mask)
    cached = model(ids, mask, source_attention_mask=source_mask, encoder_hidden_states=states)
    assert torch.allclose(direct, cached, atol=1e-6)
    other = model(ids, mask, source_ids=source.flip(1), source_attention_mask=source_mask.flip(1))
    assert not torch.allclose(direct, other)
    with pytest.raises(ValueError, match="source_ids or encoder_hidden_states"):
        model(ids, mask)


def test_squashes_bound_the_rewards():
    ids, mask, _, _ = _inputs()
    soft = _model("encoder", init_gain=50.0).eval()(ids, mask)
    assert (soft[mask == 1] > 0).all() and (soft <= 1.3133).all() and soft[mask == 1].std() > 0.1
    sig = _model("encoder", init_gain=50.0, squash="sigmoid").eval()(ids, mask)
    assert (sig >= 0).all() and (sig <= 1).all() and sig[mask == 1].std() > 0.1


def test_fresh_head_gives_nearly_constant_rewards():
    model = _model("encoder", init_gain=1e-4).eval()
    ids, mask, _, _ = _inputs()
    rewards = model(ids, mask)[mask == 1]
    assert rewards.max() - rewards.min() < 1e-5


def test_frozen_backbone_trains_only_the_head_and_stays_in_eval_mode():
    model = _model("seq2seq", freeze_backbone=True).train()
    assert not model.backbone.training and model.head.training
    ids, mask, source, source_mask = _inputs()
    model(ids, mask, source_ids=source, source_attention_mask=source_mask).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


def test_trainable_layers_train_only_the_top_layers_and_the_head(tmp_path):
    model = _model("causal_lm", trainable_layers=1).train()
    layers = transformer_layers(model.backbone.base_model)
    assert len(layers) == 2
    ids, mask, source, source_mask = _inputs()
    model(ids, mask, source_ids=source, source_attention_mask=source_mask).sum().backward()
    trained = {id(p) for p in model.backbone.parameters() if p.grad is not None}
    assert trained == {id(p) for p in layers[1].parameters()}  # the top block only, no embeddings
    assert all(p.grad is not None for p in model.head.parameters())
    model.save(tmp_path / "rm")
    assert TokenRewardModel.load(tmp_path / "rm").trainable_layers == 1
    with pytest.raises(ValueError, match="trainable_layers"):
        _model("causal_lm", trainable_layers=3)


def test_top_layers_are_saved_beside_a_reference_to_the_frozen_rest(tmp_path):
    model = _model("causal_lm", trainable_layers=1)
    top = transformer_layers(model.backbone.base_model)[1]
    with torch.no_grad():  # as a fit would: the top block moves away from the base weights
        for p in top.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save(tmp_path / "rm")
    assert sorted(f.name for f in (tmp_path / "rm").iterdir()) == [
        "head.pt",
        "reward_model.json",
        "trained_layers.pt",
    ]
    saved = torch.load(tmp_path / "rm" / "trained_layers.pt", weights_only=True)
    assert len(saved) == len(list(top.parameters()))  # the top block only, not the frozen rest
    ids, mask, source, source_mask = _inputs()
    loaded = TokenRewardModel.load(tmp_path / "rm")
    with torch.no_grad():
        expected = model.eval()(ids, mask, source_ids=source, source_attention_mask=source_mask)
        got = loaded(ids, mask, source_ids=source, source_attention_mask=source_mask)
    assert torch.equal(expected, got)
    frozen_for_evaluation = TokenRewardModel.load(tmp_path / "rm", freeze_backbone=True)
    assert torch.equal(
        frozen_for_evaluation(ids, mask, source_ids=source, source_attention_mask=source_mask), got
    )

    settings = json.loads((tmp_path / "rm" / "reward_model.json").read_text())
    settings["backbone_sha256"] = "0" * 64  # the base weights changed since the fit
    (tmp_path / "rm" / "reward_model.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="changed since this head was fitted"):
        TokenRewardModel.load(tmp_path / "rm")


def test_reset_head_restores_constant_rewards():
    model = _model("encoder", init_gain=1e-4).eval()
    ids, mask, _, _ = _inputs()
    with torch.no_grad():
        model.head[0].weight.normal_()
        model.head[2].weight.normal_()
    assert model(ids, mask)[mask == 1].std() > 1e-3
    model.reset_head()
    assert model(ids, mask)[mask == 1].std() < 1e-5


@pytest.mark.parametrize("kind", ["causal_lm", "seq2seq"])
def test_save_and_load_round_trip(kind, tmp_path):
    model = _model(kind).eval()
    ids, mask, source, source_mask = _inputs()
    before = model(ids, mask, source_ids=source, source_attention_mask=source_mask)
    model.save(tmp_path / "rm")
    loaded = TokenRewardModel.load(tmp_path / "rm")
    assert loaded.kind == kind and loaded.squash == model.squash
    after = loaded(ids, mask, source_ids=source, source_attention_mask=source_mask)
    assert torch.allclose(before, after, atol=1e-6)
    with pytest.raises(ValueError, match="reward_model.json"):
        TokenRewardModel.load(tmp_path)


def test_backbone_kind_detection_and_bad_settings():
    from components.models import load_model

    for kind, expected in [("encoder", "encoder"), ("masked_lm", "encoder"), ("causal_lm", "causal_lm")]:
        assert backbone_kind(load_model(ModelSpec("tiny", kind))[1]) == expected
    assert backbone_kind(load_model(ModelSpec("tiny", "seq2seq"))[1]) == "seq2seq"
    backbone = load_model(ModelSpec("tiny", "encoder"))[1]
    with pytest.raises(ValueError, match="unknown squash"):
        TokenRewardModel(backbone, squash="relu")
    with pytest.raises(ValueError, match="unknown backbone kind"):
        TokenRewardModel(backbone, kind="rnn")
