"""Summarization benchmark: the quick default over several seeds, ours against its baselines.

    python -m bench.summarization --seeds 0 1 2
    python -m bench.summarization --smoke        # tiny models, one seed, seconds: prints the section
    python -m bench.summarization --seeds 0 --section summarization_regime --no-variant \
        --set data.summarization.test_fraction=0.2 --set loop.summarization.policy_steps=300   # a profile

Every seed runs the whole quick default (warm start, pgg, mle, seqpg, test evaluation, lead-k) in
its own runs folder, so the methods of one seed share one warm start. Writes the "summarization"
section of BENCHMARKS.md (or --section NAME): test ROUGE mean ± std per method, ours − MLE per seed, the
paired bootstrap, the validation curves, wall time per phase. ``--set KEY=VALUE`` (YAML value) changes
params for a bench profile; the section names every change.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

import flows  # noqa: F401  (project-local Prefect home, offline hub)
from bench.report import (
    TINY_SUMMARIZATION,
    add_smoke_flag,
    markdown_table,
    mean_sd,
    smoke_mode,
    write_section,
)
from components.statistics import paired_bootstrap
from flows.config import DEFAULT_PARAMS, load_params

METHODS = ("pgg", "pgg_exp", "mle", "seqpg", "warmstart", "lead")
# pgg again with the authors' code's softer weights w_t ∝ exp(r_t), in its own runs folder
VARIANT = {"policy.summarization.wmle_weighting": "exp_reward"}
SMOKE = {**TINY_SUMMARIZATION, "runtime.threads": 1}  # tiny models, 24 articles, 4 policy steps, one refit


def parse_sets(pairs: list[str]) -> dict:
    """["loop.summarization.policy_steps=300", ...] -> {dotted key: YAML value}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair}: expected KEY=VALUE, e.g. loop.summarization.policy_steps=300")
        out[key] = yaml.safe_load(value)
    return out


def run_seed(
    params: Path, seed: int, runs_root: Path, threads: int | None, sets: dict, variant: bool = True
) -> dict:
    from flows import summarization as s
    from flows.prepare import prepare

    seed_dir = runs_root / f"seed-{seed}"
    # the seed's own splits, prepared every time (seconds): a --set of data.* never meets a stale split
    overrides = {
        **sets,
        "runtime.seed": seed,
        "runtime.runs_dir": str(seed_dir),
        "data.prepared_dir": str(seed_dir / "data"),
    }
    if threads:
        overrides["runtime.threads"] = threads
    config = load_params(params, overrides)
    prepare(config)
    seconds = {}
    start = time.perf_counter()
    s.warmstart_flow(config)
    seconds["warm start"] = time.perf_counter() - start
    curves = {}
    for method in config.loop.methods:
        start = time.perf_counter()
        curves[method] = s.align_flow(config, method)
        seconds[method] = time.perf_counter() - start
    start = time.perf_counter()
    results = {method: s.evaluate_flow(config, method) for method in METHODS if method != "pgg_exp"}
    seconds["evaluation"] = time.perf_counter() - start
    result = {"seed": seed, "test": results, "seconds": seconds, "curves": curves}
    result["threads"] = threads or torch.get_num_threads()
    return add_variant(result, params, runs_root, threads, sets) if variant else result


def add_variant(result: dict, params: Path, runs_root: Path, threads: int | None, sets: dict) -> dict:
    """Run pgg with ``VARIANT`` from the seed's warm start (copied) and add it as ``pgg_exp``."""
    from flows import summarization as s
    from flows.prepare import prepare

    seed_dir = runs_root / f"seed-{result['seed']}"
    variant_dir = seed_dir / "pgg-exp_reward"
    for part in ("encoder_cache", "warmstart"):
        if not (variant_dir / "summarization" / part).exists():
            shutil.copytree(seed_dir / "summarization" / part, variant_dir / "summarization" / part)
    overrides = {**sets, "runtime.seed": result["seed"], "runtime.runs_dir": str(variant_dir), **VARIANT}
    overrides["data.prepared_dir"] = str(seed_dir / "data")  # the seed's splits, as in run_seed
    if threads:
        overrides["runtime.threads"] = threads
    config = load_params(params, overrides)
    prepare(config)
    start = time.perf_counter()
    result["curves"]["pgg_exp"] = s.align_flow(config, "pgg")
    result["seconds"]["pgg (exp_reward)"] = time.perf_counter() - start
    result["test"]["pgg_exp"] = s.evaluate_flow(config, "pgg")
    return result


def per_article(runs_root: Path, seeds: list[int], method: str) -> dict | None:
    """{(seed, article id): test ROUGE-L F1 x 100} from each seed's test predictions; None if a seed has none."""
    scores = {}
    for seed in seeds:
        path = runs_root / f"seed-{seed}" / "summarization" / "test_predictions" / f"{method}.jsonl"
        if not path.exists():
            return None
        for line in path.read_text().splitlines():
            row = json.loads(line)
            scores[(seed, row["id"])] = row["rougeL"]
    return scores


def paired_intervals(runs_root: Path, seeds: list[int]) -> str:
    """Paired bootstrap 95 % intervals of pgg − MLE and pgg − seqpg, test articles pooled over seeds."""
    ours = per_article(runs_root, seeds, "pgg")
    lines = []
    for baseline in ("mle", "seqpg"):
        theirs = per_article(runs_root, seeds, baseline)
        if ours is None or theirs is None:
            lines.append(f"pgg − {baseline}: no per-article test predictions (rerun the evaluation)")
            continue
        keys = sorted(ours.keys() & theirs.keys())
        interval = paired_bootstrap([ours[k] for k in keys], [theirs[k] for k in keys])
        verdict = "excludes 0" if interval.excludes_zero else "includes 0"
        lines.append(f"pgg − {baseline}: {interval}, {verdict}")
    return (
        "Paired bootstrap over test articles pooled over seeds (ROUGE-L F1 x 100 per article, "
        "10 000 resamples): " + "; ".join(lines)
    )


def validation_table(seeds: list[dict], methods: list[str], refit_every: int) -> str:
    """Rows: policy steps at each iteration's end; columns: each method's validation ROUGE-L, mean over seeds."""
    iterations = len(seeds[0]["curves"][methods[0]])
    rows = []
    for i in range(iterations):
        values = [statistics.mean(r["curves"][m][i]["val/rougeL"] for r in seeds) for m in methods]
        rows.append([(i + 1) * refit_every, *(f"{v:.2f}" for v in values)])
    return markdown_table(["policy steps", *methods], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--params", default=str(DEFAULT_PARAMS))
    parser.add_argument("--runs-root", default="runs/bench/summarization")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (runtime.threads)")
    parser.add_argument(
        "--add-variant",
        action="store_true",
        help="run only the pgg_exp variant for seeds whose other results are saved, and add it",
    )
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="a params change for this profile (repeatable), e.g. loop.summarization.policy_steps=300",
    )  # fmt: skip
    parser.add_argument("--no-variant", action="store_true", help="skip the pgg_exp comparison run")
    parser.add_argument("--section", default="summarization", help="the BENCHMARKS section to write")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the section from the seeds' saved results (seeds run in separate processes)",
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    sets = parse_sets(args.sets)
    if args.smoke:  # one seed of tiny models in a throwaway folder, no variant run
        args.runs_root = tempfile.mkdtemp(prefix="bench-summarization-")
        args.seeds, args.no_variant, sets = args.seeds[:1], True, {**SMOKE, **sets}
        smoke_mode(True, Path(args.runs_root))
    config = load_params(args.params, sets)  # a bad --set stops here, before any compute
    runs_root = Path(args.runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    seeds, loads = [], [os.getloadavg()[0]]
    for seed in args.seeds:
        result_file = runs_root / f"seed-{seed}" / "result.json"
        if args.report_only:
            seeds.append(json.loads(result_file.read_text()))
            continue
        if args.add_variant:
            saved = json.loads(result_file.read_text())
            seeds.append(add_variant(saved, Path(args.params), runs_root, args.threads, sets))
            result_file.write_text(json.dumps(seeds[-1], indent=2))
            continue
        seeds.append(run_seed(Path(args.params), seed, runs_root, args.threads, sets, not args.no_variant))
        loads.append(os.getloadavg()[0])
        seeds[-1]["load"] = loads[-1]
        result_file.write_text(json.dumps(seeds[-1], indent=2))
    if args.report_only:
        loads = [r["load"] for r in seeds if "load" in r] or [float("nan")]
        if args.threads:  # the section's "Measured ... torch threads" names the runs', not this process's
            torch.set_num_threads(args.threads)

    methods = [m for m in METHODS if all(m in r["test"] for r in seeds)]
    rows = []
    for method in methods:
        row = [method]
        for key in ("test_rouge1", "test_rouge2", "test_rougeL"):
            row.append(mean_sd([r["test"][method][key] for r in seeds], 2))
        rows.append(row)

    def rouge_l(method: str) -> list[float]:
        return [r["test"][method]["test_rougeL"] for r in seeds]

    def minus(a: str, b: str) -> list[float]:
        return [x - y for x, y in zip(rouge_l(a), rouge_l(b), strict=True)]

    diffs, diffs_pg = minus("pgg", "mle"), minus("pgg", "seqpg")
    phases = list(seeds[0]["seconds"])
    timing = [[phase, *(f"{r['seconds'][phase] / 60:.1f}" for r in seeds)] for phase in phases]
    variant_phase = "pgg (exp_reward)"  # a second pgg run for comparison, not part of the profile
    totals = [sum(v for k, v in r["seconds"].items() if k != variant_phase) / 60 for r in seeds]
    variant = ""
    if "pgg_exp" in methods:
        diffs_exp = minus("pgg_exp", "mle")
        variant = "; pgg_exp (w_t ∝ exp r_t) − MLE: " + ", ".join(f"{d:+.2f}" for d in diffs_exp)
        variant += f" (mean {statistics.mean(diffs_exp):+.2f})"
    guidance = [
        "/".join(
            f"{row['guidance/pairwise_accuracy']:.2f}"
            for row in r["curves"]["pgg"]
            if "guidance/pairwise_accuracy" in row
        )
        for r in seeds
    ]
    mean = statistics.mean
    checks = [
        (f"pgg − MLE ≥ +1.0 ROUGE-L: {mean(diffs):+.2f}", mean(diffs) >= 1.0),
        (f"pgg ≥ seqpg: {mean(diffs_pg):+.2f}", mean(diffs_pg) >= 0),
        (f"MLE ≥ lead-{{k}}: {mean(rouge_l('mle')):.2f} vs {mean(rouge_l('lead')):.2f}",
         mean(rouge_l("mle")) >= mean(rouge_l("lead"))),
    ]  # fmt: skip
    targets = "\n".join(
        f"- {text.format(k=config.eval.summarization.lead_k)}: **{'met' if ok else 'not met'}**"
        for text, ok in checks
    )
    schedule = config.loop.summarization
    profile = "quick default (`params.yaml`)" if not sets else (
        "bench profile: `params.yaml` with " + ", ".join(f"`{k}: {v}`" for k, v in sets.items())
    )  # fmt: skip
    body = (
        f"{profile}; BBC {config.data.summarization.target}s, test split "
        f"({seeds[0]['test']['pgg']['n_test']} articles), {config.policy.summarization.warmstart_steps} "
        f"warm-start steps, then {schedule.policy_steps} policy steps per method, guidance refits every "
        f"{schedule.refit_every} steps until step {schedule.refit_until}; seeds {args.seeds}. "
        "ROUGE F1 x 100, mean ± std over seeds.\n\n"
        + markdown_table(["method", "ROUGE-1", "ROUGE-2", "ROUGE-L"], rows)
        + "\n\nours − MLE, ROUGE-L per seed: "
        + ", ".join(f"{d:+.2f}" for d in diffs)
        + f" (mean {mean(diffs):+.2f}); ours − seqpg: "
        + ", ".join(f"{d:+.2f}" for d in diffs_pg)
        + variant
        + "\n\n"
        + paired_intervals(runs_root, args.seeds)
        + "\n\nGuidance held-out pairwise ordering accuracy at each refit, per seed: "
        + ", ".join(guidance)
        + " (0.5 = chance)"
        + "\n\n### Validation ROUGE-L against policy steps (mean over seeds; MLflow: `val/rougeL`)\n\n"
        + validation_table(
            seeds, [m for m in ("pgg", "pgg_exp", "mle", "seqpg") if m in methods], schedule.refit_every
        )  # fmt: skip
        + "\n\n### Targets (issue #16)\n\n"
        + targets
        + "\n\nWall time per phase (minutes):\n\n"
        + markdown_table(["phase", *(f"seed {r['seed']}" for r in seeds)], timing)
        + "\n\nPer seed (all phases but the pgg_exp comparison run): "
        + ", ".join(f"{t:.1f}" for t in totals)
        + " min; "
        + "torch threads per seed: "
        + ", ".join(str(r.get("threads", args.threads or torch.get_num_threads())) for r in seeds)
        + "; "
        f"load average {min(loads):.1f}-{max(loads):.1f} (2-core machine)."
    )
    title = "Summarization: ours vs MLE vs sequence-level PG"
    write_section(args.section, f"{title} ({'quick default' if not sets else args.section})", body)
    print(body)


if __name__ == "__main__":
    main()
