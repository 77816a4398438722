"""Does pgg's prompt policy collapse less with a fresher guidance or a larger entropy bonus? (issue #14)

    python -m bench.prompt_collapse [--dataset sst-2] [--seeds 13 21 42 87 100] [--threads 1]

On SST-2 data seeds 42 and 87 the quick default's pgg policy ends drawing one prompt shape ("X famous
famous famous famous") whose best member scores at the no-prompt level on test (BENCHMARKS
prompt_policy_ranking). Two changes could prevent it, each run as a pgg search with the same 2,640
task-model queries and the same evaluation as the default:

- ``refit_until_100``: the guidance is refit before the last block too (the default stops at step 75,
  so the last 25 steps train on a guidance fit before them);
- ``entropy_0.25``, ``entropy_0.5``: two and four times the max-entropy bonus (policy.prompt.entropy_coef
  0.125 by default).

The bonus is every search method's, so seqpg runs at 0.25 as well (``seqpg_entropy_0.25``): a default
that changed it would change seqpg too.

The default's numbers are read from the sample-efficiency bench's results (same params and code).
A variant is chosen by the mean dev accuracy of its policy pick, never by test. Collapse is measured on
the trained policy's ranked candidates (the top 16 distinct prompts of its greedy prompt and 64 samples,
as evaluation keeps them): how many there are, and the share in which one word fills 3 or more of the
prompt's positions. Writes the ``prompt_collapse``
section of BENCHMARKS.md; results accumulate in ROOT/results-collapse-{dataset}.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path

import flows  # noqa: F401  (project-local Prefect home, offline hub)
from bench.prompt_sample_efficiency import ROOT
from bench.report import markdown_table, mean_sd, write_section
from flows.config import DEFAULT_PARAMS, load_params

# name -> (method, params change)
VARIANTS = {
    "refit_until_100": ("pgg", {"loop.prompt.refit_until": 100}),
    "entropy_0.25": ("pgg", {"policy.prompt.entropy_coef": 0.25}),
    "entropy_0.5": ("pgg", {"policy.prompt.entropy_coef": 0.5}),
    "seqpg_entropy_0.25": ("seqpg", {"policy.prompt.entropy_coef": 0.25}),  # the bonus is every method's
}


def collapse(method_dir: Path, iterations: int) -> dict:
    """Distinct candidates and the share of candidates dominated by one repeated word."""
    state = json.loads((method_dir / f"iter-{iterations}" / "state.json").read_text())
    prompts = state["policy_candidates"]["prompts"]
    repeated = [max(Counter(p.split()).values(), default=0) >= 3 for p in prompts]
    return {
        "distinct": len(set(prompts)),
        "candidates": len(prompts),
        "repeat_share": statistics.mean(repeated),
    }


def run_variant_seed(
    params: Path, dataset: str, seed: int, method: str, overrides: dict, runs_root: Path, threads: int
) -> dict:
    from flows.prepare import prepare
    from flows.prompt import evaluate_flow, metrics_dir, runs_dir, search_flow, split_file

    config = load_params(
        params,
        {
            "data.prompt.dataset": dataset,
            "data.prompt.seed": seed,
            "runtime.runs_dir": str(runs_root),
            "runtime.threads": threads,
            **overrides,
        },
    )
    if not split_file(config, "test").exists():
        prepare(config)
    start = time.perf_counter()
    search_flow(config, method)
    evaluate_flow(config, method)
    return {
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "load": os.getloadavg()[0],
        **json.loads((metrics_dir(config) / f"{method}.json").read_text()),
        **collapse(runs_dir(config) / method, config.loop.prompt.iterations),
    }


def default_rows(params: Path, dataset: str, seeds: list[int]) -> list[dict]:
    """The quick default's pgg and seqpg at the full budget, from the sample-efficiency bench."""
    from flows.prompt import runs_dir

    saved = {r["seed"]: r for r in json.loads((ROOT / f"results-{dataset}.json").read_text())}
    rows = []
    for seed in seeds:
        config = load_params(
            params,
            {
                "data.prompt.dataset": dataset,
                "data.prompt.seed": seed,
                "runtime.runs_dir": str(ROOT / "runs"),
            },
        )
        for method in ("pgg", "seqpg"):
            row = {**saved[seed][method][-1], "seed": seed, "method": method}
            row.update(collapse(runs_dir(config) / method, config.loop.prompt.iterations))
            rows.append(row)
    return rows


def report(dataset: str, seeds: list[int], results: dict[str, list[dict]], baseline: list[dict]) -> None:
    columns = {"pgg, default": [r for r in baseline if r["method"] == "pgg"]}
    ours = [n for n in results if VARIANTS[n][0] == "pgg"]
    columns.update({f"pgg, {n}": sorted(results[n], key=lambda r: r["seed"]) for n in ours})
    columns["seqpg, default"] = [r for r in baseline if r["method"] == "seqpg"]
    columns.update(
        {f"seqpg, {n.removeprefix('seqpg_')}": sorted(rows, key=lambda r: r["seed"])
         for n, rows in results.items() if n not in ours}
    )  # fmt: skip

    def per_seed(key: str, scale: float = 1.0, digits: int = 1):
        return [
            [
                label,
                mean_sd([scale * r[key] for r in rows], digits),
                *(f"{scale * r[key]:.{digits}f}" for r in rows),
            ]
            for label, rows in columns.items()
        ]

    heads = ["run", "mean ± sd", *(f"seed {s}" for s in seeds)]
    dev = markdown_table(heads, per_seed("policy_dev_accuracy"))
    test = markdown_table(heads, per_seed("policy_test_accuracy"))
    repeat = markdown_table(heads, per_seed("repeat_share", 100.0, 0))
    pgg_default = statistics.mean(r["policy_dev_accuracy"] for r in columns["pgg, default"])
    best = max(
        ours,
        key=lambda n: statistics.mean(r["policy_dev_accuracy"] for r in results[n]),
    )
    best_dev = statistics.mean(r["policy_dev_accuracy"] for r in results[best])
    choice = (
        f"`{best}` (dev {best_dev:.1f} vs the default's {pgg_default:.1f})"
        if best_dev > pgg_default
        else f"the default (dev {pgg_default:.1f}; best variant `{best}` {best_dev:.1f})"
    )
    seconds = [r["seconds"] for rows in results.values() for r in rows]
    loads = [r["load"] for rows in results.values() for r in rows]
    body = f"""{dataset}, quick default (2,640 task-model queries per search), data seeds
{", ".join(map(str, seeds))}. Each variant reruns one method's search and evaluation with one params
change: {"; ".join(f"`{n}` ({m}): " + ", ".join(f"{k}={v}" for k, v in o.items()) for n, (m, o) in VARIANTS.items())}.
The default rows are the sample-efficiency bench's runs. Policy pick: the trained policy's greedy prompt
and 64 samples ranked by the learned reward (seqpg: by 65 gap-reward queries), best on the 32-row dev
split. Chosen among pgg's variants by mean dev accuracy: {choice}.

### Dev accuracy of the policy pick (%), the selection criterion

{dev}

### Test accuracy of the policy pick (%), reported once

{test}

### Collapse: share of the policy's candidates in which one word fills ≥ 3 of 5 positions (%)

{repeat}

Search and evaluation per seed and variant {statistics.mean(seconds):.0f} s (mean, 1 thread, beside another
1-thread bench); load average {min(loads):.1f}-{max(loads):.1f} (2-core machine)."""
    write_section(
        "prompt_collapse", "Prompt policy collapse: fresher guidance or more entropy? (issue #14)", body
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="sst-2")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 21, 42, 87, 100])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    path = ROOT / f"results-collapse-{args.dataset}.json"
    results: dict[str, list[dict]] = json.loads(path.read_text()) if path.exists() else {}
    for name in args.variants:
        rows = results.setdefault(name, [])
        for seed in args.seeds:
            if seed not in {r["seed"] for r in rows}:
                runs_root = ROOT / "collapse" / name
                method, overrides = VARIANTS[name]
                rows.append(
                    run_variant_seed(
                        args.params, args.dataset, seed, method, overrides, runs_root, args.threads
                    )
                )
                path.write_text(json.dumps(results, indent=2))
    done = {n: rows for n, rows in results.items() if {r["seed"] for r in rows} >= set(args.seeds)}
    done = {n: [r for r in rows if r["seed"] in args.seeds] for n, rows in done.items()}
    report(args.dataset, args.seeds, done, default_rows(args.params, args.dataset, args.seeds))


if __name__ == "__main__":
    main()
