"""Every maintained benchmark's ``--smoke`` run (tiny models), typed as a user types it; and the prompt
benchmark's entry scores exactly the prompts of the pipeline's search_flow with the same seed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.prompt_sample_efficiency import SMOKE, seed_config
from flows import prompt as p
from flows.checkpoints import read_state
from flows.config import load_params
from flows.prepare import prepare
from tests.conftest import PROJECT_ROOT, write_params

BENCHMARKS_MD = PROJECT_ROOT / "BENCHMARKS.md"
# benchmark -> the section its smoke run prints instead of writing (gpu_check: the body only)
SECTIONS = {
    "summarization": "<!-- bench:summarization -->",
    "guidance_fit": "<!-- bench:guidance_fit -->",
    "prompt_guidance_scale": "<!-- bench:prompt_guidance_scale -->",
    "orchestration": "<!-- bench:orchestration -->",
    "dvc_rerun": "<!-- bench:dvc_rerun -->",
    "faults": "<!-- bench:faults -->",  # one kill point and the tracking server's stop
    "memory": "<!-- bench:memory -->",
    "disk_usage": "<!-- bench:disk -->",
    "gpu_check": "Loop healthy",
    "prompt_authors_protocol": "<!-- bench:prompt_authors_protocol -->",
    "prompt_scoring": "<!-- bench:prompt_scoring -->",
}
TAKES_PARAMS = (
    "summarization", "guidance_fit", "disk_usage", "gpu_check", "prompt_sample_efficiency", "prompt_authors_protocol",
    "prompt_scoring", "prompt_guidance_scale",
)  # fmt: skip


def _smoke(name: str, folder, prefect_server, *args: str) -> str:
    """Run ``python -m bench.NAME --smoke`` in the project root; its stdout. BENCHMARKS.md stays as it was."""
    before = BENCHMARKS_MD.read_bytes() if BENCHMARKS_MD.exists() else None
    if name in TAKES_PARAMS:  # the embedded data (a fresh checkout has no corpora/ before `make corpora`)
        args = ("--params", str(write_params(folder)), *args)
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,  # the session's server: no per-process start-up
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--smoke", *args],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"bench.{name} --smoke failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert (BENCHMARKS_MD.read_bytes() if BENCHMARKS_MD.exists() else None) == before
    return done.stdout


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_benchmark_smoke_run_prints_its_section(name, tmp_path, prefect_server):
    assert SECTIONS[name] in _smoke(name, tmp_path, prefect_server)


def test_prompt_benchmark_scores_the_pipelines_prompts(tmp_path, prefect_server, mlflow_uri):
    root = tmp_path / "bench"
    out = _smoke("prompt_sample_efficiency", tmp_path, prefect_server, "--root", str(root), "--seeds", "21")
    assert "<!-- bench:prompt_sample_efficiency_sst-2 -->" in out
    assert (root / "sample-efficiency-sst-2.png").exists()  # the figure stays in the smoke folder
    params = tmp_path / "params.yaml"  # the one _smoke wrote
    bench = seed_config(
        params, "sst-2", 21, root / "runs", 2, {**SMOKE, "data.prepared_dir": str(root / "data")}
    )
    # the pipeline's own entry, in another folder, with the same settings and seed
    pipeline = load_params(
        params,
        {**SMOKE, "data.prompt.seed": 21, "runtime.runs_dir": str(tmp_path / "pipeline" / "runs"),
         "data.prepared_dir": str(tmp_path / "pipeline" / "data")},
    )  # fmt: skip
    prepare(pipeline)
    for method in p.SEARCH_METHODS:
        p.search_flow(pipeline, method)
        ours, theirs = p._search_prompts(bench, method), p._search_prompts(pipeline, method)
        assert len(ours) == 24  # 2 warm-up lists + 3 steps x 2 lists, K = 3
        assert [(r["prompt"], r["reward"]) for r in ours] == [(r["prompt"], r["reward"]) for r in theirs]
        last = p._search_blocks(bench, method)[-1]
        assert (
            read_state(last)["policy_candidates"]
            == read_state(p._search_blocks(pipeline, method)[-1])["policy_candidates"]
        )
