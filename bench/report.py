"""Write one benchmark's section of BENCHMARKS.md without touching the others.

Each benchmark owns the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``. A benchmark's
``--smoke`` run (tiny models, seconds: it proves the script works, its numbers mean nothing) prints its
section instead of writing it.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import sys
from datetime import date
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every number here was measured side by side with its baseline in one run, by the command "
    "shown with it. Rerun the command to refresh its section.\n"
)


# Tiny summarization settings (dotted params keys): the smoke runs and the orchestration bench's "tiny" loop
TINY_SUMMARIZATION = {
    "data.summarization.max_train_examples": 24, "data.summarization.max_eval_examples": 6,
    "models.summarization.policy": "tiny", "models.summarization.reward_backbone": "tiny",
    "models.summarization.decoder_layers": None, "models.summarization.reward_decoder_layers": None,
    "sampling.summarization.articles_per_iteration": 10, "sampling.summarization.max_source_tokens": 24,
    "sampling.summarization.max_target_tokens": 6, "guidance.summarization.epochs": 2,
    "guidance.summarization.head_hidden": 16, "guidance.summarization.freeze_backbone": False,
    "guidance.summarization.val_fraction": 0.3, "guidance.summarization.preference": "embedding",
    "policy.summarization.warmstart_steps": 2, "policy.summarization.batch_size": 4,
    "policy.summarization.sampled_articles": 2, "loop.summarization.policy_steps": 4,
    "loop.summarization.refit_every": 2, "loop.summarization.refit_until": 2,
}  # fmt: skip
# Tiny prompt settings: 2 warm-up lists, then 3 steps of 2 lists of K = 3 (24 queries per search, 3 budgets)
TINY_PROMPT = {
    "models.prompt.policy": "tiny", "models.prompt.task_model_name": "tiny",
    "models.prompt.reward_backbone": "tiny", "sampling.prompt.k": 3, "sampling.prompt.warmup_lists": 2,
    "sampling.prompt.lists_per_step": 2, "loop.prompt.policy_steps": 3, "loop.prompt.refit_every": 1,
    "loop.prompt.refit_until": 1, "guidance.prompt.epochs": 2, "guidance.prompt.head_hidden": 16,
    "guidance.prompt.batch_size": 4, "policy.prompt.adaptor_hidden": 16, "eval.prompt.candidates": 5,
    "eval.prompt.policy_samples": 8, "eval.prompt.max_test_examples": 24,
}  # fmt: skip
SMOKE_HELP = "tiny models, seconds: check that the benchmark runs; prints its section, writes nothing"
_smoke = False


def smoke_mode(enabled: bool, folder: Path | None = None) -> None:
    """``--smoke``: sections are printed, not written; with ``folder``, MLflow logs to a store there."""
    global _smoke
    _smoke = enabled
    if enabled and folder is not None:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(folder).resolve()}/mlflow.db"


def nested(dotted: dict) -> dict:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}}: dotted params changes as a YAML tree to lay over params."""
    tree: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def laid_over(tree: dict, update: dict) -> dict:
    """``update`` laid over the params tree ``tree`` in place, section by section; returns ``tree``."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            laid_over(tree[key], value)
        else:
            tree[key] = value
    return tree


def add_smoke_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def this_command() -> str:
    """The command line of this process, as a reader would type it."""
    script = Path(sys.argv[0])  # `python -m bench.x` shows up as .../bench/x.py in argv
    module = f"-m bench.{script.stem}" if script.parent.name == "bench" else shlex.quote(sys.argv[0])
    return " ".join(["python", module, *(shlex.quote(a) for a in sys.argv[1:])])


def write_section(
    name: str, title: str, body: str, command: str | None = None, measured_on: str | None = None
) -> None:
    """``measured_on``: where the numbers were measured, when not on this machine (the device machine)."""
    command = command or this_command()
    section = (
        f"<!-- bench:{name} -->\n## {title}\n\n"
        f"Command: `{command}`  \nMeasured: {date.today().isoformat()} on {measured_on or machine()}\n\n"
        f"{body.strip()}\n<!-- /bench:{name} -->"
    )
    if _smoke:
        print(section)
        return
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    tmp = BENCHMARKS.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(BENCHMARKS)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_sd(values: list[float], digits: int = 1) -> str:
    """Mean ± sd over seeds; one value alone is printed as it is."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
