"""`dvc repro` with nothing changed, and after changing only an evaluation parameter.

    python -m bench.dvc_rerun
    python -m bench.dvc_rerun --smoke   # the warm start and two evaluations, one round: prints, writes nothing

In a throwaway git + DVC repository (this project's components/, flows/ and dvc.yaml; tiny models,
params otherwise the defaults) the summarization stages run once; then, side by side, a no-op
`dvc repro` of them against `dvc --version` (DVC's own start-up, the floor) and `dvc status`; then
`eval.summarization.lead_k` changes and `dvc repro` reruns: which stages ran, and how long it took.
Every stage process talks to one Prefect server started here (as with `PREFECT_API_URL`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a loaded machine

from bench.report import add_smoke_flag, markdown_table, smoke_mode, write_section  # noqa: E402
from flows.config import PROJECT_ROOT  # noqa: E402

DATA_ROOT = (PROJECT_ROOT.parent / "shared" / "data").resolve()
STAGES = ["summarize_warmstart", "align_pgg", "align_mle", "align_seqpg"] + [
    f"evaluate_summarization@{m}" for m in ("lead", "warmstart", "pgg", "mle", "seqpg")
]
SMOKE_STAGES = ["summarize_warmstart", "evaluate_summarization@lead", "evaluate_summarization@warmstart"]
TINY = {
    "data.summarization.max_train_examples": 24,
    "data.summarization.max_eval_examples": 6,
    "models.summarization.policy": "tiny",
    "models.summarization.reward_backbone": "tiny",
    "models.summarization.decoder_layers": None,
    "models.summarization.reward_decoder_layers": None,
    "sampling.summarization.articles_per_iteration": 8,
    "sampling.summarization.max_source_tokens": 24,
    "sampling.summarization.max_target_tokens": 6,
    "guidance.summarization.epochs": 1,
    "guidance.summarization.head_hidden": 16,
    "guidance.summarization.freeze_backbone": False,
    "guidance.summarization.preference": "embedding",
    "policy.summarization.warmstart_steps": 2,
    "policy.summarization.batch_size": 4,
    "policy.summarization.sampled_articles": 2,
    "loop.summarization.policy_steps": 2,
    "loop.summarization.refit_every": 1,
    "loop.summarization.refit_until": 1,
}


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[leaf] = value


def throwaway_repo(tmp: Path, prefect_api_url: str) -> tuple[Path, dict, dict[str, str]]:
    """tmp/repo: this project's components/, flows/ and dvc.yaml with tiny params; its params and the
    environment its stage processes need (this interpreter, that Prefect server). Not yet git/DVC."""
    repo = tmp / "repo"
    repo.mkdir()
    for name in ("components", "flows"):
        shutil.copytree(PROJECT_ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dvc.yaml", repo)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(DATA_ROOT)
    for key, value in TINY.items():
        _set(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": prefect_api_url,
        "PYTHONPATH": str(repo),
    }
    return repo, params, env


def main(argv: list[str] | None = None) -> None:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    smoke_mode(args.smoke)
    stages, rounds = (SMOKE_STAGES, 1) if args.smoke else (STAGES, 3)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="pgg-dvc-bench-") as tmp, prefect_test_harness(180):
        repo, params, env = throwaway_repo(Path(tmp), PREFECT_API_URL.value())
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"

        def run(*args) -> tuple[str, float]:
            start = time.perf_counter()
            done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(args)} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
            return done.stdout, time.perf_counter() - start

        run("git", "init", "-q")
        run("dvc", "init", "-q")
        _, first = run("dvc", "repro", *stages)
        times: dict[str, list[float]] = {"dvc --version": [], "dvc status": [], "dvc repro (no-op)": []}
        for _ in range(rounds):  # interleaved
            times["dvc --version"].append(run("dvc", "--version")[1])
            out, seconds = run("dvc", "status", *stages)
            times["dvc status"].append(seconds)
            out, seconds = run("dvc", "repro", *stages)
            if "Running stage" in out:
                raise SystemExit(f"no-op repro ran stages: {out[-1000:]}")
            times["dvc repro (no-op)"].append(seconds)
        loads.append(os.getloadavg()[0])

        params["eval"]["summarization"]["lead_k"] += 1
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out, changed = run("dvc", "repro", *stages)
        ran = re.findall(r"Running stage '([^']+)'", out)
        loads.append(os.getloadavg()[0])

    floor = min(times["dvc --version"])
    rows = [
        [name, f"{min(ts):.1f}", f"{statistics.median(ts):.1f}", f"{min(ts) / floor:.1f}x"]
        for name, ts in times.items()
    ]
    evaluation_only = all(stage.startswith("evaluate_summarization@") for stage in ran)
    body = (
        f"The {len(stages)} summarization stages with tiny models in a throwaway repository (first `dvc repro`: "
        f"{first:.0f} s). {rounds} interleaved round(s):\n\n"
        + markdown_table(["command", "min s", "median s", "vs `dvc --version`"], rows)
        + f"\n\nAfter changing only `eval.summarization.lead_k`: `dvc repro` ran {len(ran)} stages in "
        f"{changed:.0f} s: {', '.join(f'`{s}`' for s in ran)}; "
        + (
            "**only evaluation stages**, every training stage stayed cached."
            if evaluation_only
            else "**not only evaluation stages**."
        )
        + f"\n\nThe no-op cost is DVC's start-up plus hashing the stage deps and outs (checkpoints are "
        f"hashed once, then recognised by their file stats). Load average {min(loads):.1f}-{max(loads):.1f} "
        "(2-core machine shared with other jobs)."
    )
    print(body)
    if not args.no_write:
        write_section(
            "dvc_rerun", "DVC: no-op rerun and an evaluation-only change", body, "python -m bench.dvc_rerun"
        )
    if not evaluation_only:
        raise SystemExit("a non-evaluation stage reran after an evaluation-only change")


if __name__ == "__main__":
    main()
