"""Does storing the frozen encoder's states as int8 (one scale per article and channel) cost quality?

    python -m bench.encoder_cache_storage [--seeds 0 1] [--params params.yaml]

With params.yaml's summarization settings and the real embedded MiniLM: encode the train and validation
splits once, store them both ways (fp16 as before, int8 now), and report the file sizes and the states'
relative error. Then, per seed, train the default warm start on each storage and decode the validation
split greedily with each, so the table separates the storage effect (same policy, other states) from
seed noise (same storage, other seed). Needs `dvc repro prepare` (or `make run`) to have written data/.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import flows  # noqa: F401  (project-local Prefect home, offline hub)
from bench.report import markdown_table, write_section
from components import data
from components.encoder_cache import EncodedSources, dequantize_int8, encode_sources, quantize_int8
from components.models import load_model
from components.policy_trainer import train_policy
from components.rouge import compute_rouge
from components.seq2seq_policy import encode_targets, freeze_encoder, greedy_texts
from flows.common import apply_runtime, seed_everything
from flows.config import load_params
from flows.summarization import policy_spec, split_file


def int8_roundtrip(encoded: EncodedSources) -> EncodedSources:
    quantized, scale = quantize_int8(encoded.hidden)
    return EncodedSources(dequantize_int8(quantized, scale, encoded.hidden.dtype), encoded.attention_mask)


def relative_error(exact: EncodedSources, approx: EncodedSources) -> float:
    real = exact.attention_mask.bool()  # padding columns are masked out of cross-attention
    diff = (approx.hidden.float() - exact.hidden.float())[real]
    return float(diff.norm() / exact.hidden.float()[real].norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = load_params(args.params)
    apply_runtime(config.runtime)
    models, sampling, policy = (
        config.models.summarization,
        config.sampling.summarization,
        config.policy.summarization,
    )
    train, validation = (data.read_summaries(split_file(config, s)) for s in ("train", "validation"))
    tokenizer, model = load_model(policy_spec(models))

    def encode(examples):
        return encode_sources(model.get_encoder(), tokenizer, [e.source for e in examples],
                              max_length=sampling.max_source_tokens, prefix=models.source_prefix)  # fmt: skip

    exact = {"train": encode(train), "validation": encode(validation)}
    stored = {"fp16": exact, "int8": {split: int8_roundtrip(enc) for split, enc in exact.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        exact["train"].save(Path(tmp) / "fp16.pt", storage="native")
        exact["train"].save(Path(tmp) / "int8.pt")
        sizes = {name: (Path(tmp) / f"{name}.pt").stat().st_size / 1e6 for name in ("fp16", "int8")}
    errors = {split: relative_error(exact[split], stored["int8"][split]) for split in exact}

    references = [e.target for e in validation]
    rows, scores = [], {}
    for seed in args.seeds:
        for trained_on in ("fp16", "int8"):
            seed_everything(seed)
            tokenizer, model = load_model(policy_spec(models))
            freeze_encoder(model)
            labels, mask = encode_targets(
                tokenizer, [e.target for e in train], sampling.max_target_tokens, model
            )
            cfg = policy.train_config("mle", policy.warmstart_steps, policy.warmstart_lr, seed, sampling)
            start = time.perf_counter()
            history = train_policy(model, tokenizer, stored[trained_on]["train"], labels, mask, cfg)
            seconds = time.perf_counter() - start
            loss = statistics.fmean(h["loss"] for h in history[-20:])
            for decoded_with in ("fp16", "int8"):
                predictions = greedy_texts(model, tokenizer, stored[decoded_with]["validation"], len(validation),
                                           config.eval.summarization.batch_size, sampling.max_target_tokens)  # fmt: skip
                rouge_l = 100 * compute_rouge(predictions, references)["rougeL"]
                scores[(seed, trained_on, decoded_with)] = rouge_l
                rows.append(
                    [seed, trained_on, decoded_with, f"{loss:.3f}", f"{rouge_l:.2f}", f"{seconds:.0f}"]
                )
                print(rows[-1], flush=True)

    same_policy = [
        abs(scores[(s, t, "int8")] - scores[(s, t, "fp16")]) for s in args.seeds for t in ("fp16", "int8")
    ]
    trained = [scores[(s, "int8", "int8")] - scores[(s, "fp16", "fp16")] for s in args.seeds]
    seeds = [
        abs(scores[(a, "fp16", "fp16")] - scores[(b, "fp16", "fp16")])
        for a in args.seeds
        for b in args.seeds
        if a < b
    ]
    body = (
        f"params.yaml's summarization settings ({models.policy}, {sampling.max_source_tokens} source "
        f"tokens, warm start {policy.warmstart_steps} steps at lr {policy.warmstart_lr}); {len(train)} train "
        f"and {len(validation)} validation articles; greedy validation ROUGE-L.\n\n"
        f"Train-split cache file: fp16 {sizes['fp16']:.1f} MB, int8 {sizes['int8']:.1f} MB "
        f"({sizes['int8'] / sizes['fp16']:.0%}). Relative error of the int8 states over real tokens: "
        f"train {errors['train']:.4f}, validation {errors['validation']:.4f}.\n\n"
        + markdown_table(
            [
                "seed",
                "warm start trained on",
                "decoded with",
                "final loss (last 20 steps)",
                "val ROUGE-L",
                "train s",
            ],
            rows,
        )
        + f"\n\nSame policy, int8 instead of fp16 states at decoding: |Δ ROUGE-L| mean {statistics.fmean(same_policy):.2f}, "
        f"max {max(same_policy):.2f}. Trained and decoded on int8 minus on fp16, per seed: "
        + ", ".join(f"{d:+.2f}" for d in trained)
        + (f". Seed-to-seed difference on fp16: {statistics.fmean(seeds):.2f}." if seeds else ".")
    )
    write_section("encoder_cache_storage", "Encoder cache: int8 storage against fp16 (issue #15)", body)
    print(body)


if __name__ == "__main__":
    main()
