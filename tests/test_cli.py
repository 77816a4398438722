"""The `pgg` command: argparse rejects bad choices with exit 2 before anything is read, started or written."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flows.__main__ import METHODS, STAGES
from tests.conftest import PROJECT_ROOT, write_params


def _pgg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script's entry point exactly as pyproject declares it, in a fresh interpreter."""
    target = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]["pgg"]
    module, function = target.split(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("stage", sorted(METHODS))
def test_a_bad_method_exits_2_and_writes_nothing(tmp_path, stage):
    params = write_params(tmp_path / "project", "runtime:\n  runs_dir: runs\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = _pgg(stage, "--method", "foo", "--params", str(params), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "invalid choice: 'foo'" in result.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no runs/.../foo/
    assert not (PROJECT_ROOT / "runs" / "summarization" / "foo").exists()


def test_each_stage_offers_only_its_own_methods(tmp_path):
    params = write_params(tmp_path)
    wrong = _pgg("summarize-align", "--method", "lead", "--params", str(params), cwd=tmp_path)
    assert wrong.returncode == 2 and "invalid choice: 'lead'" in wrong.stderr  # lead is evaluate-only
    missing = _pgg("prompt-train", "--params", str(params), cwd=tmp_path)
    assert missing.returncode == 2 and "--method" in missing.stderr


def test_help_lists_run_and_every_stage(tmp_path):
    result = _pgg("--help", cwd=tmp_path)
    assert result.returncode == 0
    for name in ("run", *STAGES):
        assert name in result.stdout


def test_python_dash_m_flows_still_works(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "flows", "prompt-evaluate", "--method", "bogus"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.startswith("usage: python -m flows")


def test_installed_console_script_runs_from_the_venv(tmp_path):
    script = Path(sys.executable).parent / "pgg"
    if not script.exists():
        pytest.skip(f"{script} not installed yet: pip install -e . in this venv creates it")
    result = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "summarize-align" in result.stdout
