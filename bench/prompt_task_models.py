"""Task-model headroom: how much a good prompt can beat the manual one, for each embedded task model.

For each design (the prototype classifier and the prefix-LM readings of ``PrefixLMTaskModel``) and
dataset (16-shot, data seed 13), scores on train, dev and a test subsample: no prompt, the manual
prompt, and random 5-token prompts from the policy's action space (whole-word MiniLM tokens).
Reports the random prompts' median and 90th percentile, the test oracle (the best random prompt
chosen on test itself: a ceiling no search can beat), and the dev-selected prompt (best on the
32-row dev split, ties broken by train) with its accuracy on the full test split. Speed: prompts/s
of scoring on the train split (the search's inner loop, batches of 16) and the seconds of one test
evaluation of 16 candidates on the full test split.

Run: python -m bench.prompt_task_models [--prompts 300] [--test-rows 400] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench.report import markdown_table, write_section
from components.data import load_fsc
from components.gap_reward import accuracy
from components.models import ModelSpec, load_model
from components.prompt_policy import whole_word_token_ids
from components.task_models import PrefixLMTaskModel, PrototypeTaskModel, verbalizers_for

MANUAL = {"sst-2": "It was", "agnews": "Category:"}
DESIGNS = {
    "prototype": "cos(emb(x), emb(p v_c))",
    "filled": "cos(emb(x p v_c), emb(x)), prefix LM",
    "conditioned": "cos(emb(x p), emb(v_c)), prefix LM",
    "combined": "cos(emb(x p), emb(p v_c)), prefix LM",
}


def split(root: Path, dataset: str, name: str, rows: int | None = None) -> tuple[list[str], torch.Tensor]:
    examples = load_fsc(root, dataset, 13, name)
    if rows is not None and rows < len(examples):  # a fixed random subsample, the same for every design
        pick = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0))[:rows]
        examples = [examples[i] for i in pick.tolist()]
    return [e.text for e in examples], torch.tensor([e.label for e in examples])


def build(design: str, tokenizer, encoder, dataset: str):
    verbalizers = verbalizers_for(dataset)
    if design == "prototype":
        return PrototypeTaskModel(tokenizer, encoder, verbalizers)
    return PrefixLMTaskModel(tokenizer, encoder, verbalizers, reading=design)


def accuracies(model, prompts: list[str], inputs, labels: torch.Tensor, batch: int = 16) -> torch.Tensor:
    out = [
        accuracy(model.class_probs(prompts[i : i + batch], inputs), labels)
        for i in range(0, len(prompts), batch)
    ]
    return 100 * torch.cat(out)


def measure(
    model, dataset: str, prompts: list[str], root: Path, test_rows: int, full_rows: int | None
) -> dict:
    data = {name: split(root, dataset, name) for name in ("train", "dev")}
    data["test-sub"] = split(root, dataset, "test", test_rows)
    manual = MANUAL[dataset]
    result: dict = {}
    for name, (texts, labels) in data.items():
        encoded = model.encode_inputs(texts)
        model.class_probs([manual], encoded)  # warm-up (and fills the prefix cache)
        start = time.perf_counter()
        random_acc = accuracies(model, prompts, encoded, labels)
        seconds = time.perf_counter() - start
        result[name] = {
            "none": 100 * accuracy(model.no_prompt_class_probs(encoded), labels).item(),
            "manual": 100 * accuracy(model.class_probs([manual], encoded), labels).item(),
            "random": random_acc.tolist(),
        }
        if name == "train":
            result["prompts_per_s"] = len(prompts) / seconds
    dev, train = torch.tensor(result["dev"]["random"]), torch.tensor(result["train"]["random"])
    best = int(torch.argmax(dev + 1e-3 * train))
    texts, labels = split(root, dataset, "test", full_rows)
    test = model.encode_inputs(texts)
    start = time.perf_counter()
    full = 100 * accuracy(model.class_probs([prompts[best], manual], test), labels)
    # Scoring is linear in the prompts once the split is encoded: 16 candidates cost 8x these 2.
    result["test_eval_16_s"] = 8 * (time.perf_counter() - start)
    result["full_test"] = {
        "rows": len(texts),
        "dev_selected": full[0].item(),
        "manual": full[1].item(),
        "none": 100 * accuracy(model.no_prompt_class_probs(test), labels).item(),
    }
    result["dev_selected_prompt"] = prompts[best]
    return result


def row(dataset: str, design: str, r: dict) -> list:
    sub = r["test-sub"]
    rand = torch.tensor(sub["random"])
    dev, test = torch.tensor(r["dev"]["random"]), rand
    corr = torch.corrcoef(torch.stack([dev, test]))[0, 1].item()
    full = r["full_test"]
    return [
        dataset,
        f"{design}: {DESIGNS[design]}",
        f"{sub['none']:.1f} / {full['none']:.1f}",
        f"{sub['manual']:.1f} / {full['manual']:.1f}",
        f"{rand.median():.1f}",
        f"{rand.quantile(0.9):.1f}",
        f"{rand.max():.1f} ({rand.max() - sub['manual']:+.1f})",
        f"{full['dev_selected']:.1f} ({full['dev_selected'] - full['manual']:+.1f})",
        f"{corr:.2f}",
        f"{r['prompts_per_s']:.1f}",
        f"{r['test_eval_16_s']:.0f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--datasets", nargs="+", default=["sst-2"])
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--test-rows", type=int, default=400)
    parser.add_argument("--full-test-rows", type=int, default=None, help="cap the 'full' test split")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true", help="render BENCHMARKS.md from --results")
    parser.add_argument("--results", type=Path, default=Path("bench/results/prompt_task_models.json"))
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer, encoder = load_model(ModelSpec("minilm", "encoder"))
    vocab = torch.tensor(whole_word_token_ids(tokenizer))
    picks = torch.randint(len(vocab), (args.prompts, 5), generator=torch.Generator().manual_seed(1))
    prompts = tokenizer.batch_decode(vocab[picks].tolist())

    results = json.loads(args.results.read_text()) if args.results.exists() else {}
    for dataset in [] if args.report_only else args.datasets:
        for design in args.designs:
            start = time.perf_counter()
            r = measure(
                build(design, tokenizer, encoder, dataset),
                dataset,
                prompts,
                args.data_root,
                args.test_rows,
                args.full_test_rows,
            )
            r.update(prompts=args.prompts, test_rows=args.test_rows, seconds=time.perf_counter() - start)
            r["load_average"] = os.getloadavg()[0]
            results[f"{dataset}/{design}"] = r
            print(dataset, design, json.dumps(row(dataset, design, r)), flush=True)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(results, indent=1))
    if args.no_write:
        return
    headers = [
        "dataset",
        "design",
        "none (sub / full)",
        "manual (sub / full)",
        "random median",
        "random p90",
        "test oracle (vs manual)",
        "dev-selected, full test (vs manual)",  # full: all test rows, or --full-test-rows
        "corr(dev, test) over prompts",
        "prompts/s (train, 32 rows)",
        "test eval of 16 (s, from 2)",
    ]
    rows = [row(*key.split("/"), r) for key, r in results.items()]
    loads = ", ".join(f"{r['load_average']:.2f}" for r in results.values())
    n = {(r["prompts"], r["test_rows"]) for r in results.values()}
    body = (
        f"Data seed 13. Random prompts: 5 whole-word MiniLM tokens (the policy's action space), "
        f"(prompts, test rows of the subsample) = {sorted(n)}; median, p90 and the oracle are over the random "
        "prompts on the test subsample (`sub`), the dev-selected prompt (best on the 32-row dev split) and "
        "none/manual are also on the full test split. corr: Pearson correlation of dev and test accuracy "
        "over the random prompts (how well the 32-row dev split predicts test). prompts/s: one torch thread. "
        f"Load average after each design: {loads} "
        "(2 cores shared with other jobs).\n\n" + markdown_table(headers, rows) + "\n\n" + CONCLUSION
    )
    write_section(
        "prompt_task_models", "Prompt task models: headroom of a good prompt over the manual one", body
    )


CONCLUSION = """\
**Which design has the headroom.** The prototype model's prompt only moves the two class vectors, so a
good prompt is worth little over "It was" (oracle a few points above manual, 32-row dev barely predicts
test). The `filled` prefix-LM reading (`task_model: prefix_lm`, `PrefixLMTaskModel(reading="filled")`)
is the one where prompts matter: the manual prompt is weak under it, random prompts spread widely, the
test oracle is far above manual and the dev-selected prompt keeps most of that on the full test split;
dev accuracy also tracks test accuracy best (corr column), so a search has something to find. The
`conditioned` and `combined` readings had a lower level and less usable spread in a 150-row probe
(rows appear here once the command finishes them). **Where it loses:** its level is lower. On SST-2 its
dev-selected prompt (70.1 on the full test split, +7.3 over its own manual 62.8) is still below the
prototype's manual "It was" (72.9) and dev-selected prompt (73.6): the headroom exists because the
manual prompt is poor under this reading, not because the reading classifies better.

**What it costs.** Every (input, prompt) runs C x ~7 appended positions through the 6 layers against
the cached input keys/values, so scoring is 20-40x slower than the prototype (prompts/s column; 2.7-3.9 prompts/s measured at load 2-4.5). The
quick default scores 2,640 prompts per search method x 3 methods on the 32-row train split: ~7,900
prompts, i.e. 35-50 min on one shared core, so `prefix_lm` does not fit the 10-minute
quick default as is; it suits a bench profile, or a quick profile with ~4x fewer task-model queries
and 2 threads.

**Caveat: the subsample oracle flatters every design.** Median, p90 and the oracle are on a test
subsample (binomial noise about +-3 points at 200 rows, and the max of 100 noisy prompts rides on it):
on the full 1,821 SST-2 test rows the prototype's oracle over 1,500 prompts is 74.6, +1.7 over manual
(issue 14), while its 200-row oracle here reads +6.5. Compare designs by the dev-selected prompt on
the full split (last accuracy column): that number is honest. The `filled` numbers in this table
came from a shorter run than planned (deadline); rerun the command with more prompts for the final one.
"""

if __name__ == "__main__":
    main()
