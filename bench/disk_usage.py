"""Disk per checkpoint kind with the real embedded MiniLM, and the default pipeline's totals from them.

    python -m bench.disk_usage [--before before.json] [--json out.json] [--no-write]
    python -m bench.disk_usage --smoke      # tiny models, seconds: prints the section, writes nothing
        [--workspace . --cache-before-mib N]

Runs the summarization pgg loop and the prompt pgg search for a few steps (every size below depends on
the model, not on the step count), in a temporary folder, and measures one of each: the warm start and
the last iteration's policy, a guidance refit, the encoder cache and pgg's reference-state cache per
training article, a prompt block's adaptor and Adam state, a prompt run folder. The default pipeline's
runs/ total is then counted from params.yaml's schedule (checkpoints x sizes). ``--before`` takes the
``--json`` of the same script run on the code before a change, for a before/after table.
``--workspace`` adds what a real, finished `make run` left in that repository: runs/ per folder and
what it added to .dvc/cache (``--cache-before-mib``: the cache's size before the run), against the
issue-15 target of at most 500 MB each.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import flows  # noqa: F401  (project-local Prefect home, offline hub)

MB = 1e6
SUMMARIZATION = {
    "data.summarization.max_train_examples": 64,
    "data.summarization.max_eval_examples": 16,
    "policy.summarization.warmstart_steps": 2,
    "policy.summarization.batch_size": 8,
    "policy.summarization.sampled_articles": 2,
    "sampling.summarization.articles_per_iteration": 8,
    "guidance.summarization.epochs": 2,
    "loop.summarization.policy_steps": 4,
    "loop.summarization.refit_every": 2,
    "loop.summarization.refit_until": 4,
    "loop.methods": ["pgg"],
    "eval.summarization.max_examples": 8,
}
PROMPT = {
    "sampling.prompt.warmup_lists": 8,
    "sampling.prompt.lists_per_step": 2,
    "guidance.prompt.epochs": 2,
    "loop.prompt.policy_steps": 4,
    "loop.prompt.refit_every": 2,
    "loop.prompt.refit_until": 4,
    "eval.prompt.max_test_examples": 32,
}


def size(path: Path) -> float:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / MB
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MB if path.exists() else 0.0


def measure(tmp: Path, params: Path, changes: dict) -> dict[str, float]:
    """``changes``: more params changes (the smoke run's tiny models)."""
    from flows import prompt as p
    from flows import summarization as s
    from flows.config import load_params
    from flows.prepare import prepare

    paths = {"data.prepared_dir": str(tmp / "data"), "runtime.runs_dir": str(tmp / "runs")}
    default = load_params(params, paths)
    counts = prepare(default)  # the full splits: the encoder cache scales with them
    config = load_params(params, {**paths, **SUMMARIZATION, **PROMPT, **changes})
    prepare(config)
    s.warmstart_flow(config)
    s.align_flow(config, "pgg")
    runs = s.runs_dir(config)
    last = runs / "pgg" / f"iter-{config.loop.summarization.iterations}"
    train_rows = sum(1 for _ in s.split_file(config, "train").open())
    cached_rows = sum(
        sum(1 for _ in s.split_file(config, split).open()) for split in ("train", "validation", "test")
    )
    full_rows = sum(counts[f"summarization/{split}"] for split in ("train", "validation", "test"))
    states = runs / "pgg" / "reference_states.pt"  # gone after the loop where it is compacted
    p.search_flow(config, "pgg")
    prompt_pgg = p.runs_dir(config) / "pgg"
    block = prompt_pgg / "iter-1"
    return {
        "policy_warmstart": size(runs / "warmstart"),
        "policy_iteration": size(last / "policy"),
        "guidance_refit": size(next((runs / "pgg").glob("iter-*/guidance/head.pt")).parent),
        "encoder_cache_full": size(runs / "encoder_cache") / cached_rows * full_rows,
        "reference_states_full": size(states) / train_rows * counts["summarization/train"],
        "summarization_pgg_folder_tiny": size(runs / "pgg"),
        "prompt_adaptor": size(next(prompt_pgg.glob("iter-*/adaptor.pt"))),
        "prompt_optimizer": size(block / "optimizer.pt"),
        "prompt_guidance_refit": size(next(prompt_pgg.glob("iter-*/guidance/head.pt")).parent),
        "prompt_pgg_folder_tiny": size(prompt_pgg),
        "prompt_embeddings": size(p.runs_dir(config) / "embeddings"),
    }


def default_totals(sizes: dict[str, float], compacted: bool) -> dict[str, float]:
    """runs/ of the default `make run` from the per-kind sizes and params.yaml's schedule."""
    from flows.config import DEFAULT_PARAMS, load_params

    config = load_params(DEFAULT_PARAMS)
    loop, methods = config.loop, config.loop.methods
    refits = {
        task: len([i for i in range(schedule.iterations) if i * schedule.refit_every < schedule.refit_until])
        for task, schedule in (("summarization", loop.summarization), ("prompt", loop.prompt))
    }
    kept = 1 if compacted else loop.summarization.iterations
    summarization = (
        sizes["encoder_cache_full"]
        + sizes["policy_warmstart"]
        + len(methods) * kept * sizes["policy_iteration"]
        + (1 if compacted else refits["summarization"]) * sizes["guidance_refit"]
        + (0 if compacted else sizes["reference_states_full"])
    )
    blocks = loop.prompt.iterations + 1  # the warm-up block saves the initial adaptor too
    per_search = (
        sizes["prompt_adaptor"]
        if compacted
        else blocks * sizes["prompt_adaptor"] + loop.prompt.iterations * sizes["prompt_optimizer"]
    )
    prompt = 2 * per_search + (1 if compacted else refits["prompt"]) * sizes["prompt_guidance_refit"]
    prompt += sizes["prompt_embeddings"]
    return {"summarization": summarization, "prompt": prompt, "runs": summarization + prompt}


def table(before: dict | None, after: dict) -> str:
    rows = [
        ("policy checkpoint (warm start or an iteration)", "policy_iteration"),
        ("guidance refit (summarization, frozen backbone)", "guidance_refit"),
        ("guidance refit (prompt, params.yaml's trainable layers)", "prompt_guidance_refit"),
        ("prompt block: adaptor.pt", "prompt_adaptor"),
        ("prompt block: optimizer.pt (Adam)", "prompt_optimizer"),
        ("encoder_cache, full BBC splits (int8 since issue 15; fp16 before)", "encoder_cache_full"),
        ("pgg reference_states.pt, full train split", "reference_states_full"),
        ("prompt pgg folder, 2-block tiny run", "prompt_pgg_folder_tiny"),
        ("summarization pgg folder, 2-iteration tiny run", "summarization_pgg_folder_tiny"),
    ]
    lines = ["| kind | before (MB) | after (MB) |", "|---|---:|---:|"]
    for label, key in rows:
        old = f"{before[key]:.1f}" if before and key in before else "–"
        lines.append(f"| {label} | {old} | {after[key]:.1f} |")
    return "\n".join(lines)


def mib(path: Path) -> float:
    """Allocated size as `du -sm` counts it (blocks, not apparent bytes), in MiB."""
    if not path.exists():
        return 0.0
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file() and not f.is_symlink()]
    return sum(f.stat().st_blocks * 512 for f in files) / 2**20


def workspace_totals(workspace: Path, cache_before_mib: float) -> str:
    """The measured paragraph for a workspace after a finished default `make run`."""
    runs = workspace / "runs"
    folders = {
        str(f.relative_to(runs)): mib(f)
        for top in sorted(runs.iterdir())
        for f in (sorted(top.iterdir()) if top.is_dir() else [top])
    }
    total, added = mib(runs), mib(workspace / ".dvc" / "cache") - cache_before_mib
    verdict = {True: "met", False: "missed"}
    return (
        f"Measured after a full default `make run` of this code in {workspace.resolve()}: runs/ "
        f"**{total:.0f} MiB ({total * 2**20 / MB:.0f} MB)**, .dvc/cache grew by **{added:.0f} MiB "
        f"({added * 2**20 / MB:.0f} MB)**. Target ≤ 500 MB each: runs/ {verdict[total * 2**20 / MB <= 500]}, "
        f".dvc/cache {verdict[added * 2**20 / MB <= 500]}. Per folder (MiB): "
        + ", ".join(f"{name} {size:.0f}" for name, size in folders.items() if size >= 0.5)
        + ". Issue 15 measured 1.9 GB (runs/) and 1.7 GB (.dvc/cache) before."
    )


def main(argv: list[str] | None = None) -> None:
    from bench.report import TINY_PROMPT, TINY_SUMMARIZATION, add_smoke_flag, smoke_mode, write_section
    from flows.config import DEFAULT_PARAMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="--json of this script on the code before")
    parser.add_argument("--json", type=Path, help="write the measured sizes here")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the BENCHMARKS section")
    parser.add_argument("--workspace", type=Path, help="a repository after a finished default `make run`")
    parser.add_argument("--cache-before-mib", type=float, default=0.0, help="its .dvc/cache before that run")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    smoke_mode(args.smoke)
    changes = {**TINY_SUMMARIZATION, **SUMMARIZATION, **TINY_PROMPT, **PROMPT} if args.smoke else {}
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory(prefix="pgg-disk-") as tmp, prefect_test_harness(180):
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        sizes = measure(Path(tmp), args.params, changes)
    if args.json:
        args.json.write_text(json.dumps(sizes, indent=2))
    print(json.dumps(sizes, indent=2))
    if args.no_write:
        return
    before = json.loads(args.before.read_text()) if args.before else None
    estimate = default_totals(sizes, compacted=True)
    old = default_totals(before, compacted=False) if before and "policy_warmstart" in before else None
    body = (
        table(before, sizes)
        + "\n\n"
        + (
            "Default `make run`, runs/ counted from these sizes and params.yaml's schedule: "
            + (f"before ≈ {old['runs']:.0f} MB, " if old else "")
            + f"after ≈ {estimate['runs']:.0f} MB (summarization {estimate['summarization']:.0f}, prompt "
            f"{estimate['prompt']:.0f}); .dvc/cache adds the same outputs once more (default link type "
            "reflink,copy: a copy where the filesystem has no reflinks)."
        )
        + (f"\n\n{workspace_totals(args.workspace, args.cache_before_mib)}" if args.workspace else "")
    )
    write_section("disk", "Disk per checkpoint kind", body)


if __name__ == "__main__":
    main()
