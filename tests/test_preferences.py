import json

import pytest

from components.preferences import (
    CallablePreference,
    MeteorPreference,
    PreferenceError,
    RankedList,
    RougePreference,
    load_ranked_lists,
    make_preference,
    rank_candidates,
)
from components.rouge import compute_rouge, rouge_per_example, sentences_per_line


def test_rouge_is_one_for_identical_strings():
    text = "The cat sat on the mat. It was happy."
    assert compute_rouge([text], [text]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "rougeLsum": 1.0}


def test_rouge_hand_example():
    # unigrams: 5 of 6 match; bigrams: the-cat, on-the, the-mat = 3 of 5; LCS "the cat on the mat" = 5.
    scores = compute_rouge(["the cat sat on the mat"], ["the cat is on the mat"])
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6)


def test_rouge_stemming_and_mean_over_examples():
    assert compute_rouge(["cats running"], ["cat runs"])["rouge1"] == 1.0
    assert compute_rouge(["cats running"], ["cat runs"], use_stemmer=False)["rouge1"] == 0.0
    per = rouge_per_example(["a b c", "x y"], ["a b c", "p q"])
    assert [p["rouge1"] for p in per] == [1.0, 0.0]
    assert compute_rouge(["a b c", "x y"], ["a b c", "p q"])["rouge1"] == 0.5


def test_rouge_lsum_uses_sentences():
    assert sentences_per_line("One here. Two there! Three?") == "One here.\nTwo there!\nThree?"
    assert sentences_per_line("kept\nas is. yes") == "kept\nas is. yes"
    # Summary-level LCS: reordered sentences still match fully under rougeLsum, not under rougeL.
    scores = compute_rouge(["b c d. a b c."], ["a b c. b c d."])
    assert scores["rougeLsum"] == 1.0 and scores["rougeL"] < 1.0


def test_rouge_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one reference per prediction"):
        compute_rouge(["a"], ["a", "b"])


def test_rouge_preference_is_mean_of_rouge_1_2_l():
    scores = RougePreference().score(["src"], [["the cat sat on the mat", "dogs"]], ["the cat is on the mat"])
    assert scores[0][0] == pytest.approx((5 / 6 + 3 / 5 + 5 / 6) / 3)
    assert scores[0][1] == 0.0
    with pytest.raises(PreferenceError, match="references"):
        RougePreference().score(["src"], [["a", "b"]], None)


def _write(tmp_path, lines):
    path = tmp_path / "ranks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_rankings_load_and_score(tmp_path):
    path = _write(
        tmp_path,
        [
            json.dumps({"source": "s1", "candidates": ["a", "b"], "scores": [1, 2.5]}),
            "",
            json.dumps({"source": "s2", "candidates": ["c", "d", "e"], "scores": [0, 0, 1]}),
        ],
    )
    lists = load_ranked_lists(path)
    assert lists == [
        RankedList("s1", ("a", "b"), (1.0, 2.5)),
        RankedList("s2", ("c", "d", "e"), (0.0, 0.0, 1.0)),
    ]
    preference = make_preference("jsonl", path=path)
    assert preference.score(["s2", "s1"], [["e", "c"], ["b", "a"]]) == [[1.0, 0.0], [2.5, 1.0]]
    with pytest.raises(PreferenceError, match="no score for candidate"):
        preference.score(["s1"], [["zzz", "a"]])


GOOD = json.dumps({"source": "s0", "candidates": ["a", "b"], "scores": [1, 2]})


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"source": "s", "candidates": ["a", "b"], "scores": [1, 2]', "not valid JSON"),
        ('["s", ["a", "b"], [1, 2]]', "got list"),
        ('{"source": "s", "candidates": ["a", "b"]}', "missing key"),
        ('{"source": "s", "candidates": ["a", "b"], "scores": [1]}', "2 candidates but 1 scores"),
        ('{"source": "s", "candidates": ["a", "b"], "scores": [1, "high"]}', "finite numbers"),
        ('{"source": "s", "candidates": ["a", 3], "scores": [1, 2]}', "list of strings"),
        ('{"source": "s", "candidates": ["a"], "scores": [1]}', "at least 2"),
        ('{"source": 7, "candidates": ["a", "b"], "scores": [1, 2]}', "'source' must be a string"),
        (GOOD, "already given at line 1"),
    ],
)
def test_jsonl_errors_are_one_line_naming_the_line(tmp_path, bad_line, message):
    path = _write(tmp_path, [GOOD, bad_line])
    with pytest.raises(PreferenceError) as error:
        load_ranked_lists(path)
    text = str(error.value)
    assert text.startswith(f"{path}:2: ") and message in text and "\n" not in text


def test_jsonl_missing_or_empty_file(tmp_path):
    with pytest.raises(PreferenceError, match="does not exist"):
        load_ranked_lists(tmp_path / "nope.jsonl")
    with pytest.raises(PreferenceError, match="no rankings"):
        load_ranked_lists(_write(tmp_path, [""]))


def test_meteor_without_wordnet_says_how_to_install():
    nltk = pytest.importorskip("nltk")
    try:
        nltk.data.find("corpora/wordnet")
        pytest.skip("wordnet is installed here")
    except LookupError:
        pass
    with pytest.raises(PreferenceError, match=r"python -m nltk\.downloader wordnet"):
        MeteorPreference()


def test_callable_preference_batched_and_per_candidate():
    batched = CallablePreference(lambda sources, candidates, refs: [[len(c) for c in g] for g in candidates])
    assert batched.score(["s"], [["ab", "abc"]]) == [[2.0, 3.0]]
    per = make_preference("callable", fn=lambda s, c, r: c.count("x"), per_candidate=True)
    assert per.score(["s", "t"], [["x", "xx"], ["", "xxx"]]) == [[1.0, 2.0], [0.0, 3.0]]
    wrong = CallablePreference(lambda sources, candidates, refs: [[1.0]])
    with pytest.raises(PreferenceError, match="one score per candidate"):
        wrong.score(["s"], [["a", "b"]])


def test_rank_candidates_and_factory_errors():
    ranked = rank_candidates(make_preference("rouge"), ["s"], [["a b", "c d"]], ["a b"])
    assert ranked[0].candidates == ("a b", "c d") and ranked[0].scores[0] > ranked[0].scores[1]
    with pytest.raises(PreferenceError, match="unknown preference"):
        make_preference("bleu")
    with pytest.raises(PreferenceError, match="one score each"):
        RankedList("s", ["a", "b"], [1.0])


def test_embedding_similarity_prefers_the_closer_text():
    preference = make_preference("embedding")
    scores = preference.score(
        ["src"],
        [
            [
                "The stock market fell sharply today.",
                "Shares dropped steeply on the exchange.",
                "I like green tea.",
            ]
        ],
        ["The stock market fell sharply today."],
    )[0]
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[0] > scores[1] > scores[2]


def test_rouge_is_safe_under_concurrent_calls():
    from concurrent.futures import ThreadPoolExecutor

    from components.rouge import compute_rouge

    pairs = [(["the cat sat on the mat"] * 20, ["a cat sat on a mat"] * 20)] * 16
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda pr: compute_rouge(*pr)["rougeL"], pairs))
    assert len(set(results)) == 1 and results[0] > 0.5


def test_resampled_lists_draw_k_of_one_batch_and_hold_out_whole_batches():
    import torch

    from components.preferences import resampled_lists

    batches = [([f"b{b}p{i}" for i in range(6)], [float(10 * b + i) for i in range(6)]) for b in range(5)]
    train, val = resampled_lists(
        batches, k=3, per_batch=4, val_fraction=0.2, generator=torch.Generator().manual_seed(0)
    )
    assert len(train) == 16 and len(val) == 4  # one of five batches held out, 4 lists from each
    for ranked in train + val:
        assert len(ranked.candidates) == 3 and len(set(ranked.candidates)) == 3
        batch = {c.split("p")[0] for c in ranked.candidates}
        assert len(batch) == 1  # a list never mixes prompts scored on different example subsets
        assert all(
            s == 10 * int(c[1]) + int(c.split("p")[1])
            for c, s in zip(ranked.candidates, ranked.scores, strict=True)
        )
    held = {c.split("p")[0] for r in val for c in r.candidates}
    assert held.isdisjoint({c.split("p")[0] for r in train for c in r.candidates})
    small, none_held = resampled_lists(
        batches[:1], k=3, per_batch=2, val_fraction=0.2, generator=torch.Generator()
    )
    assert len(small) == 2 and none_held == []
    with pytest.raises(PreferenceError, match="2 or more candidates"):
        resampled_lists([(["a"], [1.0])], k=3, per_batch=2, val_fraction=0.0, generator=torch.Generator())
