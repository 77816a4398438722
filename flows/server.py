"""Run a command against one Prefect server started for it.

    python -m flows.server dvc repro        # what `make run` does

Without ``PREFECT_API_URL`` every ``python -m flows`` process (one per DVC stage) starts its own
temporary Prefect server, about 15 s each on a 2-core CPU. This starts ``prefect server start`` once
on a free local port, runs the command with ``PREFECT_API_URL`` pointing at it, and stops the server
when the command ends; the command's exit status is returned. With ``PREFECT_API_URL`` already set
the command runs unchanged against that server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import flows  # noqa: F401  (project-local PREFECT_HOME)

START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with status {server.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server not healthy after {START_TIMEOUT_S} s; see {log}")


def run_with_server(command: list[str]) -> int:
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(command)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = Path(os.environ["PREFECT_HOME"]) / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the command; the server is stopped below
        )
    try:
        wait_healthy(url, server, log)
        print(f"Prefect server for this run: {url} (log {log})", file=sys.stderr)
        return subprocess.call(command, env={**os.environ, "PREFECT_API_URL": url})
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m flows.server COMMAND [ARGS...]  (e.g. python -m flows.server dvc repro)")
    try:
        sys.exit(run_with_server(sys.argv[1:]))
    except RuntimeError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
