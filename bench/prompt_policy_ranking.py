"""Policy selection for pgg (issue #14): rank the trained policy's prompts by the learned reward, or by
task-model queries as seqpg does?

    python -m bench.prompt_policy_ranking [--datasets sst-2 agnews] [--seeds 13 21 42 87 100]

Reads the finished searches of ``bench.prompt_sample_efficiency`` (its runs folder): for each data seed
it loads pgg's final policy and last guidance, draws exactly the candidates evaluation draws (greedy
prompt and eval.prompt.policy_samples samples, the same generator), and ranks them two ways:

- *guidance* (today's pgg policy selection): by the learned reward, no query;
- *queries*: by the gap reward on the training split, one query per distinct candidate (seqpg's way).

Each ranking keeps its top eval.prompt.candidates, picks the best on dev, and reports test accuracy.
Also reported: how well the learned reward orders these candidates (pairwise agreement with the gap
reward), and how many distinct prompts the policy still draws. No search is rerun; seqpg's numbers
are the sample-efficiency bench's. Writes the ``prompt_policy_ranking`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import flows  # noqa: F401  (project-local Prefect home, offline hub)
from bench.prompt_sample_efficiency import ROOT
from bench.report import markdown_table, mean_sd, write_section
from flows.config import DEFAULT_PARAMS, load_params


def rank_seed(params: Path, dataset: str, seed: int, runs_root: Path, threads: int) -> dict:
    import torch

    from components.gap_reward import select_prompt
    from components.ranking_losses import pairwise_accuracy
    from flows.common import apply_runtime
    from flows.prompt import (
        _load_encoded,
        _rank_policy_prompts,
        _trainer,
        embedding_file,
        prompt_accuracies,
        runs_dir,
    )

    overrides = {"data.prompt.dataset": dataset, "data.prompt.seed": seed, "runtime.runs_dir": str(runs_root)}
    config = load_params(params, {**overrides, "runtime.threads": threads})
    device = apply_runtime(config.runtime)
    method_dir = runs_dir(config) / "pgg"
    last = config.loop.prompt.iterations
    guidance = next(  # the last refit's: the one the final block trained on
        g for i in range(last, 0, -1) if (g := method_dir / f"iter-{i}" / "guidance").is_dir()
    )
    trainer = _trainer(config, "pgg", last, method_dir / f"iter-{last}", guidance, device, resume=False)
    train, labels = _load_encoded(embedding_file(config, "train"), device)
    started = time.perf_counter()
    # today's ranking, exactly as evaluation ran it (same generator): the check that this is its policy
    by_guidance, guidance_scores, _ = _rank_policy_prompts(trainer, "pgg", config, train, labels)
    stored = json.loads((method_dir / f"iter-{last}" / "state.json").read_text())["policy_candidates"]
    top = config.eval.prompt.candidates
    if by_guidance[:top] != stored["prompts"]:
        raise SystemExit(
            f"{dataset} seed {seed}: the reloaded policy does not reproduce its stored candidates"
        )
    generator = torch.Generator().manual_seed(config.runtime.seed * 1000 + 999)
    true_rewards = trainer.score(by_guidance, train, labels, generator)[0].tolist()
    by_queries = [p for p, _ in sorted(zip(by_guidance, true_rewards, strict=True), key=lambda x: -x[1])]
    scores = prompt_accuracies(by_guidance[:top] + by_queries[:top], ("dev", "test"), config)
    dev, test = scores["dev"], scores["test"]
    # what each policy can offer at all: test accuracy of every distinct candidate (a diagnostic, no selection)
    seqpg = _trainer(
        config, "seqpg", last, runs_dir(config) / "seqpg" / f"iter-{last}", None, device, resume=False
    )
    seqpg_prompts = _rank_policy_prompts(seqpg, "seqpg", config, train, labels)[0]
    pool = prompt_accuracies(by_guidance + seqpg_prompts, ("test",), config)["test"]
    pools = {"pgg": pool[: len(by_guidance)], "seqpg": pool[len(by_guidance) :]}
    mine = select_prompt(by_guidance[:top], dev[:top], test[:top])
    queried = select_prompt(by_queries[:top], dev[top:], test[top:])
    correct, pairs = pairwise_accuracy(torch.tensor([guidance_scores]), torch.tensor([true_rewards]))
    return {
        "dataset": dataset,
        "seed": seed,
        "distinct": len(by_guidance),
        "agreement": correct / pairs,  # pairs with distinct gap rewards the learned reward orders alike
        "guidance": {"test": mine.test_accuracy, "dev": mine.dev_accuracy, "prompt": mine.prompt},
        "queries": {
            "test": queried.test_accuracy,
            "dev": queried.dev_accuracy,
            "prompt": queried.prompt,
            "queries": len(by_guidance),
        },  # fmt: skip
        "candidate_test": {m: {"median": statistics.median(v), "max": max(v)} for m, v in pools.items()},
        "seconds": time.perf_counter() - started,
        "load": os.getloadavg()[0],
    }


def report(results: list[dict]) -> None:
    sections = []
    for dataset in sorted({r["dataset"] for r in results}):
        rows = sorted((r for r in results if r["dataset"] == dataset), key=lambda r: r["seed"])
        seqpg = {
            r["seed"]: r["seqpg"][-1] for r in json.loads((ROOT / f"results-{dataset}.json").read_text())
        }
        table = [
            [r["seed"], r["distinct"], f"{r['agreement']:.2f}", f"{r['guidance']['test']:.1f}",
             f"{r['queries']['test']:.1f}", f"{seqpg[r['seed']]['policy_test_accuracy']:.1f}",
             f"{r['candidate_test']['pgg']['median']:.1f} / {r['candidate_test']['pgg']['max']:.1f}",
             f"{r['candidate_test']['seqpg']['median']:.1f} / {r['candidate_test']['seqpg']['max']:.1f}",
             f"`{r['queries']['prompt']}`"]
            for r in rows
        ]  # fmt: skip
        guided = [r["guidance"]["test"] for r in rows]
        queried = [r["queries"]["test"] for r in rows]
        base = [seqpg[r["seed"]]["policy_test_accuracy"] for r in rows]
        wins = sum(a > b for a, b in zip(queried, base, strict=True))
        table.append(["mean ± sd", "", f"{statistics.mean(r['agreement'] for r in rows):.2f}",
                      mean_sd(guided), mean_sd(queried), mean_sd(base),
                      *(f"{statistics.mean(r['candidate_test'][m]['median'] for r in rows):.1f} / "
                        f"{statistics.mean(r['candidate_test'][m]['max'] for r in rows):.1f}" for m in ("pgg", "seqpg")),
                      ""])  # fmt: skip
        sections.append(
            f"### {dataset}\n\n"
            + markdown_table(
                [
                    "data seed",
                    "distinct candidates",
                    "learned-reward pairwise agreement",
                    "pgg, ranked by guidance",
                    "pgg, ranked by queries",
                    "seqpg, policy (ranked by queries)",
                    "pgg candidates on test, median / max",
                    "seqpg candidates on test, median / max",
                    "pgg's pick, ranked by queries",
                ],
                table,
            )  # fmt: skip
            + f"\n\npgg ranked by queries ahead of seqpg on {wins} of {len(rows)} seeds."
        )
    loads = [r["load"] for r in results]
    body = f"""Final policies of the sample-efficiency searches (2,640 queries each, quick default, prototype task
model), candidates as evaluation draws them (greedy + 64 samples; distinct ones counted). Ranked two
ways, top 16 kept, best on the 32-row dev split, test accuracy % reported. Ranking by queries costs
one task-model query per distinct candidate, as seqpg's policy selection already does, so pgg and
seqpg then spend the same queries. Agreement: share of candidate pairs the learned reward orders as
the gap reward does (0.5 = chance). Candidates on test: the test accuracy of every distinct candidate of
the policy (median / max; the max is a test oracle, shown only to say what the policy offers, never
used to select). Load average {min(loads):.1f}-{max(loads):.1f} (2 cores).

""" + "\n\n".join(sections)
    write_section(
        "prompt_policy_ranking", "Prompt policy selection: learned reward vs queries (issue #14)", body
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=["sst-2", "agnews"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 21, 42, 87, 100])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs-root", type=Path, default=ROOT / "runs")
    args = parser.parse_args()
    path = ROOT / "results-policy-ranking.json"
    results = json.loads(path.read_text()) if path.exists() else []
    for dataset in args.datasets:
        for seed in args.seeds:
            if not any(r["dataset"] == dataset and r["seed"] == seed for r in results):
                results.append(rank_seed(args.params, dataset, seed, args.runs_root, args.threads))
                path.write_text(json.dumps(results, indent=2))
    import torch

    torch.set_num_threads(args.threads)  # the section's "Measured ... torch threads": the runs' (--threads)
    report(results)


if __name__ == "__main__":
    main()
