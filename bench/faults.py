"""Faults, counted: `dvc repro` killed at random points, and the MLflow server stopped mid-run.

    python -m bench.faults                 # 10 kill points and the server stop
    python -m bench.faults --kills 20      # more kill points
    python -m bench.faults --smoke         # one kill point and the server stop: prints, writes nothing

In a throwaway git + DVC repository (bench.dvc_rerun's: this project's code, tiny models) the pgg
summarization pipeline (prepare, warm start, pgg's loop, its evaluation) runs once uninterrupted: the
reference metrics; a forced rerun repeats them and sets the time scale. Then, until N runs were killed,
`dvc repro -f` is SIGKILLed with its stage processes at a random moment of that duration (a crash:
nothing gets to clean up; a run that finished first is listed, not counted), and a plain `dvc repro`
finishes it. A kill point counts when the rerun succeeds and metrics/ equals the reference byte for
byte. Last, with an MLflow tracking server: the server is stopped while pgg's loop runs; that counts
when the stage fails and its last line is one `error:` line naming the server, and when the rerun
(server back) ends with the reference metrics.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a loaded machine

from bench.dvc_rerun import throwaway_repo  # noqa: E402
from bench.report import add_smoke_flag, markdown_table, smoke_mode, write_section  # noqa: E402

STAGES = ["evaluate_summarization@pgg"]  # dvc repro runs what it depends on: prepare, warm start, pgg
LOOP_STAGE = "align_pgg"
LOOP_RUN_ID = "runs/summarization/pgg/mlflow_run_id"  # written when the loop's MLflow run starts
TIMEOUT = 1800


def _metrics(repo: Path) -> dict[str, bytes]:
    folder = repo / "metrics"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.json"))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Repo:
    """Runs commands in the throwaway repository with its environment; output goes to a log file."""

    def __init__(self, repo: Path, env: dict[str, str]):
        self.repo, self.env, self.log = repo, env, repo.parent / "last.log"

    def start(self, *args: str) -> subprocess.Popen:
        out = self.log.open("w")
        return subprocess.Popen(
            args, cwd=self.repo, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def run(self, *args: str) -> tuple[int, str]:
        process = self.start(*args)
        return process.wait(timeout=TIMEOUT), self.log.read_text()

    def running_stage(self) -> str:
        stages = re.findall(r"Running stage '([^']+)'", self.log.read_text())
        return stages[-1] if stages else "(none yet)"


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL dvc and every stage process it started (their session): a crash, nothing cleans up."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def kill_and_resume(repo: Repo, at: float, reference: dict[str, bytes]) -> dict:
    """`dvc repro -f` killed ``at`` seconds in, then a plain `dvc repro`: does it end at the reference?"""
    process = repo.start("dvc", "repro", "-f", *STAGES)
    try:
        process.wait(timeout=at)
        killed, stage = False, "(finished before the kill: not counted)"
    except subprocess.TimeoutExpired:
        killed, stage = True, repo.running_stage()
        _kill_group(process)
    rc, out = repo.run("dvc", "repro", *STAGES)
    ok = rc == 0 and _metrics(repo.repo) == reference
    why = "" if ok else (out.strip().splitlines() or ["?"])[-1]
    return {"at": at, "killed": killed, "stage": stage, "ok": ok, "why": why}


def _start_mlflow(tmp: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp}/server.db", "--default-artifact-root", str(tmp / "artifacts"),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the MLflow server on port {port} did not start in 120 s")


def server_stop(repo: Repo, tmp: Path, reference: dict[str, bytes]) -> dict:
    """The tracking server stops while pgg's loop runs: one line? Then, server back, does the rerun resume?"""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    saved = dict(repo.env)
    # a dead server answers at once (connection refused); no minutes of client retries
    repo.env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    server = _start_mlflow(tmp, port)
    try:
        started = time.time()
        process = repo.start("dvc", "repro", "-f", *STAGES)
        run_id = repo.repo / LOOP_RUN_ID
        while process.poll() is None and not (run_id.exists() and run_id.stat().st_mtime >= started):
            time.sleep(0.5)
        _kill_group(server)  # pgg's loop has just started its MLflow run
        rc = process.wait(timeout=TIMEOUT)
        out = repo.log.read_text()
        stage_lines = [line for line in out.splitlines() if line.strip() and not line.startswith("ERROR:")]
        errors = [line for line in stage_lines if line.startswith("error:")]
        # the stage's last word is one line naming the server (Prefect's log above it may hold a traceback)
        one_line = rc != 0 and errors == stage_lines[-1:] and uri in errors[0]
        traceback = "Traceback" in out
        server = _start_mlflow(tmp, port)
        rerun_rc, _ = repo.run("dvc", "repro", *STAGES)
        resumed = rerun_rc == 0 and _metrics(repo.repo) == reference
    finally:
        _kill_group(server)
        repo.env.clear()
        repo.env.update(saved)
    error = errors[-1] if errors else out.strip()[-300:]
    return {"rc": rc, "one_line": one_line, "traceback": traceback, "error": error, "resumed": resumed}


def main(argv: list[str] | None = None) -> None:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="random kill points (--smoke: 1)")
    parser.add_argument("--seed", type=int, default=0, help="of the kill points")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    smoke_mode(args.smoke)
    kills = 1 if args.smoke else args.kills
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="pgg-faults-") as tmp, prefect_test_harness(180):
        folder = Path(tmp)
        path, _, env = throwaway_repo(folder, PREFECT_API_URL.value())
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", OMP_NUM_THREADS="1")
        repo = Repo(path, env)
        for command in (("git", "init", "-q"), ("dvc", "init", "-q")):
            subprocess.run(command, cwd=path, env=env, check=True)
        start = time.perf_counter()
        rc, out = repo.run("dvc", "repro", *STAGES)
        duration = time.perf_counter() - start
        if rc != 0:
            raise SystemExit(f"the uninterrupted run failed: {out[-3000:]}")
        reference = _metrics(path)
        # kill points span a forced rerun, which is quicker than the first run (Prefect's task caches)
        start = time.perf_counter()
        rc, out = repo.run("dvc", "repro", "-f", *STAGES)
        duration = time.perf_counter() - start
        if rc != 0 or _metrics(path) != reference:
            raise SystemExit(f"a forced rerun did not repeat the first run's metrics: {out[-3000:]}")
        print(f"forced rerun: {duration:.0f} s", flush=True)
        trials = []
        while len([t for t in trials if t["killed"]]) < kills and len(trials) < 3 * kills:
            trials.append(kill_and_resume(repo, rng.uniform(0.05, 0.95) * duration, reference))
            print(f"kill point: {trials[-1]}", flush=True)  # a long run's progress, and its partial result
        stop = server_stop(repo, folder, reference)
        print(f"server stop: {stop}", flush=True)

    passed = sum(t["ok"] for t in trials if t["killed"])
    kills = sum(t["killed"] for t in trials)
    rows = [
        [f"{t['at']:.0f}", f"`{t['stage']}`", "yes" if t["ok"] else f"**no**: {t['why']}"] for t in trials
    ]
    body = (
        f"`dvc repro -f` of pgg's summarization pipeline (prepare, warm start, pgg's loop, evaluation; tiny "
        f"models, {duration:.0f} s forced and uninterrupted) SIGKILLed with its stage processes at {kills} random "
        f"moments, then a plain `dvc repro`: **{passed} of {kills}** resumed runs ended with metrics/ "
        "byte-identical to the uninterrupted run's.\n\n"
        + markdown_table(["killed at s", "stage running", "resumed to identical metrics"], rows)
        + f"\n\nMLflow tracking server stopped during `{LOOP_STAGE}`: the stage "
        + (
            "failed; its last line is one `error:` line naming the server"
            + (" (Prefect's log above it holds the traceback)" if stop["traceback"] else ", no traceback")
            if stop["one_line"]
            else f"failed (exit {stop['rc']}) but **not with one line**"
        )
        + f" (`{stop['error']}`); with the server back the rerun "
        + ("resumed and ended with the reference metrics." if stop["resumed"] else "**did not** end at them.")
        + f" Together: **{passed + stop['one_line'] + stop['resumed']} of {kills + 2}** checks."
    )
    print(body)
    if not args.no_write:
        write_section(
            "faults", "Faults: killed runs and a stopped tracking server", body, "python -m bench.faults"
        )
    if passed < kills or not (stop["one_line"] and stop["resumed"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
