"""`python -m flows.server CMD`: one real Prefect server for the command, stopped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from tests.conftest import PROJECT_ROOT

PROBE = (
    "import os, sys, urllib.request; url = os.environ['PREFECT_API_URL']; "
    "assert urllib.request.urlopen(url + '/health').read() == b'true'; print(url); sys.exit(3)"
)


def test_command_runs_against_a_started_server_which_is_stopped_after(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    done = subprocess.run(
        [sys.executable, "-m", "flows.server", sys.executable, "-c", PROBE],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr  # the command's own exit status
    url = done.stdout.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
    assert (tmp_path / "prefect-home" / "server.log").exists()
    try:
        urllib.request.urlopen(url + "/health", timeout=2)
        raise AssertionError("the server is still up after the command ended")
    except OSError:
        pass


def test_existing_server_is_used_as_is(tmp_path):
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api", "PREFECT_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "flows.server", sys.executable, "-c",
         "import os; print(os.environ['PREFECT_API_URL'])"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "http://127.0.0.1:9/api"
    assert not (tmp_path / "server.log").exists()


def test_no_command_is_a_usage_error():
    done = subprocess.run(
        [sys.executable, "-m", "flows.server"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "usage: python -m flows.server" in done.stderr
