"""Prompt-generation benchmark: the quick default over datasets x 16-shot data seeds, ours vs baselines.

    python -m bench.prompt [--datasets sst-2 agnews] [--seeds 13 21 42 87 100] [--agnews-test 2000]

Every (dataset, seed) runs the whole prompt pipeline of ``params.yaml`` (embeddings, pgg / seqpg /
random search with the same task-model budget, test evaluation of every method incl. no prompt and
the manual prompt) in its own runs folder. The AG News test split (7,600 rows, shuffled, classes
balanced in its first rows) is capped at ``--agnews-test`` rows to keep the run near an hour on 2
cores; SST-2 uses all 1,821 test rows. Also measures prompt-scoring throughput with the input
embedding cache against re-encoding the inputs for every batch, in the same run.

Writes the "prompt" section of BENCHMARKS.md and runs/bench/prompt/results.json.
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
from bench.report import markdown_table, mean_sd, write_section
from flows.config import DEFAULT_PARAMS, load_params

METHODS = ("pgg", "seqpg", "random", "manual", "none")
LABELS = {
    "pgg": "pgg (ours)",
    "seqpg": "seqpg (sequence-level REINFORCE)",
    "random": "random search",
    "manual": "manual prompt",
    "none": "no prompt",
}


def run_one(
    params: Path, dataset: str, seed: int, runs_root: Path, test_cap: int | None, threads: int | None
) -> dict:
    from flows.prepare import prepare
    from flows.prompt import prompt_pipeline, runs_dir, split_file

    overrides = {
        "data.prompt.dataset": dataset,
        "data.prompt.seed": seed,
        "runtime.runs_dir": str(runs_root / "runs"),
        "eval.prompt.max_test_examples": test_cap,
    }
    if threads:
        overrides["runtime.threads"] = threads
    config = load_params(params, overrides)
    if not split_file(config, "test").exists():
        prepare(config)
    start = time.perf_counter()
    results = prompt_pipeline(config)
    seconds = time.perf_counter() - start
    # how well the guidance orders fresh lists of the current policy, before each update uses them
    curve = json.loads((runs_dir(config) / "pgg" / "curve.json").read_text())
    online = [row["guidance/online_accuracy"] for row in curve if "guidance/online_accuracy" in row]
    return {
        "dataset": dataset,
        "seed": seed,
        "seconds": seconds,
        "test": results,
        "guidance_online_accuracy": sum(online) / len(online),
    }


def scoring_throughput(root: Path, prompts: int = 64, batch: int = 16) -> tuple[float, float]:
    """prompts/s of the prototype task model on SST-2 train (seed 13): cached inputs, then re-encoded."""
    import torch

    from components import data
    from components.prompt_policy import whole_word_token_ids
    from components.task_models import build_task_model

    task = build_task_model("minilm", "sst-2")
    texts = [e.text for e in data.load_fsc(root, "sst-2", 13, "train")]
    vocab = torch.tensor(whole_word_token_ids(task.tokenizer))
    picks = torch.randint(len(vocab), (prompts, 5), generator=torch.Generator().manual_seed(0))
    texts_of = task.tokenizer.batch_decode(vocab[picks].tolist())
    batches = [texts_of[i : i + batch] for i in range(0, prompts, batch)]
    task.class_probs(batches[0], texts)  # warm-up
    encoded = task.encode_inputs(texts)
    start = time.perf_counter()
    cached = torch.cat([task.class_probs(b, encoded) for b in batches])
    cached_rate = prompts / (time.perf_counter() - start)
    start = time.perf_counter()
    uncached = torch.cat([task.class_probs(b, texts) for b in batches])
    uncached_rate = prompts / (time.perf_counter() - start)
    assert torch.allclose(cached, uncached, atol=1e-5), "cached and uncached scores differ"
    return cached_rate, uncached_rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["sst-2", "agnews"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 21, 42, 87, 100])
    parser.add_argument("--agnews-test", type=int, default=2000, help="cap on AG News test rows (0: all)")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS))
    parser.add_argument("--runs-root", default="runs/bench/prompt")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (runtime.threads)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the section from runs/bench/prompt/results.json (runs that finished earlier)",
    )
    args = parser.parse_args()
    runs_root = Path(args.runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    config = load_params(Path(args.params))
    loads = [os.getloadavg()[0]]
    cached_rate, uncached_rate = scoring_throughput(config.data.root)

    results = []
    if args.report_only:  # the runs that finished (of --datasets x --seeds) in an earlier invocation
        saved = json.loads((runs_root / "results.json").read_text())
        results = [r for r in saved if r["dataset"] in args.datasets and r["seed"] in args.seeds]
        loads += [r["load"] for r in results if "load" in r]
    for dataset in args.datasets if not args.report_only else []:
        cap = (args.agnews_test or None) if dataset == "agnews" else None
        for seed in args.seeds:
            results.append(run_one(Path(args.params), dataset, seed, runs_root, cap, args.threads))
            loads.append(os.getloadavg()[0])
            results[-1]["load"] = loads[-1]
            (runs_root / "results.json").write_text(json.dumps(results, indent=2))
    args.datasets = [d for d in args.datasets if any(r["dataset"] == d for r in results)]

    sections = []
    for dataset in args.datasets:
        runs = [r for r in results if r["dataset"] == dataset]
        rows = []
        for method in METHODS:
            tests = [r["test"][method]["test_accuracy"] for r in runs]
            top = [r["test"][method].get("top_test_accuracy") for r in runs]
            rows.append(
                [LABELS[method], mean_sd(tests), mean_sd(top) if None not in top else "–"]
                + [f"{t:.1f}" for t in tests]
            )
        best_baseline = max(
            METHODS[1:], key=lambda m: statistics.mean(r["test"][m]["test_accuracy"] for r in runs)
        )
        gaps = [r["test"]["pgg"]["test_accuracy"] - r["test"][best_baseline]["test_accuracy"] for r in runs]
        wins = statistics.mean(gaps) >= 2.0
        n_test = runs[0]["test"]["pgg"]["n_test"]
        minutes = statistics.mean(r["seconds"] for r in runs) / 60
        sections.append(
            f"### {dataset} ({n_test} test rows; seeds {', '.join(str(r['seed']) for r in runs)})\n\n"
            + markdown_table(
                ["method", "test acc % (selected on dev)", "mean test acc % of top 3 on dev"]
                + [f"seed {r['seed']}" for r in runs],
                rows,
            )
            + f"\n\nBest baseline by mean: {LABELS[best_baseline]}. ours − it per seed: "
            + ", ".join(f"{g:+.1f}" for g in gaps)
            + f" (mean {statistics.mean(gaps):+.1f}). "
            + ("**Target (≥ +2 points) met.**" if wins else "**Target (≥ +2 points) not met.**")
            + f" Guidance ordering accuracy on fresh lists of the current policy (pairs of a list the "
            f"token-reward aggregate orders like the gap reward, mean over updates): "
            f"{statistics.mean(r['guidance_online_accuracy'] for r in runs):.2f}; 0.5 is chance."
            + f" Wall time per seed, whole pipeline: {minutes:.1f} min."
        )
    evaluations = results[0]["test"]["pgg"]["evaluations"]
    body = (
        "Quick default (`params.yaml`) per dataset and 16-shot data seed: MiniLM prototype task model, "
        f"MiniLM causal policy; each search method scores {evaluations:.0f} prompts on the training split "
        "(same task-model budget). Accuracies are percentages, mean ± std over data seeds.\n\n"
        + "\n\n".join(sections)
        + "\n\nPrompt scoring throughput (SST-2 train, 64 random 5-word prompts in batches of 16), same run: "
        f"**{cached_rate:.0f} prompts/s with the input-embedding cache vs {uncached_rate:.0f} without, "
        f"{cached_rate / uncached_rate:.1f}x**.\n\n"
        f"{args.threads or torch.get_num_threads()} torch thread(s); load average "
        f"{min(loads):.1f}-{max(loads):.1f} (2-core machine)."
    )
    write_section("prompt", "Prompt generation: ours vs baselines over data seeds", body)
    print(body)


if __name__ == "__main__":
    main()
