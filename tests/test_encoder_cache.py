import pytest
import torch

from components.encoder_cache import EncodedSources, EncoderCacheError, encode_sources
from components.models import ModelSpec, load_model

TEXTS = ["the cat sat on the mat", "stocks fell sharply in london on friday after weak data", "rain"]


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelSpec("tiny", "seq2seq"))


def test_encode_sources_matches_the_live_encoder_row_by_row(tiny):
    tokenizer, model = tiny
    enc = encode_sources(
        model.get_encoder(), tokenizer, TEXTS, max_length=8, batch_size=2, dtype=torch.float32
    )
    assert enc.hidden.shape[:2] == enc.attention_mask.shape and len(enc) == 3
    for i, text in enumerate(TEXTS):
        tokens = tokenizer([text], max_length=8, truncation=True, return_tensors="pt")
        live = model.get_encoder()(**tokens).last_hidden_state[0]
        n = tokens["attention_mask"].sum().item()
        assert enc.attention_mask[i].sum().item() == n
        assert torch.allclose(enc.hidden[i, :n], live, atol=1e-5)


def test_save_load_roundtrip_and_select(tiny, tmp_path):
    tokenizer, model = tiny
    enc = encode_sources(model.get_encoder(), tokenizer, TEXTS, max_length=8, batch_size=2)
    assert enc.hidden.dtype == torch.float16
    path = tmp_path / "cache" / "enc.pt"
    enc.save(path, storage="native")
    assert [p.name for p in path.parent.iterdir()] == ["enc.pt"]  # no temp file left behind
    loaded = EncodedSources.load(path)
    assert torch.equal(loaded.hidden, enc.hidden) and torch.equal(loaded.attention_mask, enc.attention_mask)

    picked = loaded.select([2, 0])
    n = int(enc.attention_mask[0].sum())  # "rain" is shorter: columns past row 0's length are trimmed
    assert picked.hidden.shape[1] == n
    assert torch.equal(picked.hidden[1], enc.hidden[0, :n])
    assert torch.equal(picked.attention_mask[0], enc.attention_mask[2, :n])
    assert loaded.select([2, 0], trim=False).hidden.shape[1] == enc.hidden.shape[1]


def test_int8_storage_is_half_of_fp16_and_close_per_channel(tiny, tmp_path):
    tokenizer, model = tiny
    long_texts = [" ".join(TEXTS * 8)] * 20  # 64 tokens: a scale per channel is small beside them
    enc = encode_sources(model.get_encoder(), tokenizer, long_texts, max_length=64)
    enc.hidden[:, :, 3] *= 50  # an outlier channel must not cost the others their resolution
    enc.save(tmp_path / "fp16.pt", storage="native")
    enc.save(tmp_path / "int8.pt")
    assert (tmp_path / "int8.pt").stat().st_size < 0.6 * (tmp_path / "fp16.pt").stat().st_size
    loaded = EncodedSources.load(tmp_path / "int8.pt")
    assert loaded.hidden.dtype == torch.float16 and torch.equal(loaded.attention_mask, enc.attention_mask)
    error = (loaded.hidden.float() - enc.hidden.float()).abs()
    step = enc.hidden.float().abs().amax(dim=1, keepdim=True) / 127
    fp16_rounding = enc.hidden.float().abs() * 2**-10 + 1e-4
    assert bool((error <= step / 2 + fp16_rounding).all())  # the nearest step of its own channel
    others = [c for c in range(enc.hidden.shape[2]) if c != 3]
    relative = error[:, :, others].norm() / enc.hidden[:, :, others].float().norm()
    assert relative < 0.01


def test_a_v1_cache_still_loads(tmp_path):
    hidden, mask = torch.randn(2, 3, 4, dtype=torch.float16), torch.ones(2, 3, dtype=torch.long)
    torch.save(
        {"format": "pgg-encoded-sources-v1", "hidden": hidden, "attention_mask": mask}, tmp_path / "v1.pt"
    )
    assert torch.equal(EncodedSources.load(tmp_path / "v1.pt").hidden, hidden)


def test_missing_corrupt_and_foreign_cache_files_give_clear_errors(tmp_path):
    with pytest.raises(EncoderCacheError, match="does not exist"):
        EncodedSources.load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(EncoderCacheError, match="corrupt"):
        EncodedSources.load(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(EncoderCacheError, match="not a"):
        EncodedSources.load(foreign)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="attention_mask"):
        EncodedSources(hidden=torch.zeros(2, 3, 4), attention_mask=torch.ones(2, 5))
