"""Prompt search at the authors' protocol (params-authors-prompt.yaml): pgg, seqpg as RLPrompt and random
search at equal policy steps, each step scoring 16 prompts with the task model.

    python -m bench.prompt_authors_protocol [--steps 12000] [--seeds 13 21 42] [--task-model prefix_lm]
    python -m bench.prompt_authors_protocol --steps 144 --task-model prefix_lm --final-only \\
        --warmup-lists 32 --fresh-prompts 160 --lists-per-batch 16 --guidance-epochs 3 \\
        --guidance-patience 2     # the CPU run of BENCHMARKS (~35 min a seed, idle); with --steps 48 and
                                  # no --task-model and --final-only: its prototype line, with the curve
    python -m bench.prompt_authors_protocol --smoke        # tiny models, seconds

pgg (``pgg_update: learned``) updates its policy on 64 prompts a step scored by the learned reward only;
the step's 16 scored prompts log, select and feed the guidance, which is refit before training and every
N/12 steps until N/2, each later fit on fresh prompts of the current policy. seqpg updates on the 16 real
scores (RLPrompt); random search scores 16 uniform prompts a step. The final prompt is reported three ways:
best scored (the search's top 16 by training reward, best on dev), policy (the trained policy's prompts
ranked, best on dev: pgg's way) and the authors' (16 policy samples, the best training gap reward).
Queries are counted per use (flows.prompt: training, guidance, logging, selection).

Runs the pipeline's own flows (bench.prompt_sample_efficiency.run_seed); results accumulate in
ROOT/results-{dataset}-{task model}-N{steps}.json, a seed there is not rerun, and an interrupted search
resumes from its last complete block. Writes the ``prompt_authors_protocol`` section of BENCHMARKS.md (this
run's tables, then a line for each other results file in ROOT) and docs/authors-protocol.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from matplotlib.figure import Figure

import flows  # noqa: F401  (project-local Prefect home, offline hub)
from bench.prompt_sample_efficiency import SMOKE, run_seed, seed_config
from bench.report import add_smoke_flag, markdown_table, mean_sd, smoke_mode, write_section
from flows.config import PROJECT_ROOT

ROOT = Path("runs/bench/prompt_authors_protocol")
PROFILE = PROJECT_ROOT / "params-authors-prompt.yaml"
SEARCHES = ("pgg", "seqpg", "random")
USES = ("training", "guidance", "logging", "selection")
# (method, metric, label): the selections each table and figure line shows
SELECTIONS = (
    ("pgg", "authors_test_accuracy", "pgg, the authors' pick"),
    ("pgg", "policy_test_accuracy", "pgg, policy selection (pgg's)"),
    ("pgg", "test_accuracy", "pgg, best scored"),
    ("seqpg", "authors_test_accuracy", "seqpg (RLPrompt), the authors' pick"),
    ("seqpg", "policy_test_accuracy", "seqpg, policy selection"),
    ("seqpg", "test_accuracy", "seqpg, best scored"),
    ("random", "test_accuracy", "random search, best scored"),
)
# tiny search: 4 steps of 4 prompts (not a multiple of K = 3: resampled lists), refits before steps 1 and 3
SMOKE_PROTOCOL = {
    "sampling.prompt.prompts_per_step": 4, "guidance.prompt.resampled_lists": 3,
    "guidance.prompt.fresh_prompts": 8, "guidance.prompt.epochs": 2, "guidance.prompt.patience": 1,
    "policy.prompt.guidance_samples": 4, "policy.prompt.pgg_update": "learned", "eval.prompt.log_every": 1,
    "sampling.prompt.warmup_lists": 4,
}  # fmt: skip


def protocol(steps: int, args: argparse.Namespace) -> dict:
    """params changes of an N-step run: the authors' schedule (a fit before training, then every N/12 steps
    up to step N/2)."""
    changes = {
        "models.prompt.task_model": args.task_model,
        "loop.prompt.policy_steps": steps,
        "loop.prompt.refit_every": max(steps // 12, 1),
        "loop.prompt.refit_until": steps // 2 + 1,  # their last refit is at step N/2: 7 fits in all
    }
    if args.final_only:  # no test accuracy after every block: the prefix LM's test scoring is slow
        changes["eval.prompt.query_curve"] = False
    for key, value in (
        ("guidance.prompt.fresh_prompts", args.fresh_prompts),
        ("guidance.prompt.resampled_lists", args.lists_per_batch),
        ("sampling.prompt.warmup_lists", args.warmup_lists),
        ("guidance.prompt.epochs", args.guidance_epochs),
        ("guidance.prompt.patience", args.guidance_patience),
    ):
        if value is not None:
            changes[key] = value
    return changes


def run_protocol_seed(config) -> dict:
    """One data seed: every method's query curve (run_seed) plus its final metrics and pgg's guidance
    ordering of each step's scored prompts."""
    from flows.prompt import metrics_dir, runs_dir

    result = run_seed(config)
    result["metrics"] = {
        method: json.loads((metrics_dir(config) / f"{method}.json").read_text())
        for method in (*SEARCHES, "manual", "none")
    }
    curve = json.loads((runs_dir(config) / "pgg" / "curve.json").read_text())
    result["pgg_online"] = [
        {"step": row["step"], "accuracy": row["guidance/online_accuracy"]}
        for row in curve
        if row.get("guidance/online_accuracy") is not None
    ]
    result["refit_every"] = config.loop.prompt.refit_every
    return result


def at_budget(curve: list[dict], queries: int, key: str) -> float | None:
    """The accuracy of the last block end within ``queries`` (None: the first block costs more)."""
    within = [row[key] for row in curve if row["queries"] <= queries and key in row]
    return within[-1] if within else None


def final(results: list[dict], method: str, key: str) -> list[float]:
    """Each seed's final test accuracy of one method's selection."""
    return [r["metrics"][method][key] for r in results]


def pgg_wins(results: list[dict], key: str) -> int:
    """Seeds on which pgg's selection ``key`` beats seqpg's."""
    return sum(a > b for a, b in zip(final(results, "pgg", key), final(results, "seqpg", key), strict=True))


def final_only(results: list[dict]) -> bool:
    """A --final-only run: each search's curve holds its final row alone."""
    return all(len(r[method]) == 1 for r in results for method in SEARCHES)


def final_figure(results: list[dict], by_steps, by_queries) -> None:
    """A run without the per-block curve (--final-only): each selection's seeds at N (left) and against
    the queries each search spent (right), mean ± sd."""
    for i, (method, key, label) in enumerate(SELECTIONS):
        values = final(results, method, key)
        queries = [sum(r["metrics"][method].get(f"queries_{u}", 0) for u in USES) for r in results]
        line = by_steps.errorbar(
            [i],
            [statistics.mean(values)],
            yerr=[statistics.stdev(values) if len(values) > 1 else 0],
            fmt="s",
            capsize=4,
            label=label,
        )
        color = line[0].get_color()
        by_steps.plot([i] * len(values), values, ".", color=color, alpha=0.6)
        by_queries.plot(queries, values, "o" if "authors" not in key else "x", color=color, label=label)
    by_steps.set_xticks(range(len(SELECTIONS)), [label for *_, label in SELECTIONS], rotation=35, ha="right",
                        fontsize=7)  # fmt: skip


def figure(results: list[dict], steps: int, task_model: str) -> Figure:
    final_prompts_only = final_only(results)
    fig = Figure(figsize=(10, 4.5 if final_prompts_only else 4), layout="constrained")
    by_steps, by_queries = fig.subplots(1, 2, sharey=True)
    if final_prompts_only:
        final_figure(results, by_steps, by_queries)
    for method, key, label in () if final_prompts_only else SELECTIONS:
        if key == "test_accuracy" and method != "random":
            continue  # best scored: in the tables; the figure shows what each policy learned
        rows = [[row for row in r[method] if key in row] for r in results]
        means = [
            statistics.mean(points) for points in zip(*[[row[key] for row in r] for r in rows], strict=True)
        ]
        x_steps = [min((i + 1) * results[0]["refit_every"], steps) for i in range(len(means))]
        x_queries = [
            statistics.mean(q) for q in zip(*[[row["queries"] for row in r] for r in rows], strict=True)
        ]
        style = ":" if "authors" in key else "-"
        by_steps.plot(x_steps, means, style, marker="o", label=label)
        by_queries.plot(x_queries, means, style, marker="o", label=label)
    manual = statistics.mean(r["metrics"]["manual"]["test_accuracy"] for r in results)
    x_label = f"selection, N = {steps} policy steps" if final_prompts_only else "policy steps"
    for ax, xlabel in ((by_steps, x_label), (by_queries, "task-model queries (search)")):
        ax.axhline(manual, color="grey", linestyle="--", label=f"manual prompt ({manual:.1f})")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    by_steps.set_ylabel("test accuracy %" if final_prompts_only else "test accuracy % (mean over seeds)")
    by_queries.legend(fontsize=7)
    seeds = ", ".join(str(r["seed"]) for r in results)
    fig.suptitle(
        f"The authors' protocol, {task_model} task model, N = {steps} policy steps, seeds {seeds}", fontsize=9
    )
    return fig


def other_runs(runs: dict[str, list[dict]]) -> str:
    """One line per other run of the protocol (another task model or N): the final prompts' means."""
    rows = []
    for label, results in runs.items():
        wins = pgg_wins(results, "authors_test_accuracy")
        rows.append([
            label, ", ".join(str(r["seed"]) for r in results),
            *(mean_sd(final(results, m, k)) for m, k in (("pgg", "authors_test_accuracy"), ("pgg", "policy_test_accuracy"),
                                                ("seqpg", "authors_test_accuracy"), ("seqpg", "policy_test_accuracy"),
                                                ("random", "test_accuracy"))),
            f"{wins} of {len(results)}",
        ])  # fmt: skip
    headers = ["run", "seeds", "pgg, authors' pick", "pgg, policy", "seqpg, authors' pick", "seqpg, policy",
               "random", "pgg ahead (authors' pick)"]  # fmt: skip
    return markdown_table(headers, rows)


def report(
    results: list[dict], steps: int, settings: str, config, figures: Path, others: dict[str, list[dict]]
) -> None:
    results = sorted(results, key=lambda r: r["seed"])
    seeds = [r["seed"] for r in results]
    rows = []
    for method, key, label in (
        *SELECTIONS,
        ("manual", "test_accuracy", "manual"),
        ("none", "test_accuracy", "no prompt"),
    ):
        values = final(results, method, key)
        queries = [sum(r["metrics"][method].get(f"queries_{u}", 0) for u in USES) for r in results]
        rows.append([label, mean_sd(values), *(f"{v:.1f}" for v in values), int(max(queries))])
    steps_table = markdown_table(
        ["method, selection", "test acc % (mean ± sd)", *(f"seed {s}" for s in seeds), "queries (all uses)"],
        rows,
    )
    uses_rows = [
        [m, *(round(statistics.mean(r["metrics"][m][f"queries_{u}"] for r in results)) for u in USES)]
        for m in SEARCHES
    ]
    uses_table = markdown_table(["method", *USES], uses_rows)

    budgets = [row["queries"] for row in results[0]["seqpg"] if "policy_test_accuracy" in row]
    budgets = sorted({*budgets[:: max(1, len(budgets) // 4)], budgets[-1]})  # about 5 columns
    if final_only(results):  # each search's final budget
        budgets = sorted({max(r[m][-1]["queries"] for r in results) for m in SEARCHES})
    query_rows = []
    for method, key, label in SELECTIONS:
        if key == "test_accuracy" and method != "random":
            continue
        cells = []
        for budget in budgets:
            values = [at_budget(r[method], budget, key) for r in results]
            cells.append(
                mean_sd([v for v in values if v is not None]) if all(v is not None for v in values) else "–"
            )
        query_rows.append([label, *cells])
    queries_table = markdown_table(["method, selection", *(f"≤ {b} queries" for b in budgets)], query_rows)

    checks = []
    for key, label in (
        ("authors_test_accuracy", "the authors' pick"),
        ("policy_test_accuracy", "policy selection"),
    ):
        pgg, seqpg, wins = final(results, "pgg", key), final(results, "seqpg", key), pgg_wins(results, key)
        checks.append((f"equal policy steps, {label}: pgg {statistics.mean(pgg):.1f} vs seqpg {statistics.mean(seqpg):.1f}, "
                       f"ahead on {wins} of {len(seeds)} seeds",
                       statistics.mean(pgg) >= statistics.mean(seqpg) and wins > len(seeds) / 2))  # fmt: skip
    online = [row["accuracy"] for r in results for row in r["pgg_online"]]
    best_online = max(
        statistics.mean(row["accuracy"] for row in rows)
        for rows in zip(*[r["pgg_online"] for r in results], strict=False)
    )
    checks.append((f"learned reward orders a step's fresh scored prompts at ≥ 0.75 pairwise: best log point "
                   f"{best_online:.3f} (mean over seeds), over the run {statistics.mean(online):.3f}", best_online >= 0.75))  # fmt: skip
    target_lines = "\n".join(f"- {text}: **{'met' if ok else 'not met'}**" for text, ok in checks)
    loads = [x for r in results for x in r["load"]]
    timing = ", ".join(f"{m} {statistics.mean(r['seconds'][m] for r in results):.0f}" for m in SEARCHES)
    image = figures / "authors-protocol.png"
    task_model = config.models.prompt.task_model
    figure(results, steps, task_model).savefig(image, dpi=120)
    other_lines = (
        f"\n\n### Other runs of the protocol (the other results files of this folder; accuracies in %, mean ± sd)\n\n{other_runs(others)}"
        if others
        else ""
    )
    picks, samples = config.sampling.prompt.step_prompts, config.eval.prompt.policy_samples
    body = f"""{settings}. Data seeds {", ".join(map(str, seeds))}; accuracies in %, {config.data.prompt.dataset}
test ({results[0]["metrics"]["manual"]["n_test"]} rows). Selections: the authors' pick ({picks} samples of the
trained policy, best training gap reward, no dev pick), policy selection (greedy + {samples} samples
ranked by the learned reward for pgg or by gap-reward queries for seqpg, best on dev) and best scored
(the search's top {config.eval.prompt.candidates} by training reward, best on dev). Queries: task-model
scorings of a prompt on the training split.

![authors' protocol]({image.as_posix()})

### At equal policy steps (N = {steps})

{steps_table}

### Queries by use (mean per search)

{uses_table}

A query counts once, under its first use: training (its score weighted an update), guidance (a fit's
data), logging (logged and searched for the best-scored prompt only), selection (the final pick;
random search's scores).

### At equal real queries (search queries; each cell: the last block end within the budget)

{queries_table}

### Targets (issue #34)

{target_lines}

Wall time per seed (s, mean): {timing}; load average during the runs {min(loads):.1f}-{max(loads):.1f}.{other_lines}"""
    write_section("prompt_authors_protocol", "Prompt search at the authors' protocol (issue #34)", body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12000, help="policy steps N (the authors': 12,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 21, 42])
    parser.add_argument("--dataset", default="sst-2")
    parser.add_argument("--task-model", default="prototype", choices=("prototype", "prefix_lm"))
    parser.add_argument("--fresh-prompts", type=int, default=None, help="fresh prompts per later fit")
    parser.add_argument("--lists-per-batch", type=int, default=None, help="lists drawn per scored batch")
    parser.add_argument("--warmup-lists", type=int, default=None, help="lists of 5 before the first fit")
    parser.add_argument("--guidance-epochs", type=int, default=None)
    parser.add_argument("--guidance-patience", type=int, default=None)
    parser.add_argument(
        "--final-only",
        action="store_true",
        help="test the final prompts only, no per-block query curve (on the CPU each block's selections "
        "cost the prefix LM ~4 min of test scoring)",
    )
    parser.add_argument("--params", type=Path, default=PROFILE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--no-report", action="store_true", help="run the seeds, write no section")
    parser.add_argument(
        "--merge", type=Path, nargs="*", default=[], help="results files of other roots (one per process)"
    )
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    changes, figures = protocol(args.steps, args), Path("docs")
    if args.smoke:  # one seed of tiny models in a throwaway folder
        args.root = Path(tempfile.mkdtemp(prefix="bench-authors-")) if args.root == ROOT else args.root
        args.seeds, args.steps, figures = args.seeds[:1], 4, args.root
        changes = {
            **SMOKE,
            **SMOKE_PROTOCOL,
            **protocol(4, args),
            "data.prepared_dir": str(args.root / "data"),
        }
        changes["models.prompt.task_model"] = "prototype"
        smoke_mode(True, args.root)
    args.root.mkdir(parents=True, exist_ok=True)
    path = args.root / f"results-{args.dataset}-{args.task_model}-N{args.steps}.json"
    results = json.loads(path.read_text()) if path.exists() else []
    for seed in args.seeds:
        if seed not in {r["seed"] for r in results}:
            config = seed_config(args.params, args.dataset, seed, args.root / "runs", args.threads, changes)
            results.append(run_protocol_seed(config))
            path.write_text(json.dumps(results, indent=2))
    for other in args.merge:  # seeds run by other processes (bench/prompt_authors_protocol_device.sh)
        results += [r for r in json.loads(other.read_text()) if r["seed"] not in {x["seed"] for x in results}]
    if args.no_report:
        return
    config = seed_config(args.params, args.dataset, args.seeds[0], args.root / "runs", args.threads, changes)
    sampling, guidance = config.sampling.prompt, config.guidance.prompt
    settings = (
        f"{args.task_model} task model, N = {args.steps} policy steps of {sampling.step_prompts} scored prompts "
        f"(pgg: updates on {config.policy.prompt.guidance_samples} learned-reward samples), warm-up "
        f"{sampling.warmup_lists * sampling.k} prompts, refits every {config.loop.prompt.refit_every} steps "
        f"until {config.loop.prompt.refit_until}, {guidance.fresh_prompts} fresh prompts per later fit "
        f"resampled into {guidance.resampled_lists} lists per batch, up to {guidance.epochs} epochs "
        f"(patience {guidance.patience}); the authors' N is 12,000 with about 1,600-160,000 fresh prompts per fit"
    )
    others = {  # the root's other runs (task model or N), a line each under this run's tables
        f"{other.stem.split('-')[-2]}, N = {other.stem.split('-N')[-1]}": json.loads(other.read_text())
        for other in sorted(args.root.glob(f"results-{args.dataset}-*-N*.json"))
        if other != path
    }
    report(results, args.steps, settings, config, figures, others)


if __name__ == "__main__":
    main()
