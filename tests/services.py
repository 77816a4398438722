"""Helpers for tests that start real servers and subprocesses: ports, background processes, tiny params."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import write_params

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's prefect, mlflow and dvc

# The summarization loop with tiny random models (the pattern of test_summarization_flow.TINY).
TINY_SUMMARIZATION = """
data:
  root: {root}
  prepared_dir: {prepared}
  summarization: {{max_train_examples: 24, max_eval_examples: 6}}
models:
  summarization: {{policy: tiny, reward_backbone: tiny, decoder_layers: null, reward_decoder_layers: null}}
sampling:
  summarization: {{articles_per_iteration: 10, max_source_tokens: 24, max_target_tokens: 6}}
guidance:
  summarization: {{epochs: 2, head_hidden: 16, freeze_backbone: false, lr: 0.001, val_fraction: 0.3, preference: embedding}}
policy:
  summarization: {{warmstart_steps: 2, batch_size: 4, sampled_articles: 2}}
loop:
  summarization: {{policy_steps: {steps}, refit_every: 2, refit_until: 2}}
  methods: [{methods}]
runtime: {{runs_dir: {tmp}/runs, seed: 0, device: cpu}}
"""


def tiny_params(
    folder: Path,
    data_root: Path,
    steps: int = 4,
    methods: str = "pgg, mle, seqpg",
    prepared: Path | None = None,
) -> Path:
    """params.yaml in ``folder`` (runs under folder/runs); ``steps`` / 2 loop iterations."""
    text = TINY_SUMMARIZATION.format(
        root=data_root, tmp=folder, prepared=prepared or folder / "data", steps=steps, methods=methods
    )
    return write_params(folder, text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, payload: dict | None = None, timeout: float = 10.0, retries: int = 5):
    """GET (or POST ``payload``) and decode JSON. A 503 is retried, as Prefect's own client does: its
    server answers 503 while its sqlite database is locked by another writer (a loaded machine)."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            if err.code != 503 or attempt == retries:
                raise
            time.sleep(2**attempt)


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited ({process.returncode}):\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(f"{url} not up after {timeout:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


@contextmanager
def background(
    command: list[str], log: Path, env: dict[str, str], cwd: Path = PROJECT_ROOT, grace: float = 10
):
    """Run ``command`` in its own process group; always stop the group on exit (TERM, then KILL)."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop(process, grace)


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # children (a flow-run process of a worker) may outlive the leader
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
