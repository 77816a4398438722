"""Does a guidance that orders unseen candidates better make pgg's WMLE beat MLE? (#16)

    python -m bench.summarization_guidance_policy [--lists 256,16384] [--trained-lists 2048]
        [--exp-lists 16384] [--seeds 0 1 2] [--steps 300] [--eval-every 100]

Reads the cache of ``bench.summarization_guidance_stream`` (same ``--root``, ``--warmstart-steps``,
``--held-lists``): its warm start (MLE on one half of the train articles, never on the other) and its
streamed training lists. For each count in ``--lists`` it fits that bench's ``frozen`` guidance on the
first n lists (seeded: the same model, so the same held-out accuracy as that bench's row) and keeps it;
for each count in ``--trained-lists``, its ``all`` guidance (every backbone layer trained, lr 5e-5).

Then, per seed, the warm start trains ``--steps`` more steps on every train reference (batch, lr and
warm-up from params.yaml):

- ``mle``;
- ``pgg`` with each guidance: w_t = r_t / sum r on the references (``wmle_weighting: reward``), one fit
  and no refit, so the only thing that differs between the pgg rows is how well the guidance orders;
- ``pgg`` with w_t ∝ exp r_t (``exp_reward``, the authors' code's softer rule) with the frozen guidance
  of each count in ``--exp-lists``.

Validation and test ROUGE-L (greedy) every ``--eval-every`` steps. The section reports test at the last
step and at the step each method's mean validation ROUGE-L picks, with a paired bootstrap of pgg − MLE over
test articles pooled over seeds, and lead-k beside them. Seeds change the batch order and dropout; the warm
start and the guidances are the same for every seed. ``--section`` keeps runs of other lengths apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import flows  # noqa: F401  (project-local Prefect home, offline hub)
from bench.report import markdown_table, mean_sd, write_section
from bench.summarization_guidance_stream import build_lists, fit_guidance
from components import data
from components.encoder_cache import encode_sources
from components.lead_baseline import lead_summaries
from components.models import load_tokenizer
from components.policy_trainer import train_policy
from components.reference_rewards import reference_token_rewards, reward_sources
from components.rouge import rouge_per_example
from components.seq2seq_policy import encode_targets, greedy_texts
from components.statistics import paired_bootstrap
from flows.checkpoints import is_complete, load_guidance, load_policy, save_guidance
from flows.config import DEFAULT_PARAMS, load_params

SECTION = "summarization_guidance_policy"


def guidance_folder(config, root: Path, lists: list[dict], row: str, n: int) -> Path:
    """The stream bench's guidance ``row`` fitted on the first ``n`` training lists, fitted once and kept."""
    folder = root / f"guidance-{row}-{n}"
    if not is_complete(folder):
        trainer, report, seconds = fit_guidance(config, row, lists[:n])
        save_guidance(trainer.model, folder, {"lists": n, "seconds": seconds, **report})
    return folder


def split(config, examples, tokenizer, policy):
    """(examples, encoder states, labels, mask) of one split."""
    sampling = config.sampling.summarization
    sources = encode_sources(
        policy.get_encoder(), tokenizer, [e.source for e in examples], max_length=sampling.max_source_tokens
    )
    labels, mask = encode_targets(tokenizer, [e.target for e in examples], sampling.max_target_tokens, policy)
    return examples, sources, labels, mask


def rouge_l(model, tokenizer, examples, sources, config) -> list[float]:
    """Greedy ROUGE-L F1 x 100 of each example."""
    predictions = greedy_texts(
        model, tokenizer, sources, len(examples), config.eval.summarization.batch_size,
        config.sampling.summarization.max_target_tokens,
    )  # fmt: skip
    return [100 * s["rougeL"] for s in rouge_per_example(predictions, [e.target for e in examples])]


def test_scores(model, tokenizer, splits, config) -> dict[str, float]:
    """Greedy ROUGE-L F1 x 100 of each test article, by id."""
    examples, sources = splits["test"][:2]
    return dict(
        zip([e.id for e in examples], rouge_l(model, tokenizer, examples, sources, config), strict=True)
    )


def train_one(config, warm: Path, run: tuple, guidance: Path | None, seed: int, args, splits) -> dict:
    """``args.steps`` steps of ``run`` (method, lists, weighting) from the warm start: validation curve and
    test scores."""
    method, _, weighting = run
    policy_settings, sampling = config.policy.summarization, config.sampling.summarization
    tokenizer, model = load_policy(warm, frozen_encoder=True)
    examples, sources, labels, mask = splits["train"]
    rewards = None
    if guidance is not None:
        reward_model = load_guidance(guidance, freeze_backbone=True)
        readings = reward_sources(
            reward_model, load_tokenizer(config.models.summarization.reward_backbone),
            [e.source for e in examples], sources, sampling.max_source_tokens,
        )  # fmt: skip
        rewards = reference_token_rewards(reward_model, labels, mask, readings)
    curve, test_curve = {}, {}

    def on_step(step: int, _stats: dict) -> None:
        if step % args.eval_every == 0:
            model.eval()
            curve[step] = statistics.mean(rouge_l(model, tokenizer, *splits["validation"][:2], config))
            # Scored at every evaluation, but reported only at the step validation picks.
            test_curve[step] = test_scores(model, tokenizer, splits, config)
            model.train()
            print(f"  {label(run)}, seed {seed}, step {step}: "
                  f"val ROUGE-L {curve[step]:.2f}", flush=True)  # fmt: skip

    start = time.perf_counter()
    train_policy(
        model, tokenizer, sources, labels, mask,
        dataclasses.replace(
            policy_settings.train_config(method, args.steps, policy_settings.lr, seed, sampling),
            wmle_weighting=weighting or policy_settings.wmle_weighting,
        ),
        token_rewards=rewards, on_step=on_step,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    model.eval()
    return {
        "validation": curve,
        "test_curve": test_curve,
        # the last evaluation already scored the final policy when it fell on the last step
        "test": test_curve.get(args.steps) or test_scores(model, tokenizer, splits, config),
        "seconds": seconds,
    }  # fmt: skip


def label(run: tuple) -> str:
    method, n, weighting = run
    if n is None:
        return method
    trained = ", all layers trained" if n[0] == "all" else ""
    return f"pgg, guidance from {n[1]} lists{trained}" + (
        ", w_t ∝ exp r_t" if weighting == "exp_reward" else ""
    )


def validation_chosen(runs: list[tuple], results: dict, seeds: list[int]) -> str:
    """Test ROUGE-L of each method at the step its mean validation ROUGE-L picks, with pgg − MLE at those
    steps; empty when the results hold no per-step test scores."""
    if not all("test_curve" in r for r in results.values()):
        return ""
    rows, picked = [], {}
    for run in runs:
        per_seed = [results[run, seed] for seed in seeds]
        step = max(
            per_seed[0]["validation"], key=lambda s: statistics.mean(r["validation"][s] for r in per_seed)
        )
        picked[run] = {
            (seed, k): v
            for seed, r in zip(seeds, per_seed, strict=True)
            for k, v in r["test_curve"][step].items()
        }
        rows.append([
            label(run), step, mean_sd([r["validation"][step] for r in per_seed], digits=2),
            mean_sd([statistics.mean(r["test_curve"][step].values()) for r in per_seed], digits=2),
        ])  # fmt: skip
    keys = sorted(picked[runs[0]])
    intervals = [
        f"- {label(run)} − MLE: "
        f"{paired_bootstrap([picked[run][k] for k in keys], [picked[runs[0]][k] for k in keys])}"
        for run in runs[1:]
    ]
    return f"""
Each method at the step its mean validation ROUGE-L picks (test scored at every evaluation, read only here):

{markdown_table(["method", "step chosen on validation", "val", "test"], rows)}

Paired bootstrap at those steps:

{chr(10).join(intervals)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default="runs/bench/summarization_guidance_stream", help="the stream bench's"
    )
    parser.add_argument("--warmstart-steps", type=int, default=200)
    parser.add_argument("--held-lists", type=int, default=450)
    parser.add_argument("--lists", default="256,16384", help="comma-separated guidance list counts")
    parser.add_argument(
        "--trained-lists", default="", help="counts whose guidance trains all backbone layers (lr 5e-5)"
    )
    parser.add_argument(
        "--exp-lists", default="", help="counts whose frozen guidance trains with w_t ∝ exp r_t"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--section", default=SECTION, help="BENCHMARKS section to (re)write")
    args = parser.parse_args()
    for flag, value in (
        ("--lists", args.lists),
        ("--trained-lists", args.trained_lists),
        ("--exp-lists", args.exp_lists),
    ):
        if value and not all(n.isdigit() and int(n) > 0 for n in value.split(",")):
            parser.exit(2, f"error: {flag} {value!r} is not a comma-separated list of positive counts\n")
    if not (args.lists or args.trained_lists or args.exp_lists):
        parser.exit(
            2, "error: no guidance to compare with MLE; give --lists, --trained-lists or --exp-lists\n"
        )
    if args.steps < args.eval_every or args.eval_every < 1:
        parser.exit(2, f"error: --eval-every {args.eval_every} must be between 1 and --steps {args.steps}\n")
    # A guidance is (stream bench row, lists): the frozen head, or all layers trained.
    counts = [("frozen", int(n)) for n in args.lists.split(",") if n]
    counts += [("all", int(n)) for n in args.trained_lists.split(",") if n]
    exp_counts = [("frozen", int(n)) for n in args.exp_lists.split(",") if n]
    torch.set_num_threads(args.threads)
    config = load_params(DEFAULT_PARAMS)
    root = Path(args.root) / "seed-0"  # the stream bench's data seed: its warm start and lists
    warm = root / f"warmstart-{args.warmstart_steps}"
    if not is_complete(warm):
        parser.exit(2, f"error: no warm start at {warm}; run bench.summarization_guidance_stream first\n")
    built = build_lists(
        config, root, SimpleNamespace(seed=0, warmstart_steps=args.warmstart_steps, held_lists=args.held_lists,
                                      train_lists=max(n for _, n in counts + exp_counts)),
    )  # fmt: skip
    guidances = {key: guidance_folder(config, root, built["train"], *key) for key in {*counts, *exp_counts}}
    fits = {}  # the stream bench's held-out accuracy and weight columns of each guidance
    fits_file = root / f"fits-{args.warmstart_steps}.jsonl"
    for row in map(json.loads, fits_file.read_text().splitlines() if fits_file.exists() else []):
        fits[row["name"], row["lists"]] = row

    tokenizer, policy = load_policy(warm, frozen_encoder=True)
    settings = config.data.summarization  # the split of the stream bench (and of `prepare`)
    examples = data.split_examples(
        data.load_bbc(config.data.root, settings.target), settings.validation_fraction,
        settings.test_fraction, settings.split_salt,
    )  # fmt: skip
    splits = {
        name: split(config, examples[name], tokenizer, policy) for name in ("train", "validation", "test")
    }
    out = root / f"policy-{args.steps}"
    out.mkdir(exist_ok=True)
    runs = [("mle", None, None)] + [("pgg", n, None) for n in counts]
    runs += [("pgg", n, "exp_reward") for n in exp_counts]
    results: dict[tuple, dict] = {}
    for seed in args.seeds:
        for run in runs:
            method, n, weighting = run
            name = "0" if n is None else str(n[1]) if n[0] == "frozen" else f"{n[0]}-{n[1]}"
            path = out / f"{method}-{name}{'-' + weighting if weighting else ''}-seed-{seed}.json"
            if not path.exists():
                result = train_one(config, warm, run, guidances.get(n), seed, args, splits)
                path.write_text(json.dumps(result))
            results[run, seed] = json.loads(path.read_text())

    steps = sorted({int(s) for r in results.values() for s in r["validation"]})
    rows, intervals = [], []
    for run in runs:
        n = run[1]
        per_seed = [results[run, seed] for seed in args.seeds]
        fit = fits.get(n, {})
        rows.append([
            label(run),
            f"{fit['held_accuracy']:.3f}" if fit else "-",
            f"{fit['novel_weight']:.1f}" if "novel_weight" in fit and run[2] is None else "-",  # w = r / sum r
            *(mean_sd([r["validation"][str(s)] for r in per_seed], digits=2) for s in steps),
            mean_sd([statistics.mean(r["test"].values()) for r in per_seed], digits=2),
            f"{statistics.mean(r['seconds'] for r in per_seed) / 60:.1f}",
        ])  # fmt: skip
        if n is not None:
            ours = {(seed, k): v for seed in args.seeds for k, v in results[run, seed]["test"].items()}
            mle = {(seed, k): v for seed in args.seeds for k, v in results[runs[0], seed]["test"].items()}
            keys = sorted(ours)
            intervals.append(
                f"- {label(run)} − MLE: {paired_bootstrap([ours[k] for k in keys], [mle[k] for k in keys])}"
            )
    n_test = len(splits["test"][0])
    lead_k = config.eval.summarization.lead_k
    lead = {
        name: statistics.mean(
            100 * r["rougeL"]
            for r in rouge_per_example(
                lead_summaries([e.source for e in examples[name]], lead_k), [e.target for e in examples[name]]
            )
        )  # fmt: skip
        for name in ("validation", "test")
    }
    chosen = validation_chosen(runs, results, args.seeds)
    body = f"""Question: if the guidance orders unseen candidates better (more lists), does pgg's reweighting of
the references do better than MLE on the same references? Policy: the MiniLM BERT2BERT warm start of
`bench.summarization_guidance_stream` ({args.warmstart_steps} MLE steps on half of the train articles),
then {args.steps} steps on all {len(splits["train"][0])} train references (batch
{config.policy.summarization.batch_size}, lr {config.policy.summarization.lr}), seeds {args.seeds} (batch
order and dropout). Guidance: that bench's frozen-head (or all-layers) row on the first n streamed lists, fitted
once; no refit during the policy steps. Held-out accuracy and novel-token weight are that bench's
columns (450 held-out lists; the weight column is for w_t = r_t / sum r, and MLE's 1 / length puts
about 30 % of the weight on novel tokens).
ROUGE-L F1 x 100, greedy, mean ± sd over seeds: validation ({len(splits["validation"][0])} articles) after
each number of steps, test ({n_test} articles) at the end.

{markdown_table(["method", "guidance held-out pairwise", "novel-token weight, %", *(f"val, {s} steps" for s in steps), "test", "train min"], rows)}

Paired bootstrap over test articles pooled over seeds (95 %, 10 000 resamples):

{chr(10).join(intervals)}

lead-{lead_k}: validation {lead["validation"]:.2f}, test {lead["test"]:.2f}.
{chosen}
{args.threads} torch threads; load average {", ".join(f"{x:.1f}" for x in os.getloadavg())} (2 cores)."""
    write_section(
        args.section,
        f"Summarization: does a better-ordering guidance make WMLE beat MLE? {args.steps} policy steps (issue #16)",
        body,
    )


if __name__ == "__main__":
    main()
