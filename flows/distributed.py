"""Training on one or several devices through Hugging Face ``accelerate``.

Launched plainly (``python -m flows ...``) a flow trains in one process on ``runtime.device``. Launched
with ``accelerate launch --num_processes N -m flows ...`` (or ``torchrun --nproc_per_node N``), every
process runs the same flow: the training steps split each global batch across the processes, and only
the main process writes checkpoints, logs to MLflow and reports to Prefect.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from accelerate import Accelerator
from accelerate.state import AcceleratorState

from flows.common import pick_device

T = TypeVar("T")


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE``); 1 for a plain ``python`` run."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def make_accelerator(runtime) -> Accelerator:
    """The accelerator for ``runtime.device`` and ``runtime.bf16``; distributed when launched so.

    accelerate keeps device and precision in one process-wide state; a single process whose settings
    change between runs (tests, notebooks) starts a fresh state, a launched process keeps its own.
    """
    cpu = pick_device(runtime.device).type == "cpu"
    precision = "bf16" if runtime.bf16 else "no"
    state = AcceleratorState._shared_state
    changed = state and (state.get("_mixed_precision"), state.get("_cpu")) != (precision, cpu)
    if changed and launched_processes() == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=cpu, mixed_precision=precision)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def write_once(accelerator: Accelerator | None, write: Callable[[], T]) -> T | None:
    """Run ``write`` on the main process only; every process waits until it has finished, so a
    checkpoint is written once and is complete wherever it is read next."""
    if accelerator is None or accelerator.num_processes == 1:
        return write()
    result = write() if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return result
