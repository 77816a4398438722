"""Summarization guidance: how well each reward backbone orders candidates of unseen articles.

    python -m bench.summarization_guidance [--seed 0] [--threads 2]

Samples K = 3 headlines per training article from the warm start of ``bench.summarization``'s seed
(run that first), ranks them by ROUGE against the reference, and fits the token-level guidance on
128 / 256 / 512 of those lists with each reward backbone. Every fit is scored on lists of other
articles (pairwise ordering accuracy, Kendall tau, listwise loss against ln 3! of constant rewards).
A hand-made reference point sits beside them: the share of a candidate's words found in its
article, which no model learned.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import re
import time
from pathlib import Path

import torch

import flows  # noqa: F401  (project-local Prefect home, offline hub)
from bench.report import markdown_table, write_section
from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec
from components.reward_model import TokenRewardModel
from flows.config import DEFAULT_PARAMS, load_params

# (label, reward backbone kind, head lr, lists)
FITS = [
    ("seq2seq, lr 1e-4 (the old default)", "seq2seq", 1e-4, 512),
    ("seq2seq, lr 1e-3", "seq2seq", 1e-3, 512),
    ("encoder, lr 1e-3", "encoder", 1e-3, 512),
    ("causal_lm, lr 1e-3", "causal_lm", 1e-3, 128),
    ("causal_lm, lr 1e-3 (the default)", "causal_lm", 1e-3, 256),
    ("causal_lm, lr 1e-3", "causal_lm", 1e-3, 512),
]


def sample_lists(config, warm: Path, seed: int, iterations: range) -> list:
    from flows import summarization as s

    lists = []
    for iteration in iterations:
        lists += s.sample_and_rank.fn(
            warm, s.split_file(config, "train"), s.cache_file(config, "train"), config.models.summarization,
            config.sampling.summarization, config.guidance.summarization, seed, iteration,
        )  # fmt: skip
    return lists


def source_overlap_accuracy(lists) -> float:
    """Pairwise accuracy of ordering candidates by the share of their words found in the article."""
    words = lambda text: re.findall(r"\w+", text.lower())  # noqa: E731
    right = total = 0.0
    for ranked in lists:
        article = set(words(ranked.source))
        share = [sum(w in article for w in words(c)) / max(len(words(c)), 1) for c in ranked.candidates]
        for a, b in itertools.combinations(range(len(share)), 2):
            if ranked.scores[a] == ranked.scores[b]:
                continue
            total += 1
            agree = (share[a] - share[b]) * (ranked.scores[a] - ranked.scores[b])
            right += 1.0 if agree > 0 else 0.5 if agree == 0 else 0.0
    return right / total


def fit(kind: str, lr: float, lists, held, config) -> tuple[dict, dict, float]:
    guidance, models, sampling = (
        config.guidance.summarization, config.models.summarization, config.sampling.summarization,
    )  # fmt: skip
    torch.manual_seed(0)
    layers = models.reward_decoder_layers if kind == "seq2seq" else None
    tokenizer, model = TokenRewardModel.from_spec(
        ModelSpec(models.reward_backbone, kind, layers), head_hidden=guidance.head_hidden,
        squash=guidance.squash, freeze_backbone=True,
    )  # fmt: skip
    trainer = GuidanceTrainer(
        model,
        tokenizer,
        dataclasses.replace(
            guidance.trainer_config(1, sampling.max_target_tokens, sampling.max_source_tokens), lr=lr
        ),
    )
    start = time.perf_counter()
    report = trainer.fit(lists).as_dict()
    return report, trainer.evaluate(held), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--bench-root", default="runs/bench/summarization")
    args = parser.parse_args()
    overrides = {"runtime.seed": args.seed, "sampling.summarization.articles_per_iteration": 256}
    if args.threads:
        torch.set_num_threads(args.threads)
    runs_dir = Path(args.bench_root) / f"seed-{args.seed}"
    warm = runs_dir / "summarization" / "warmstart"  # and the encoder cache beside it
    config = load_params(DEFAULT_PARAMS, {**overrides, "runtime.runs_dir": str(runs_dir)})
    start = time.perf_counter()
    pool = sample_lists(config, warm, seed=args.seed + 7, iterations=range(101, 104))  # 768 lists
    sampling_seconds = time.perf_counter() - start
    train, rest = pool[:512], pool[512:]
    seen = {ranked.source for ranked in train}
    held = [r for r in rest if r.source not in seen and len(set(r.scores)) > 1]
    tied = sum(len(set(r.scores)) == 1 for r in train)

    chance = math.log(math.factorial(config.sampling.summarization.k))
    rows = []
    for label, kind, lr, n in FITS:
        report, held_out, seconds = fit(kind, lr, train[:n], held, config)
        rows.append([
            label, f"{n} ({report['n_tied_dropped']} tied)", f"{held_out['pairwise_accuracy']:.3f}",
            f"{held_out['kendall_tau']:.3f}", f"{held_out['loss']:.4f}", f"{seconds:.0f}",
        ])  # fmt: skip
        print(rows[-1], flush=True)
    rows.append(["share of words found in the article (hand-made, not learned)", "-",
                 f"{source_overlap_accuracy(held):.3f}", "-", "-", "-"])  # fmt: skip

    body = f"""
Lists: K = {config.sampling.summarization.k} samples (top-k 50, top-p 0.95) per training article from the warm start
of `bench.summarization` seed {args.seed}, ranked by ROUGE against the headline; {len(pool)} lists sampled in
{sampling_seconds:.0f} s, {tied} of the first 512 fully tied (memorised headlines). Every fit is scored on
{len(held)} untied lists of articles it never saw. Frozen MiniLM backbone, head only, listwise loss, avg
aggregation, 20 % held out for early stopping; chance (constant rewards) is ln 3! = {chance:.4f}.

{markdown_table(["reward backbone", "lists (fully tied, dropped)", "held-out pairwise acc.", "Kendall tau", "held-out loss", "fit s"], rows)}

- `seq2seq` is the BERT2BERT warm start of the policy's own recipe: its decoder's cross-attention is
  new, random weights, so with the backbone frozen the token states read the article only through
  random projections, and the fit stays near chance. `causal_lm` reads [article; candidate] in one MiniLM stack
  with a causal mask: pretrained self-attention links each candidate token to the article, and r_t
  still sees only the article and y_<=t. It is the default (`models.summarization.reward_backbone_kind`).
- More lists help, as on the prompt task (the default samples 256 articles per refit to stay in the
  20-minute budget). Held-out accuracies move by about ±0.03 between held-out sets: an earlier
  probe on 122 other lists gave 0.59 / 0.60 / 0.67 for 128 / 256 / 512 causal_lm lists and 0.43-0.50
  for seq2seq. The hand-made word-overlap score shows what the data allows: ROUGE against an unseen
  headline is predictable from the article to about that level, so the guidance has room left.
"""
    write_section(
        "summarization_guidance", "Summarization guidance: reward backbones on held-out articles", body
    )


if __name__ == "__main__":
    main()
