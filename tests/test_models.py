import pytest
import torch

from components.models import ModelLoadError, ModelSpec, count_parameters, load_model, minilm_dir


def test_embedded_encoder_gives_sentence_embeddings():
    tokenizer, model = load_model(ModelSpec("minilm", "encoder"))
    assert (minilm_dir() / "config.json").exists()
    batch = tokenizer(["a cat sat on the mat", "stocks fell sharply"], return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape[-1] == 384
    assert 20e6 < count_parameters(model) < 25e6


def test_embedded_bert2bert_generates():
    tokenizer, model = load_model(ModelSpec("minilm", "seq2seq", decoder_layers=2))
    assert model.config.decoder.num_hidden_layers == 2
    assert model.generation_config.decoder_start_token_id == tokenizer.cls_token_id
    batch = tokenizer(["the bank raised interest rates"], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 1 and out[0, 0].item() == tokenizer.cls_token_id


@pytest.mark.parametrize("kind", ["encoder", "seq2seq", "causal_lm", "masked_lm"])
def test_tiny_models_are_small_and_run(kind):
    tokenizer, model = load_model(ModelSpec("tiny", kind))
    assert count_parameters(model) < 5e6
    batch = tokenizer(["hello world"], return_tensors="pt")
    with torch.no_grad():
        if kind == "seq2seq":
            out = model(**batch, labels=batch["input_ids"])
        else:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert out is not None


def test_hub_model_offline_error_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model(ModelSpec("pgg-no-such-org/no-such-model", "seq2seq"))
