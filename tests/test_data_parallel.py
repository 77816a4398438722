"""Data parallelism through accelerate: 2 CPU processes (gloo) take the same steps as 1 process.

The 2-process run is a real launch by ``flows.distributed.data_parallel`` (torchrun, the launcher
``accelerate launch`` uses) of tests/dp_worker.py; the 1-process baseline runs the same code here,
without an accelerator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests import dp_worker


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, dict]:
    """The step run by @data_parallel in 2 processes (torchrun, gloo on 127.0.0.1)."""
    from flows.distributed import Hardware

    out = tmp_path_factory.mktemp("dp")
    return out, dp_worker.run_all(str(out), hw=Hardware(device="cpu", processes=2))


def test_two_processes_take_the_same_policy_steps_as_one(two_processes):
    out, result = two_processes
    assert result["processes"] == 2
    tokenizer, model, history = dp_worker.train_the_policy()
    assert len(result["policy"]) == len(history) == dp_worker.POLICY.steps
    for key in ("loss", "wmle_loss", "grad_norm"):
        assert [h[key] for h in result["policy"]] == pytest.approx([h[key] for h in history], rel=1e-4)
    assert history[-1]["loss"] < history[0]["loss"]  # the steps did something
    saved = load_file(out / "policy" / "model.safetensors")
    for name, value in model.state_dict().items():
        if name in saved:
            torch.testing.assert_close(saved[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_two_processes_fit_the_same_guidance_as_one(two_processes):
    result = two_processes[1]["guidance"]
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
    out = two_processes[0]
    assert (out / "writes.txt").read_text().split() == ["0"]
    for rank in (0, 1):
        assert json.loads((out / f"seen-{rank}.json").read_text())["complete"] is True


def test_batch_that_does_not_split_over_processes_is_an_error():
    from components.policy_trainer import train_policy
    from tests.conftest import policy_config

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
            policy_config(batch_size=3),
            accelerator=TwoProcesses(),
        )
