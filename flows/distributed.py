"""Scaling out: data-parallel training through Hugging Face ``accelerate``, and the task runner.

A flow always runs in one process: Prefect, MLflow and the files stay single-writer. With
``runtime.processes: N`` (N > 1) each training step (warm start, policy iteration, guidance fit) runs
as N processes under ``torch.distributed.run`` (torchrun, the launcher ``accelerate launch`` uses for
several GPUs): every process builds ``make_accelerator(hw)``, takes its share of each global batch,
and only the main process writes the checkpoint (``write_once``) and returns the result to the flow.
A step opts in with the ``@data_parallel`` decorator.

    python -m flows.distributed JOB RESULT   # one process of such a step; the flow starts it, not you

Tasks that do not depend on each other (the test evaluations of every method) are submitted to
``task_runner(runtime)``: Prefect's thread pool, or a Dask cluster.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import pickle
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from accelerate import Accelerator
from accelerate.state import AcceleratorState

from flows.common import pick_device
from flows.config import PROJECT_ROOT

T = TypeVar("T")


class DistributedStepFailed(RuntimeError):
    pass


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE``); 1 for a plain ``python`` run."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Hardware:
    """What training runs on: part of a training task's inputs (bf16 and process count change results)."""

    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = False
    processes: int = 1


def hardware(runtime) -> Hardware:
    return Hardware(device=runtime.device, bf16=runtime.bf16, processes=runtime.processes)


def make_accelerator(hw: Hardware) -> Accelerator:
    """The accelerator for ``hw.device`` and ``hw.bf16``; distributed inside a launched step.

    accelerate keeps device and precision in one process-wide state; a single process whose settings
    change between runs (tests, notebooks) starts a fresh state, a launched process keeps its own.
    """
    cpu = pick_device(hw.device).type == "cpu"
    precision = "bf16" if hw.bf16 else "no"
    state = AcceleratorState._shared_state
    changed = state and (state.get("_mixed_precision"), state.get("_cpu")) != (precision, cpu)
    if changed and launched_processes() == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=cpu, mixed_precision=precision)


def write_once(accelerator: Accelerator | None, write: Callable[[], T]) -> T | None:
    """Run ``write`` on the main process only; every process waits until it has finished, so a
    checkpoint is written once and is complete wherever it is read next."""
    if accelerator is None or accelerator.num_processes == 1:
        return write()
    result = write() if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return result


_STEPS: dict[str, Callable[..., Any]] = {}


def data_parallel(step: Callable[..., T]) -> Callable[..., T]:
    """Decorate a training step that takes ``hw: Hardware``: called with ``hw.processes`` 1 (or inside
    a launched step) it runs here; with N > 1 it runs as N processes on this machine under
    ``torch.distributed.run`` and returns the main process's result. Its arguments must be picklable
    (paths, config sections, ranked lists); the step builds its accelerator with ``make_accelerator(hw)``
    and writes checkpoints with ``write_once``."""
    key = f"{step.__module__}:{step.__qualname__}"
    _STEPS[key] = step
    signature = inspect.signature(step)

    @functools.wraps(step)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        processes = bound.arguments["hw"].processes
        if processes <= 1 or launched_processes() > 1:
            return step(**bound.arguments)
        return _launch(key, dict(bound.arguments), processes)

    return run


def _launch(key: str, kwargs: dict[str, Any], processes: int):
    with tempfile.TemporaryDirectory(prefix="pgg-step-") as folder:
        job, result = Path(folder) / "job.pkl", Path(folder) / "result.pkl"
        job.write_bytes(pickle.dumps({"step": key, "kwargs": kwargs}))
        with socket.socket() as sock:  # a free port for the processes' rendezvous
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "flows.distributed", str(job), str(result),
        ]  # fmt: skip
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        done = subprocess.run(
            command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if done.returncode != 0 or not result.exists():
            lines = done.stdout.strip().splitlines() or ["no output"]
            errors = [line for line in lines if "Error" in line or "Exception" in line]
            raise DistributedStepFailed(
                f"{key.rsplit(':', 1)[-1]} in {processes} processes failed (exit {done.returncode}): "
                f"{(errors or lines)[-1].strip()[:300]}"
            )
        return pickle.loads(result.read_bytes())


def task_runner(runtime):
    """The Prefect task runner of ``runtime.task_runner`` for flows that submit independent tasks.

    thread: Prefect's thread pool, one task at a time (a small CPU gains nothing from more).
    dask: ``prefect_dask.DaskTaskRunner`` on the cluster at ``runtime.dask_address``, or on a local
    cluster of ``runtime.dask_workers`` in-process workers (no network) when no address is set.
    """
    if runtime.task_runner == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if runtime.dask_address:
        return DaskTaskRunner(address=runtime.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": runtime.dask_workers,
            "threads_per_worker": 1,
            "processes": False,
            "dashboard_address": None,
        }
    )


def _worker(job: Path, result: Path) -> None:
    spec = pickle.loads(job.read_bytes())
    module, _ = spec["step"].split(":", 1)
    importlib.import_module(module)  # registers its @data_parallel steps
    # This file runs as __main__ here; the steps registered with the imported flows.distributed.
    steps = importlib.import_module("flows.distributed")._STEPS
    value = steps[spec["step"]](**spec["kwargs"])
    if int(os.environ.get("RANK", "0")) == 0:
        result.write_bytes(pickle.dumps(value))


if __name__ == "__main__":
    import flows  # noqa: F401  (offline defaults, project Prefect home)

    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
