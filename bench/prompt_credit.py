"""Does pgg's token-level credit help or hurt? The learned reward as a sequence reward, and the true
reward spread over tokens by the learned one, on the CPU (#14)

    python -m bench.prompt_surrogate run --device cpu --threads 2 --task-models prefix_lm \\
        --seeds 13 21 42 --variants pgg_seq pgg seqpg --out bench/results/prompt_credit
    python -m bench.prompt_credit bench/results/prompt_credit
    python -m bench.prompt_surrogate run --device cpu --threads 2 --task-models prefix_lm \\
        --seeds 13 21 42 --variants pgg_spread seqpg pgg --out bench/results/prompt_spread
    python -m bench.prompt_credit bench/results/prompt_spread --section prompt_spread
    python -m bench.prompt_surrogate run --device cpu --threads 2 --task-models prototype \\
        --seeds 13 21 42 87 100 --variants pgg_spread seqpg pgg pgg_rtg pgg_raw \\
        --out bench/results/prompt_credit_prototype
    python -m bench.prompt_credit bench/results/prompt_credit_prototype --section prompt_credit_prototype
    python -m bench.prompt_surrogate run --device cpu --threads 2 --dataset agnews --task-models prototype \\
        --seeds 13 21 42 87 100 --variants pgg seqpg random --out bench/results/prompt_agnews
    python -m bench.prompt_credit bench/results/prompt_agnews --section prompt_agnews

On the prefix-LM task model pgg lost to seqpg on every seed (BENCHMARKS prompt_surrogate), yet at the
untrained policy its learned reward orders prompts by held-out accuracy no worse than the gap reward
does (prompt_signal). Two things differ between the methods: which reward (learned vs the task model's)
and how it is credited (each token its own r_t vs every token the prompt's score). ``pgg_seq``
(``policy.prompt.guidance_credit: sequence``) keeps pgg's learned reward and takes seqpg's credit: every
token of a prompt is weighted by the prompt's aggregated learned reward, centred and scaled over the
batch. ``pgg_spread`` (``guidance_credit: gap_spread``) keeps seqpg's reward, the task model's gap reward
of each prompt, and lets the learned reward only move it between the prompt's words (bench.prompt_token_credit
measured that its within-prompt credit points at the words that matter). Same searches as
bench.prompt_surrogate (its ``search``), same task-model queries.

The same report serves any folder of bench.prompt_surrogate runs of one task model and dataset: the loss
ablations (``pgg_rtg``: ``reward_to_go``, ``pgg_raw``: ``normalize_rewards: false``) on the default task model,
and today's defaults on AG News.

Writes the ``prompt_credit`` section of BENCHMARKS.md (or ``--section``) from the run's JSON lines.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench.prompt_surrogate import LABELS, TASK_MODEL_SETTINGS
from bench.report import markdown_table, mean_sd, write_section

ORDER = ("pgg", "pgg_seq", "pgg_spread", "pgg_rtg", "pgg_raw", "seqpg", "random")
CREDIT_PARAMS = {
    "pgg_seq": "pgg, sequence credit: `policy.prompt.guidance_credit: sequence`.",
    "pgg_spread": "pgg, gap reward spread by r_t: `policy.prompt.guidance_credit: gap_spread`.",
    "pgg_rtg": "pgg, reward-to-go: `policy.prompt.reward_to_go: true`.",
    "pgg_raw": "pgg, raw r_t (no z-score): `policy.prompt.normalize_rewards: false`.",
}
TITLES = {
    "prompt_credit": "Prompt search: token-level vs sequence-level credit of the learned reward (issue #14)",
    "prompt_spread": "Prompt search: the gap reward spread over a prompt's words by the learned reward (issue #14)",
    "prompt_credit_prototype": "Prompt search on the default prototype task model: token credit variants "
    "and the loss ablations, 5 seeds (issue #14)",
    "prompt_agnews": "Prompt search on AG News with today's defaults, 5 seeds (issue #14)",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--load", default="not recorded", help="load average while the run ran")
    parser.add_argument("--section", choices=sorted(TITLES), default="prompt_credit")
    args = parser.parse_args()
    rows = {}
    for path in sorted(args.folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[row["task_model"], row["seed"], row["variant"]] = row
    task_model = next(iter(rows))[0]
    dataset = next(iter(rows.values()))["dataset"]
    dataset = {"sst-2": "SST-2", "agnews": "AG News"}.get(dataset, dataset)
    seeds = sorted({seed for _, seed, _ in rows})
    variants = [v for v in ORDER if all((task_model, s, v) in rows for s in seeds)]

    def line(label: str, values: list[float], digits: int = 1) -> list[str]:
        return [label, mean_sd(values, digits), *(f"{v:.{digits}f}" for v in values)]

    def of(variant: str, key: str, curve: int | None = None) -> list[float]:
        runs = [rows[task_model, s, variant] for s in seeds]
        return [r[key] if curve is None else r["curve"][curve][key] for r in runs]

    table = [line(f"{LABELS[v]}, policy", of(v, "policy_test_accuracy")) for v in variants]
    half = rows[task_model, seeds[0], variants[0]]["curve"][0]["queries"]
    table += [
        line(f"{LABELS[v]}, policy, {half} queries", of(v, "policy_test_accuracy", 0)) for v in variants
    ]
    table += [line(f"{LABELS[v]}, best scored", of(v, "test_accuracy")) for v in variants]
    table += [line(v, of(v, "test_accuracy")) for v in ("manual", "none")]
    dev = [line(LABELS[v], of(v, "policy_dev_accuracy")) for v in variants]
    guided = [v for v in variants if v.startswith("pgg")]
    online = [line(LABELS[v], of(v, "online_pairwise_accuracy"), 3) for v in guided]
    seconds = {v: statistics.mean(of(v, "seconds")) for v in variants}
    credits = " ".join(CREDIT_PARAMS[v] for v in variants if v in CREDIT_PARAMS)
    heads = ["method, selection", "test acc % (mean ± sd)", *(f"seed {s}" for s in seeds)]
    temperature = TASK_MODEL_SETTINGS[task_model].get("reward.prompt.task_temperature")
    temperature = f" (reward temperature {temperature})" if temperature else ""
    body = f"""{dataset}, data seeds {", ".join(map(str, seeds))}, task model {task_model}{temperature}, the quick
default's search (`params.yaml`: 2,640 task-model queries, entropy 0.25), run on this CPU through
bench.prompt_surrogate's `search` (flows.prompt's loop, checked prompt for prompt against the flow). {credits}
Policy pick and best scored as in prompt_surrogate; test accuracy (%) reported once.

{markdown_table(heads, table)}

Dev accuracy of the policy pick (%):

{markdown_table([heads[0], "dev acc % (mean ± sd)", *heads[2:]], dev)}

The learned reward's ordering of the moving policy's fresh prompts against their gap rewards, before each update
used them (0.5 = chance):

{markdown_table(["method", "online pairwise acc (mean ± sd)", *heads[2:]], online)}

Seconds per search and its evaluations: {", ".join(f"{LABELS[v]} {t:.0f}" for v, t in seconds.items())}
(2 torch threads, one search at a time; load average {args.load})."""
    write_section(args.section, TITLES[args.section], body)


if __name__ == "__main__":
    main()
