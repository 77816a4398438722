"""What Prefect + MLflow cost on top of the science, and what the task cache saves.

    python -m bench.orchestration            # tiny and small-MiniLM loops; sections orchestration, cache_hits
    python -m bench.orchestration --per-call # the fixed cost per Prefect / MLflow call (fast)
    python -m bench.orchestration --smoke    # the tiny loop once, no warm-up round: prints, writes nothing

Overhead: the pgg loop (warm start, then sample, rank, fit guidance, weighted MLE, evaluate per
iteration) through ``align_flow`` (Prefect tasks and subflows, content-hash caching, MLflow metrics,
token-reward heatmaps, model registration) against the same task bodies (``task.fn``) called in a
plain Python loop. Runs alternate (plain, flow, plain, flow), each in a fresh runs folder; the faster
of each pair counts. The Prefect server is started before timing (a ``python -m flows`` process
without ``PREFECT_API_URL`` pays its start-up once, measured separately).

Cache hits: the flow again with unchanged inputs after its iteration results are deleted: the warm
start and sampling come back from Prefect's cache; the task runs are counted by final state.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a loaded machine

import flows  # noqa: F401, E402  (project Prefect home, offline hub)
from bench.report import (
    TINY_SUMMARIZATION,
    add_smoke_flag,
    laid_over,
    markdown_table,
    nested,
    smoke_mode,
    write_section,
)
from flows.config import PROJECT_ROOT, load_params

DATA_ROOT = (PROJECT_ROOT.parent / "shared" / "data").resolve()

TINY = nested(TINY_SUMMARIZATION)
SMALL = {  # the quick default's models and settings, on few articles and steps
    "data": {"summarization": {"max_train_examples": 96, "max_eval_examples": 16}},
    "sampling": {"summarization": {"articles_per_iteration": 16}},
    "guidance": {"summarization": {"epochs": 3}},
    "policy": {"summarization": {"warmstart_steps": 6, "batch_size": 8, "sampled_articles": 2}},
    "loop": {"summarization": {"policy_steps": 6, "refit_every": 3, "refit_until": 3}},
}
SIZES = {"tiny": TINY, "small": SMALL}


def make_config(folder: Path, size: str):
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    laid_over(params, SIZES[size])
    laid_over(params, {"data": {"root": str(DATA_ROOT), "prepared_dir": str(folder / "data")},
                    "runtime": {"runs_dir": str(folder / "runs")}})  # fmt: skip
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load_params(path)


def plain_loop(config, method: str = "pgg") -> None:
    """align_flow's work without Prefect or MLflow: the same task bodies, called directly."""
    from components import data
    from flows import summarization as s
    from flows.common import apply_runtime, atomic_write_json
    from flows.distributed import hardware

    apply_runtime(config.runtime)
    models, sampling = config.models.summarization, config.sampling.summarization
    caches = {split: s.encode_split.fn(s.split_file(config, split), str(s.cache_file(config, split)), models,
                                       sampling) for split in data.SPLITS}  # fmt: skip
    warm = s.warm_start.fn(
        s.split_file(config, "train"), caches["train"], str(s.runs_dir(config) / "warmstart"), models,
        config.policy.summarization, sampling, config.runtime.seed, hardware(config.runtime),
    )  # fmt: skip
    loop, policy_dir, guidance_dir = config.loop.summarization, warm, None
    for iteration in range(1, loop.iterations + 1):
        iter_dir = s.runs_dir(config) / method / f"iter-{iteration}"
        first_step = (iteration - 1) * loop.refit_every
        if method == "pgg" and (guidance_dir is None or first_step < loop.refit_until):
            lists = s.sample_and_rank.fn(
                policy_dir, s.split_file(config, "train"), caches["train"], models, sampling,
                config.guidance.summarization, config.runtime.seed, iteration,
                config.runtime.device,
            )  # fmt: skip
            s.fit_guidance.fn(lists, guidance_dir, iter_dir / "guidance", models, config.guidance.summarization,
                              sampling, config.runtime.seed, iteration, hardware(config.runtime))  # fmt: skip
            guidance_dir = iter_dir / "guidance"
        steps = min(loop.refit_every, loop.policy_steps - first_step)
        stats = s.train_iteration.fn(
            method,
            iteration,
            policy_dir,
            guidance_dir,
            iter_dir / "policy",
            config,
            steps,
            hardware(config.runtime),
        )
        policy_dir = iter_dir / "policy"
        evaluation = s.evaluate_policy.fn(policy_dir, "validation", config)
        atomic_write_json(iter_dir / "state.json", {"metrics": {**stats, **evaluation["rouge"]}})


def task_states(flow_state) -> Counter:
    """(task name, final state) counts of a flow run and, recursively, its subflows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentTaskRunId

    counts: Counter = Counter()
    with get_client(sync_client=True) as client:
        flow_ids = [flow_state.state_details.flow_run_id]
        while flow_ids:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_ids)))
            counts.update((run.name.rsplit("-", 1)[0], run.state.name) for run in runs)
            children = client.read_flow_runs(  # a subflow hangs off a task run of its parent flow
                flow_run_filter=FlowRunFilter(
                    parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[run.id for run in runs])
                )
            ) if runs else []  # fmt: skip
            flow_ids = [child.id for child in children]
    subflow_placeholders = {name for name, _ in counts if name.startswith("summarization-")}
    return Counter({key: n for key, n in counts.items() if key[0] not in subflow_placeholders})


def measure(size: str, repeats: int, root: Path, warm_up: bool = True) -> dict:
    from flows import summarization as s
    from flows.prepare import prepare

    times = {"plain": [], "flow": []}
    cache = {}
    first = (
        -1 if size == "tiny" and warm_up else 0
    )  # round -1 warms the process up (imports, first loads): not counted
    for repeat in range(first, repeats):
        for mode in ("plain", "flow"):
            folder = root / f"{size}-{mode}-{repeat}"
            folder.mkdir(parents=True)
            config = make_config(folder, size)
            prepare(config)
            start = time.perf_counter()
            if mode == "plain":
                plain_loop(config)
            else:
                s.align_flow(config, "pgg")
            if repeat >= 0:
                times[mode].append(time.perf_counter() - start)
            if mode == "flow" and repeat == 0:  # cache hits: same inputs, iteration results thrown away
                for state_file in (s.runs_dir(config) / "pgg").glob("iter-*/state.json"):
                    state_file.unlink()
                start = time.perf_counter()  # the two stages DVC would rerun: warm start, then the loop
                states = task_states(s.warmstart_flow(config, return_state=True))
                states += task_states(s.align_flow(config, "pgg", return_state=True))
                cache = {"seconds": time.perf_counter() - start, "states": states}
            shutil.rmtree(folder / "runs", ignore_errors=True)
    return {"plain": min(times["plain"]), "flow": min(times["flow"]), "all": times, "cache": cache}


def quick_default_step_seconds(steps: int = 3) -> float:
    """Seconds per MLE step of the quick default's policy (MiniLM BERT2BERT, 2 decoder layers, frozen
    encoder states of 128 tokens, batch 32, 24 target tokens), on random tokens."""
    import torch

    from components.encoder_cache import EncodedSources
    from components.models import ModelSpec, load_model
    from components.policy_trainer import train_policy
    from components.seq2seq_policy import freeze_encoder
    from flows.config import load_params

    tokenizer, model = load_model(ModelSpec("minilm", "seq2seq", 2))
    freeze_encoder(model)
    generator = torch.Generator().manual_seed(0)
    sources = EncodedSources(
        torch.randn(32, 128, 384, generator=generator), torch.ones(32, 128, dtype=torch.long)
    )
    labels = torch.randint(2000, 29000, (32, 24), generator=generator)
    mask = torch.ones(32, 24)
    params = load_params()
    config = params.policy.summarization.train_config(
        "mle", steps + 1, 1e-4, 0, params.sampling.summarization
    )
    history = train_policy(model, tokenizer, sources, labels, mask, config)
    return min(h["seconds"] for h in history[1:])


def per_call_costs(calls: int, write: bool) -> None:
    """Fixed costs, robust to load: a no-op Prefect task run, a subflow run and an MLflow log_metrics
    call against a plain function call, then what they add to the quick default (counted task runs)."""
    import mlflow
    from prefect import flow, task

    from flows.common import CONTENT_CACHE

    def noop_fn(x: int) -> int:
        return x

    noop_task = task(noop_fn, name="noop")
    cached_task = task(noop_fn, name="noop-cached", cache_policy=CONTENT_CACHE, persist_result=True)

    @flow(name="noop-subflow")
    def subflow(x: int) -> int:
        return x

    @flow(name="bench-per-call")
    def parent(kind: str) -> float:
        start = time.perf_counter()
        for i in range(calls):
            {"plain": noop_fn, "task": noop_task, "cached task": cached_task, "subflow": subflow}[kind](i)
        return (time.perf_counter() - start) / calls

    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="pgg-bench-") as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        start = time.perf_counter()
        parent("task")  # warm-up: imports, and the temporary server when PREFECT_API_URL is not set
        startup = time.perf_counter() - start
        costs = {kind: parent(kind) for kind in ("plain", "task", "cached task", "subflow")}
        with mlflow.start_run():
            start = time.perf_counter()
            for i in range(calls):
                mlflow.log_metrics({"a": float(i), "b": 2.0}, step=i)
            costs["MLflow log_metrics"] = (time.perf_counter() - start) / calls
    step = quick_default_step_seconds()
    loads.append(os.getloadavg()[0])
    # the quick default (params.yaml): encoder cache x3 + warm start; pgg 2 refits x (sample, fit,
    # token rewards) + 3 x (train, evaluate); mle and seqpg 3 x (train, evaluate); 4 test evaluations
    quick = {"task": 4 + (6 + 6) + 6 + 6 + 4, "subflow": 1 + 3 + 5, "MLflow log_metrics": 9 + 5}
    stage_processes = 9  # dvc repro: one `python -m flows` process per summarization stage
    server = stage_processes * startup
    start = time.perf_counter()  # what every stage process still pays with a running server
    subprocess.run([sys.executable, "-c", "import prefect, mlflow"], check=True)
    imports = time.perf_counter() - start
    added = sum(costs[k] * n for k, n in quick.items()) + server
    compute = (300 + 3 * 150) * step  # policy steps only: sampling, guidance and evaluation come on top
    shared = startup + stage_processes * imports  # one server, imports in every stage process
    added_shared = added - server + shared
    rows = [[k, f"{1000 * v:.1f}"] for k, v in costs.items()]
    body = (
        f"{calls} calls of each inside one flow run, after a warm-up:\n\n"
        + markdown_table(["call", "ms per call"], rows)
        + f"\n\nThe quick default pipeline (`params.yaml`: encoder cache, warm start, pgg/mle/seqpg with 3 "
        f"iterations each, test evaluation) makes about {quick['task']} task runs, {quick['subflow']} "
        f"subflow runs and {quick['MLflow log_metrics']} metric logs in {stage_processes} stage processes, "
        f"each starting a temporary Prefect server under a plain `dvc repro` ({startup:.1f} s here, first "
        f"call and imports included): about **{added:.0f} s** of orchestration. `make run` starts one "
        f"Prefect server for all stages (`python -m flows.server dvc repro`): about "
        f"**{added_shared:.0f} s** (the server once, plus {imports:.1f} s of Prefect and MLflow imports per "
        f"process). Its 750 policy steps alone (300 warm start + 3 x 150; one "
        f"MiniLM step, batch 32, timed in this run: {step:.2f} s) take {compute / 60:.0f} min, so "
        f"orchestration is at most **{100 * added_shared / compute:.1f} %** of the run under "
        f"`make run` ({100 * added / compute:.1f} % with a server per stage; sampling, guidance fits and "
        "evaluation only add compute). The end-to-end comparison "
        "(section orchestration) is dominated by the work the flow does on top (reports, model "
        f"registration) and by load noise on loops of seconds. Load average {min(loads):.1f}-{max(loads):.1f}."
    )
    print(body)
    if write:
        write_section("orchestration_per_call", "Orchestration: fixed cost per Prefect / MLflow call", body,
                      "python -m bench.orchestration --per-call")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--per-call", action="store_true", help="only the fixed cost per call (fast)")
    parser.add_argument("--no-write", action="store_true")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.repeats = ["tiny"], 1
        smoke_mode(True)
    if args.per_call:
        return per_call_costs(50, not args.no_write)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="pgg-bench-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        from prefect import flow

        @flow
        def noop() -> None:
            pass

        start = time.perf_counter()
        noop()  # starts the temporary Prefect server (if no PREFECT_API_URL), once per process
        server_seconds = time.perf_counter() - start
        results = {size: measure(size, args.repeats, Path(tmp), not args.smoke) for size in args.sizes}
        loads.append(os.getloadavg()[0])

    rows = []
    for size, r in results.items():
        overhead = r["flow"] / r["plain"] - 1
        rows.append([size, f"{r['plain']:.1f}", f"{r['flow']:.1f}", f"{r['flow'] - r['plain']:+.1f}",
                     f"**{100 * overhead:+.0f} %**"])  # fmt: skip
    load = f"Load average {min(loads):.1f}-{max(loads):.1f} (2-core machine shared with other jobs)."
    body = (
        "The pgg loop (warm start + iterations: sample, rank, fit guidance, weighted MLE, validation "
        "ROUGE) through `align_flow` against the same task bodies called in a plain Python loop, "
        "alternating, fresh runs folder each; the faster of "
        f"{args.repeats} runs each. *tiny*: random 2-layer models, 24 articles, 2+4 steps (the worst "
        "case: almost no compute). *small*: the quick default's MiniLM models and settings on 96 "
        "articles, 6+6 steps.\n\n"
        + markdown_table(["loop", "plain Python s", "Prefect + MLflow s", "difference s", "overhead"], rows)
        + f"\n\nThe flow also renders the token-reward heatmaps and sample tables, logs metrics and "
        "artifacts and registers the final policy in MLflow; that work is in the difference. "
        f"Prefect's temporary server start-up, paid once per `python -m flows` process without "
        f"`PREFECT_API_URL`: {server_seconds:.1f} s (not in the table). DVC's own cost is the "
        f"no-op `dvc repro` (section dvc_rerun). All runs: "
        + "; ".join(
            f"{size}: plain {', '.join(f'{t:.1f}' for t in r['all']['plain'])}, "
            f"flow {', '.join(f'{t:.1f}' for t in r['all']['flow'])}"
            for size, r in results.items()
        )
        + f" (s).\n\n{load}"
    )
    print(body)
    cache_rows = []
    for size, r in results.items():
        states = r["cache"]["states"]
        for (name, state), count in sorted(states.items()):
            cache_rows.append([size, name, state, count])
    first = {size: r["all"]["flow"][0] for size, r in results.items()}
    cache_body = (
        "`warmstart_flow` and `align_flow(config, 'pgg')` rerun with unchanged inputs after deleting every "
        "iteration's `state.json` (so the loop itself must run again): task runs by final state. `Cached` "
        "= skipped, the result read from Prefect's content-addressed cache (key: task source, inputs "
        "hashed by content, components/ source).\n\n"
        + markdown_table(["loop", "task", "final state", "task runs"], cache_rows)
        + "\n\n"
        + markdown_table(
            ["loop", "first run s", "rerun s", "rerun / first"],
            [
                [
                    size,
                    f"{first[size]:.1f}",
                    f"{r['cache']['seconds']:.1f}",
                    f"{r['cache']['seconds'] / first[size]:.2f}",
                ]
                for size, r in results.items()
            ],  # fmt: skip
        )
        + f"\n\n{load}"
    )
    print(cache_body)
    if not args.no_write:
        command = "python -m bench.orchestration" + (
            f" --sizes {' '.join(args.sizes)}" if args.sizes != ["tiny", "small"] else ""
        )
        write_section(
            "orchestration", "Orchestration overhead: Prefect + MLflow vs plain Python", body, command
        )
        write_section("cache_hits", "Cache hits: rerun with unchanged inputs", cache_body, command)


if __name__ == "__main__":
    main()
