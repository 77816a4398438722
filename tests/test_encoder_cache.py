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
    enc.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["enc.pt"]  # no temp file left behind
    loaded = EncodedSources.load(path)
    assert torch.equal(loaded.hidden, enc.hidden) and torch.equal(loaded.attention_mask, enc.attention_mask)

    picked = loaded.select([2, 0])
    n = int(enc.attention_mask[0].sum())  # "rain" is shorter: columns past row 0's length are trimmed
    assert picked.hidden.shape[1] == n
    assert torch.equal(picked.hidden[1], enc.hidden[0, :n])
    assert torch.equal(picked.attention_mask[0], enc.attention_mask[2, :n])
    assert loaded.select([2, 0], trim=False).hidden.shape[1] == enc.hidden.shape[1]


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
