"""Peak resident memory of the quick default run, stage by stage.

    python -m bench.memory                 # quick default, step counts cut (memory does not grow with steps)
    python -m bench.memory --full-steps    # the quick default exactly (hours on a 2-core CPU)
    python -m bench.memory --smoke         # tiny models: the floor and two stages; prints, writes nothing

Each stage runs as its own `python -m flows STAGE` process in a throwaway runs folder, with the
quick default params (all data, MiniLM models, batch 32, K=3, 128 articles per iteration) except
the step counts; the peak RSS of every process is read from the kernel (`ru_maxrss`). Side by side:
the same interpreter importing the flows and nothing else, the floor every stage pays.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.report import (
    TINY_SUMMARIZATION,
    add_smoke_flag,
    laid_over,
    markdown_table,
    nested,
    smoke_mode,
    write_section,
)
from flows.config import PROJECT_ROOT

DATA_ROOT = (PROJECT_ROOT.parent / "shared" / "data").resolve()
CUT_STEPS = {"warmstart_steps": 4, "policy_steps": 2, "refit_every": 1, "refit_until": 1}


def run_measured(args: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``args``, run under a tiny wrapper that reports its child's maxrss."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "code = subprocess.call(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t); "
        "sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("PEAK ")][-1].split()
    return int(line[1]) / 1024, float(line[2])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-steps", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    smoke_mode(args.smoke)
    loads = [os.getloadavg()[0]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pgg-memory-") as tmp:
        params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
        params["data"]["root"] = str(DATA_ROOT)
        params["data"]["prepared_dir"] = f"{tmp}/data"
        params["runtime"]["runs_dir"] = f"{tmp}/runs"
        if not args.full_steps:
            params["policy"]["summarization"]["warmstart_steps"] = CUT_STEPS["warmstart_steps"]
            params["loop"]["summarization"].update(
                {k: v for k, v in CUT_STEPS.items() if k != "warmstart_steps"}
            )
        if args.smoke:
            laid_over(params, nested(TINY_SUMMARIZATION))
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        env = {
            **os.environ,
            "PYTHONPATH": str(PROJECT_ROOT),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        }
        floor, _ = run_measured([sys.executable, "-c", "import flows.summarization"], env, PROJECT_ROOT)
        rows.append(["import the flows only (floor)", f"{floor:.0f}", "", "1.00x"])
        flows_cmd = [sys.executable, "-m", "flows"]
        stages = (
            ("prepare", []),
            ("summarize-warmstart", []),
            ("summarize-align", ["--method", "pgg"]),
            ("summarize-evaluate", ["--method", "pgg"]),
        )
        for stage, extra in stages[:2] if args.smoke else stages:
            peak, seconds = run_measured(
                [*flows_cmd, stage, *extra, "--params", str(path)], env, PROJECT_ROOT
            )
            rows.append([f"`{stage} {' '.join(extra)}`".replace(" `", "`"), f"{peak:.0f}", f"{seconds:.0f}",
                         f"{peak / floor:.2f}x"])  # fmt: skip
            loads.append(os.getloadavg()[0])
    body = (
        "The quick default (`params.yaml`: all BBC articles, MiniLM BERT2BERT policy and reward model, "
        "frozen encoder with cached states, batch 32, K=3, 128 articles per iteration)"
        + (
            ""
            if args.full_steps
            else ", step counts cut to a few (warm start 4, 2 loop iterations of 1 step): activations, "
            "models, optimizer state and the encoder cache do not grow with steps"
        )  # fmt: skip
        + ". Each stage is its own process; peak RSS from the kernel.\n\n"
        + markdown_table(["process", "peak RSS MB", "seconds", "vs floor"], rows)
        + f"\n\nLoad average {min(loads):.1f}-{max(loads):.1f} (2-core machine shared with other jobs)."
    )
    print(body)
    if not args.no_write:
        write_section(
            "memory", "Memory: peak RSS of the quick default run", body,
            "python -m bench.memory" + (" --full-steps" if args.full_steps else ""),
        )  # fmt: skip


if __name__ == "__main__":
    main()
