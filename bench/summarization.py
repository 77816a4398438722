"""Summarization benchmark: the quick default over several seeds, ours against its baselines.

    python -m bench.summarization --seeds 0 1 2

Every seed runs the whole quick default (warm start, pgg, mle, seqpg, test evaluation, lead-k) in
its own runs folder, so the methods of one seed share one warm start. Writes the "summarization"
section of BENCHMARKS.md: test ROUGE mean ± std per method, ours − MLE per seed, wall time per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import flows  # noqa: F401  (project-local Prefect home, offline hub)
from bench.report import markdown_table, write_section
from flows.config import DEFAULT_PARAMS, load_params

METHODS = ("pgg", "mle", "seqpg", "warmstart", "lead")


def run_seed(params: Path, seed: int, runs_root: Path, threads: int | None) -> dict:
    from flows import summarization as s
    from flows.prepare import prepare

    overrides = {"runtime.seed": seed, "runtime.runs_dir": str(runs_root / f"seed-{seed}")}
    if threads:
        overrides["runtime.threads"] = threads
    config = load_params(params, overrides)
    if not (s.split_file(config, "test")).exists():
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
    results = {method: s.evaluate_flow(config, method) for method in METHODS}
    seconds["evaluation"] = time.perf_counter() - start
    return {"seed": seed, "test": results, "seconds": seconds, "curves": curves}


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--params", default=str(DEFAULT_PARAMS))
    parser.add_argument("--runs-root", default="runs/bench/summarization")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (runtime.threads)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the section from the seeds' saved results (seeds run in separate processes)",
    )
    args = parser.parse_args()
    runs_root = Path(args.runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    seeds, loads = [], [os.getloadavg()[0]]
    for seed in args.seeds:
        result_file = runs_root / f"seed-{seed}" / "result.json"
        if args.report_only:
            seeds.append(json.loads(result_file.read_text()))
            continue
        seeds.append(run_seed(Path(args.params), seed, runs_root, args.threads))
        loads.append(os.getloadavg()[0])
        seeds[-1]["load"] = loads[-1]
        result_file.write_text(json.dumps(seeds[-1], indent=2))
    if args.report_only:
        loads = [r["load"] for r in seeds if "load" in r] or [float("nan")]

    rows = []
    for method in METHODS:
        row = [method]
        for key in ("test_rouge1", "test_rouge2", "test_rougeL"):
            row.append(mean_std([r["test"][method][key] for r in seeds]))
        rows.append(row)
    diffs = [r["test"]["pgg"]["test_rougeL"] - r["test"]["mle"]["test_rougeL"] for r in seeds]
    diffs_pg = [r["test"]["pgg"]["test_rougeL"] - r["test"]["seqpg"]["test_rougeL"] for r in seeds]
    phases = list(seeds[0]["seconds"])
    timing = [[phase, f"{statistics.mean(r['seconds'][phase] for r in seeds) / 60:.1f}"] for phase in phases]
    total = statistics.mean(sum(r["seconds"].values()) for r in seeds) / 60
    won = statistics.mean(diffs) >= 1.0 and statistics.mean(diffs_pg) >= 0
    body = (
        f"Quick default (`params.yaml`), BBC headlines, test split ({seeds[0]['test']['pgg']['n_test']} articles), "
        f"seeds {args.seeds}. ROUGE F1 x 100, mean ± std over seeds.\n\n"
        + markdown_table(["method", "ROUGE-1", "ROUGE-2", "ROUGE-L"], rows)
        + "\n\nours − MLE, ROUGE-L per seed: "
        + ", ".join(f"{d:+.2f}" for d in diffs)
        + f" (mean {statistics.mean(diffs):+.2f}); ours − seqpg: "
        + ", ".join(f"{d:+.2f}" for d in diffs_pg)
        + "\n\nTarget: ours ≥ MLE + 1.0 ROUGE-L and ≥ seqpg. "
        + ("**Met on this run.**" if won else "**Not met on this run.**")
        + "\n\nWall time per phase (minutes, mean over seeds):\n\n"
        + markdown_table(["phase", "minutes"], timing)
        + f"\n\nTotal per seed: {total:.1f} min, {args.threads or torch.get_num_threads()} torch thread(s); "
        f"load average {min(loads):.1f}-{max(loads):.1f} (2-core machine)."
    )
    write_section("summarization", "Summarization: ours vs MLE vs sequence-level PG (quick default)", body)
    print(body)


if __name__ == "__main__":
    main()
