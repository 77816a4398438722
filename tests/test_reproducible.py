"""The same code gives the same result: the seqpg loop (tiny models), run as its DVC stage runs it, twice
under different conditions (thread count in the environment, hash seed, a busy second process), computes
identical metrics and weights. seqpg samples from its policy, so a last-bit difference in a float sum
becomes other samples and another result (docs/reproducibility.md)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from flows.config import load_params
from flows.prepare import prepare
from tests.conftest import PROJECT_ROOT
from tests.services import tiny_params

CONDITIONS = (  # (environment, busy second process)
    ({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "1"}, False),
    ({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONHASHSEED": "2"}, True),
)


@pytest.fixture(scope="module")
def seqpg_params(tmp_path_factory, data_root, prefect_server):
    folder = tmp_path_factory.mktemp("repro")
    params = tiny_params(folder, data_root, steps=4, methods="seqpg")
    prepare(load_params(params))
    return params


def _align_seqpg(params, env: dict, busy: bool, prefect_server: str) -> dict:
    """The align_seqpg stage's command from an empty runs/ (encoder cache and warm start included)."""
    runs = params.parent / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    # A process that keeps a core busy for the whole run: the load of other jobs beside a `make run`.
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        subprocess.run(
            [sys.executable, "-m", "flows", "summarize-align", "--method", "seqpg", "--params", str(params)],
            cwd=PROJECT_ROOT, env={**_base_env(), **env, "PREFECT_API_URL": prefect_server},
            check=True, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    return _computed(runs / "summarization")


def _base_env() -> dict:
    return {
        key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }


def _computed(root) -> dict:
    """Everything the run computed, wall-clock seconds left out: each iteration's metrics and step losses,
    and the bytes of the warm start's and every kept policy's weights."""
    result = {}
    for state in sorted(root.glob("seqpg/iter-*/state.json")):
        metrics = json.loads(state.read_text())["metrics"]
        result[str(state.relative_to(root))] = {
            k: v for k, v in metrics.items() if not k.startswith("seconds")
        }
    for state in sorted(root.glob("seqpg/iter-*/policy/state.json")):
        result[str(state.relative_to(root))] = json.loads(state.read_text())["step_losses"]
    for weights in sorted(root.glob("**/*.safetensors")):
        result[str(weights.relative_to(root))] = hashlib.sha256(weights.read_bytes()).hexdigest()
    return result


def test_seqpg_align_repeats_exactly_under_other_threads_hash_seed_and_load(seqpg_params, prefect_server):
    first, second = (_align_seqpg(seqpg_params, env, busy, prefect_server) for env, busy in CONDITIONS)
    assert "seqpg/iter-2/state.json" in first and "warmstart/model.safetensors" in first
    assert first["seqpg/iter-2/state.json"]["policy/loss"] > 0
    differing = sorted(key for key in first.keys() | second.keys() if first.get(key) != second.get(key))
    assert not differing, f"another result under other conditions: {differing}"
