import pytest
import torch

from components.data import DataError
from components.models import ModelSpec, load_model
from components.task_models import (
    MaskedLMTaskModel,
    PromptError,
    PrototypeTaskModel,
    VerbalizerError,
    build_task_model,
    check_verbalizers,
    template_for,
    verbalizers_for,
)

TEXTS = ["a wonderful , moving film .", "dull , tedious and lifeless .", "charming and funny", "badly acted"]


@pytest.fixture(scope="module")
def tiny_prototype():
    tokenizer, encoder = load_model(ModelSpec("tiny", "encoder"))
    return PrototypeTaskModel(tokenizer, encoder, verbalizers_for("sst-2"))


@pytest.fixture(scope="module")
def tiny_mlm():
    return load_model(ModelSpec("tiny", "masked_lm"))


def test_prototype_cached_and_uncached_scores_are_equal(tiny_prototype):
    prompts = ["it was", "the movie is really"]
    cached = tiny_prototype.class_probs(prompts, tiny_prototype.encode_inputs(TEXTS))
    uncached = tiny_prototype.class_probs(prompts, TEXTS)
    assert cached.shape == (2, 4, 2)
    assert torch.allclose(cached.sum(-1), torch.ones(2, 4))
    assert torch.allclose(cached, uncached, atol=1e-6)
    assert not torch.allclose(cached[0], cached[1])  # the prompt changes the scores


def test_prototype_embeddings_keep_input_order(tiny_prototype):
    together = tiny_prototype.embed(TEXTS)
    one_by_one = torch.cat([tiny_prototype.embed([t]) for t in TEXTS])
    assert torch.allclose(together, one_by_one, atol=1e-5)


def test_empty_or_special_only_prompt_is_rejected_but_no_prompt_baseline_works(tiny_prototype, tiny_mlm):
    for prompt in ["", "   ", "[PAD] [PAD]", "[CLS][SEP]"]:
        with pytest.raises(PromptError, match="empty or only special tokens"):
            tiny_prototype.class_probs([prompt], TEXTS)
    mlm = MaskedLMTaskModel(*tiny_mlm, verbalizers_for("sst-2"), template_for("sst-2"))
    with pytest.raises(PromptError, match="no_prompt_class_probs"):
        mlm.class_probs(["[PAD]"], TEXTS)
    assert tiny_prototype.no_prompt_class_probs(TEXTS).shape == (1, 4, 2)
    assert mlm.no_prompt_class_probs(TEXTS).shape == (1, 4, 2)


def test_a_verbalizer_must_be_one_token_of_the_task_models_tokenizer():
    tokenizer = load_model(ModelSpec("tiny", "encoder"))[0]
    check_verbalizers(("world", "Sports", "business"), tokenizer)  # uncased: one token each
    with pytest.raises(VerbalizerError, match="'supercalifragilistic' is not one token") as err:
        check_verbalizers(("great", "supercalifragilistic"), tokenizer)
    assert isinstance(err.value, DataError) and "\n" not in str(err.value)
    with pytest.raises(VerbalizerError, match="data.prompt.verbalizers"):  # where the task model is built
        build_task_model("tiny", kind="prefix_lm", verbalizers=["great", "supercalifragilistic"])
    custom = build_task_model("tiny", kind="prototype", verbalizers=["world", "sports", "business"])
    assert custom.class_probs(["topic:"], TEXTS).shape == (1, 4, 3)


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dataset 'imdb'.*agnews"):
        verbalizers_for("imdb")
    with pytest.raises(ValueError, match="unknown dataset 'imdb'"):
        build_task_model("tiny", "imdb")


def test_masked_lm_task_model_with_tiny_random_model(tiny_mlm):
    tokenizer, model = tiny_mlm
    sentiment = MaskedLMTaskModel(tokenizer, model, verbalizers_for("sst-2"), template_for("sst-2"))
    encoded = sentiment.encode_inputs(["a fine film ."])
    assert tokenizer.decode(sentiment.sequence_ids("it was", encoded.data[0])) == (
        "[CLS] a fine film. it was [MASK]. [SEP]"
    )
    assert sentiment.verbalizer_ids.tolist() == tokenizer.convert_tokens_to_ids(["terrible", "great"])
    probs = sentiment.class_probs(["it was", "so very"], TEXTS)
    assert probs.shape == (2, 4, 2) and torch.allclose(probs.sum(-1), torch.ones(2, 4))
    assert torch.allclose(probs, sentiment.class_probs(["it was", "so very"], sentiment.encode_inputs(TEXTS)))
    # The probabilities are a softmax over the verbalizer logits at the mask.
    ids = torch.tensor([sentiment.sequence_ids("it was", sentiment.encode_inputs(TEXTS[:1]).data[0])])
    logits = model(input_ids=ids).logits[0, ids[0].tolist().index(tokenizer.mask_token_id)]
    assert torch.allclose(probs[0, 0], torch.softmax(logits[sentiment.verbalizer_ids], -1), atol=1e-5)

    topic = MaskedLMTaskModel(tokenizer, model, verbalizers_for("agnews"), template_for("agnews"))
    encoded = topic.encode_inputs(["stocks fell today"])
    assert (
        tokenizer.decode(topic.sequence_ids("news :", encoded.data[0]))
        == "[CLS] [MASK] news : stocks fell today [SEP]"
    )
    assert topic.class_probs(["news :"], TEXTS).shape == (1, 4, 4)


def test_masked_lm_long_input_keeps_the_mask(tiny_mlm):
    task = MaskedLMTaskModel(*tiny_mlm, verbalizers_for("sst-2"), template_for("sst-2"), max_input_tokens=8)
    probs = task.class_probs(["it was"], ["word " * 600])
    assert probs.shape == (1, 1, 2)


def test_verbalizer_that_is_not_a_single_token_is_rejected(tiny_mlm):
    with pytest.raises(VerbalizerError, match="'supercalifragilistic' is not a single token"):
        MaskedLMTaskModel(*tiny_mlm, ["great", "supercalifragilistic"], template_for("sst-2"))


def test_bpe_tokenizer_segments_match_whole_string_and_verbalizers_take_the_space():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = ["it was great . it was terrible . a fine film . the movie was great"] * 10
    bpe.train_from_iterator(
        corpus, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    task = MaskedLMTaskModel(tokenizer, BertForMaskedLM(config), ["terrible", "great"], template_for("sst-2"))
    assert tokenizer.convert_ids_to_tokens(task.verbalizer_ids.tolist()) == ["Ġterrible", "Ġgreat"]
    ids = task.sequence_ids("the movie was", task.encode_inputs(["a fine film"]).data[0])
    assert ids == tokenizer("a fine film the movie was <mask> .", add_special_tokens=False)["input_ids"]
    topic = MaskedLMTaskModel(tokenizer, BertForMaskedLM(config), ["it", "the"], "{mask} {prompt} {input}")
    # Mask first: the no-space form wins when it exists ("it"), else the spaced one ("the" is only "Ġthe").
    assert tokenizer.convert_ids_to_tokens(topic.verbalizer_ids.tolist()) == ["it", "Ġthe"]
    ids = topic.sequence_ids("it was", topic.encode_inputs(["a fine film"]).data[0])
    assert ids == tokenizer("<mask> it was a fine film", add_special_tokens=False)["input_ids"]
    # A blank input is no tokens: the template without it, not a lone-space token.
    assert topic.encode_inputs(["  "]).data == [[]]
    ids = topic.sequence_ids("it was", topic.encode_inputs([""]).data[0])
    assert ids == tokenizer("<mask> it was", add_special_tokens=False)["input_ids"]


def test_minilm_prototype_it_was_beats_no_prompt():
    task = build_task_model("minilm", "sst-2")
    texts = TEXTS + ["the best movie of the year", "a complete waste of time"]
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    encoded = task.encode_inputs(texts)
    with_prompt = (task.class_probs(["It was"], encoded).argmax(-1) == labels).float().mean()
    without = (task.no_prompt_class_probs(encoded).argmax(-1) == labels).float().mean()
    assert with_prompt == 1.0 and with_prompt > without


# --- prefix-LM task model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_encoder():
    return load_model(ModelSpec("tiny", "encoder"))


def test_prefix_cache_equals_the_full_forward_with_the_prefix_lm_mask(tiny_encoder):
    from components.prefix_encoder import encode_prefix, extend, pooled_continuations

    tokenizer, encoder = tiny_encoder
    inputs = [tokenizer(t)["input_ids"][:-1] for t in TEXTS[:2]]  # [CLS] x, without [SEP]
    continuations = [
        tokenizer(c, add_special_tokens=False)["input_ids"] + [102] for c in ("it was great", "so")
    ]
    width, length = max(map(len, continuations)), max(map(len, inputs))
    ids = torch.tensor([r + [0] * (length - len(r)) for r in inputs])
    prefix = encode_prefix(encoder, ids, (ids != 0).long())
    cont = torch.tensor([[c + [0] * (width - len(c)) for c in continuations]] * 2)
    mask = torch.tensor([[[True] * len(c) + [False] * (width - len(c)) for c in continuations]] * 2)
    states = extend(encoder, prefix, cont, mask)
    pooled = pooled_continuations(prefix, states, mask)
    for n, x in enumerate(inputs):
        for s, c in enumerate(continuations):
            full = torch.tensor([x + c])
            attend = torch.ones(full.shape[1], full.shape[1], dtype=torch.bool)
            attend[: len(x), len(x) :] = False  # input tokens never see the continuation
            reference = encoder(input_ids=full, attention_mask=attend[None, None]).last_hidden_state[0]
            assert torch.allclose(states[n, s, : len(c)], reference[len(x) :], atol=1e-5)
            assert torch.allclose(
                pooled[n, s], torch.nn.functional.normalize(reference.mean(0), dim=-1), atol=1e-5
            )


@pytest.mark.parametrize("reading", ["filled", "conditioned", "combined"])
def test_prefix_lm_task_model_interface_and_cache(tiny_encoder, reading):
    from components.task_models import PrefixLMTaskModel

    model = PrefixLMTaskModel(*tiny_encoder, verbalizers_for("agnews"), reading=reading, batch_size=3)
    prompts = ["it was", "the movie is really", "news about"]
    encoded = model.encode_inputs(TEXTS)
    first = model.class_probs(prompts, encoded)
    assert first.shape == (3, 4, 4) and torch.allclose(first.sum(-1), torch.ones(3, 4))
    assert model._cache  # a small split keeps its keys and values
    assert torch.allclose(model.class_probs(prompts, encoded), first)  # cached
    assert torch.allclose(model.class_probs(prompts, TEXTS), first, atol=1e-6)  # uncached
    one_by_one = torch.cat([model.class_probs([p], [t]) for p in prompts for t in TEXTS]).view(3, 4, 4)
    assert torch.allclose(one_by_one, first, atol=1e-5)  # batching and padding do not leak
    assert model.no_prompt_class_probs(encoded).shape == (1, 4, 4)
    assert not torch.allclose(first[0], first[1])
    with pytest.raises(PromptError, match="empty or only special tokens"):
        model.class_probs([" "], encoded)


def test_prefix_lm_prompt_changes_how_the_input_is_read(tiny_encoder):
    """Unlike the prototype model, the prompt moves the input side of the score, not only the classes."""
    from components.task_models import PrefixLMTaskModel

    model = PrefixLMTaskModel(*tiny_encoder, verbalizers_for("sst-2"), reading="conditioned")
    encoded = model.encode_inputs(TEXTS)
    (_, prefix, embedding), *_ = model._prefix_batches(encoded)
    read_a, read_b = model._pooled(prefix, ["it was"]), model._pooled(prefix, ["so very dull"])
    assert not torch.allclose(read_a, read_b)
    assert not torch.allclose(read_a[:, 0], embedding)
    assert build_task_model("tiny", "sst-2", "prefix_lm").reading == "filled"


# --- blank inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["prototype", "prefix_lm filled", "prefix_lm conditioned", "prefix_lm combined", "masked_lm sst-2",
             "masked_lm agnews"]
)  # fmt: skip
def test_a_blank_input_is_scored_like_any_other(tiny_encoder, tiny_mlm, kind):
    """Published few-shot splits hold blank rows: the model sees only the prompt and the verbalizers."""
    from components.task_models import PrefixLMTaskModel

    name, _, option = kind.partition(" ")
    if name == "prototype":
        model = PrototypeTaskModel(*tiny_encoder, verbalizers_for("sst-2"))
    elif name == "prefix_lm":
        model = PrefixLMTaskModel(*tiny_encoder, verbalizers_for("sst-2"), reading=option, batch_size=2)
    else:
        model = MaskedLMTaskModel(*tiny_mlm, verbalizers_for(option), template_for(option), batch_size=2)
    texts = ["", TEXTS[0], "   ", TEXTS[1]]  # a blank row first and in a later batch
    prompts = ["it was", "the movie is really"]
    probs = model.class_probs(prompts, model.encode_inputs(texts))
    baseline = model.no_prompt_class_probs(texts)
    for scores in (probs, baseline):
        assert torch.isfinite(scores).all() and torch.allclose(scores.sum(-1), torch.ones(scores.shape[:2]))
    assert torch.allclose(probs[:, 0], probs[:, 2], atol=1e-6)  # whitespace is no input at all
    alone = model.class_probs(prompts, [""])
    assert torch.allclose(alone[:, 0], probs[:, 0], atol=1e-5)  # batched with others, padding does not leak
    assert not torch.allclose(probs[0, 0], probs[1, 0])  # the prompt still moves the blank row's score


# --- packed prefix scoring (the fast path) against the padded reference -----------------------------

PROMPTS = ["it was", "the movie is really quite", "news", "so , in the end , i think it was"]


def test_packed_prefix_continuations_equal_the_padded_extend(tiny_encoder):
    from components.prefix_encoder import (
        encode_prefix,
        extend,
        pool_shared_continuations,
        pooled_continuations,
    )

    tokenizer, encoder = tiny_encoder
    inputs = [tokenizer(t)["input_ids"][:-1] for t in TEXTS + [""]]
    length = max(map(len, inputs))
    ids = torch.tensor([r + [0] * (length - len(r)) for r in inputs])
    prefix = encode_prefix(encoder, ids, (ids != 0).long())
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] + [102] for p in PROMPTS]  # lengths differ
    width = max(map(len, rows))
    cont = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
    n = len(inputs)
    wide, wide_mask = cont.expand(n, -1, -1).contiguous(), mask.expand(n, -1, -1).contiguous()
    reference = pooled_continuations(prefix, extend(encoder, prefix, wide, wide_mask), wide_mask)
    packed = pool_shared_continuations(encoder, prefix, cont, mask)
    assert packed.shape == reference.shape
    assert (packed - reference).abs().max() < 1e-5


@pytest.mark.parametrize("reading", ["filled", "conditioned", "combined"])
def test_packed_prefix_scoring_gives_the_padded_paths_probs(tiny_encoder, reading):
    from components.task_models import PrefixLMTaskModel

    settings = {"reading": reading, "batch_size": 3, "max_continuations": 5}  # several chunks and batches
    packed = PrefixLMTaskModel(*tiny_encoder, verbalizers_for("sst-2"), **settings)
    padded = PrefixLMTaskModel(*tiny_encoder, verbalizers_for("sst-2"), packed=False, **settings)
    texts = TEXTS + ["", "a long , winding and ultimately rewarding story about two brothers"]
    for model_probs in (lambda m: m.class_probs(PROMPTS, texts), lambda m: m.no_prompt_class_probs(texts)):
        assert (model_probs(packed) - model_probs(padded)).abs().max() < 1e-4  # float rounding / 0.01
        assert torch.equal(model_probs(packed).argmax(-1), model_probs(padded).argmax(-1))


def test_packed_prefix_scoring_gives_the_padded_paths_probs_on_minilm():
    from components.task_models import PrefixLMTaskModel

    packed = build_task_model("minilm", "sst-2", kind="prefix_lm")
    padded = PrefixLMTaskModel(packed.tokenizer, packed.encoder, packed.verbalizers, packed=False)
    encoded = packed.encode_inputs(TEXTS + ["the best movie of the year", ""])
    new, old = packed.class_probs(PROMPTS, encoded), padded.class_probs(PROMPTS, encoded)
    # temperature 0.01 turns ~1e-7 of cosine rounding into ~1e-5 of probability (the padded path against
    # itself at another chunk size differs by 9.3e-6): the margin keeps the test off the rounding's edge
    assert (new - old).abs().max() < 1e-4
    assert torch.equal(new.argmax(-1), old.argmax(-1))  # the same predictions: the same accuracy
    assert not torch.allclose(new[0], new[1])  # the prompts still move the scores
