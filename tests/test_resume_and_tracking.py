"""Operating failures: a tracking server that is down, and a run killed with SIGKILL mid-loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from flows import summarization as s
from flows.checkpoints import is_complete
from flows.config import load_params
from flows.prepare import prepare
from flows.tracking import TrackingUnavailable, lost_mid_run
from tests.services import PROJECT_ROOT, free_port, tail, tiny_params


def test_tracking_down_fails_in_one_line_before_training(tmp_path, data_root):
    params = tiny_params(tmp_path, data_root)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "flows", "summarize-align", "--method", "mle", "--params", str(params)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and uri in lines[0], done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()  # no warm start, no loop
    assert time.monotonic() - started < 60


def test_a_server_gone_during_the_run_is_named_and_any_other_failure_is_not(mlflow_uri):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more
    line = lost_mid_run(uri)
    assert uri in line and "stopped answering during the run" in line and "\n" not in line
    assert lost_mid_run(mlflow_uri) is None  # a local store, no server: the failure keeps its traceback


def test_align_flow_checks_tracking_before_the_warm_start(tmp_path, data_root, prefect_server, monkeypatch):
    """The same guard inside the flow, for callers that skip the CLI (deployments, notebooks)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    config = load_params(tiny_params(tmp_path, data_root))
    with pytest.raises(TrackingUnavailable, match="127.0.0.1"):
        s.align_flow(config, "mle")
    assert not (tmp_path / "runs").exists()


def test_sigkill_mid_loop_resumes_and_matches_an_uninterrupted_run(
    tmp_path, data_root, prefect_server, mlflow_uri, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the sqlite store puts artifacts under ./mlruns
    prepared = tmp_path / "data"
    killed = load_params(
        tiny_params(tmp_path / "killed", data_root, steps=8, methods="mle", prepared=prepared)
    )
    fresh = load_params(tiny_params(tmp_path / "fresh", data_root, steps=8, methods="mle", prepared=prepared))
    prepare(killed)
    method_dir = s.runs_dir(killed) / "mle"
    log = tmp_path / "killed.log"
    command = [sys.executable, "-m", "flows", "summarize-align", "--method", "mle"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--params", str(tmp_path / "killed" / "params.yaml")],
            cwd=tmp_path,
            env={**os.environ, "PREFECT_API_URL": prefect_server, "MLFLOW_TRACKING_URI": mlflow_uri},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while not is_complete(method_dir / "iter-1") and time.monotonic() < deadline:
            assert process.poll() is None, f"the run ended before iteration 1 was saved:\n{tail(log)}"
            time.sleep(0.02)
        assert is_complete(method_dir / "iter-1"), f"no iteration after 180 s:\n{tail(log)}"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    complete = [i for i in range(1, 5) if is_complete(method_dir / f"iter-{i}")]
    assert complete[-1] < 4, "the run finished before the kill; nothing was interrupted"
    saved = (method_dir / "iter-1" / "policy" / "state.json").stat().st_mtime_ns
    killed_run = (method_dir / "mlflow_run_id").read_text()

    resumed = s.align_flow(killed, "mle")
    assert (method_dir / "iter-1" / "policy" / "state.json").stat().st_mtime_ns == saved  # not redone
    new_run = MlflowClient(mlflow_uri).get_run((method_dir / "mlflow_run_id").read_text())
    assert new_run.data.tags["resumed_from"] == killed_run  # the new run links the one it resumed

    uninterrupted = s.align_flow(fresh, "mle")
    assert len(resumed) == len(uninterrupted) == 4
    for key, value in uninterrupted[-1].items():
        if not key.startswith("seconds/"):
            assert resumed[-1][key] == pytest.approx(value, rel=1e-5, abs=1e-8), key
