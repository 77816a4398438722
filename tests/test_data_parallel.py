"""Data parallelism through accelerate: 2 CPU processes (gloo) take the same steps as 1 process.

The 2-process run is a real launch (torchrun, the launcher ``accelerate launch`` uses) of
tests/dp_worker.py; the 1-process baseline runs the same code here, without an accelerator.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests import dp_worker

WORKER = Path(dp_worker.__file__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dp")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_two_processes_take_the_same_policy_steps_as_one(two_processes):
    result = json.loads((two_processes / "result.json").read_text())
    assert result["processes"] == 2
    tokenizer, model, history = dp_worker.train_the_policy()
    assert len(result["policy"]) == len(history) == dp_worker.POLICY.steps
    for key in ("loss", "wmle_loss", "grad_norm"):
        assert [h[key] for h in result["policy"]] == pytest.approx([h[key] for h in history], rel=1e-4)
    assert history[-1]["loss"] < history[0]["loss"]  # the steps did something
    saved = load_file(two_processes / "policy" / "model.safetensors")
    for name, value in model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(saved[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_two_processes_fit_the_same_guidance_as_one(two_processes):
    result = json.loads((two_processes / "result.json").read_text())["guidance"]
    single = dp_worker.fit_the_guidance()
    assert [h["train_loss"] for h in result["history"]] == pytest.approx(
        [h["train_loss"] for h in single["history"]], rel=1e-4
    )
    assert [h["val_loss"] for h in result["history"]] == pytest.approx(
        [h["val_loss"] for h in single["history"]], rel=1e-4
    )
    for name in ("head", "query"):  # Adam magnifies float rounding on near-zero gradients: absolute tolerance
        scale = max(abs(x) for x in single[name])
        assert result[name] == pytest.approx(single[name], abs=1e-3 * scale), name


def test_checkpoint_is_written_once_and_complete_everywhere(two_processes):
    assert (two_processes / "writes.txt").read_text().split() == ["0"]
    for rank in (0, 1):
        assert json.loads((two_processes / f"seen-{rank}.json").read_text())["complete"] is True


def test_batch_that_does_not_split_over_processes_is_an_error():
    from components.policy_trainer import PolicyTrainConfig, train_policy

    class TwoProcesses:  # only what train_policy reads before training
        num_processes, process_index = 2, 0

    tokenizer, model, sources, labels, mask, _ = dp_worker.policy_problem()
    with pytest.raises(ValueError, match="multiple"):
        train_policy(
            model,
            tokenizer,
            sources,
            labels,
            mask,
            PolicyTrainConfig(batch_size=3),
            accelerator=TwoProcesses(),
        )
