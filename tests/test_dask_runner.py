"""runtime.task_runner: dask evaluates independent policies on a 2-worker local Dask cluster, with the
same results as the default (serial) thread runner."""

from __future__ import annotations

import pytest

from flows import summarization as s
from flows.config import load_params
from flows.distributed import hardware, task_runner
from tests.conftest import prepared_params
from tests.test_summarization_flow import TINY


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, data_root, prefect_server):
    return load_params(prepared_params(tmp_path_factory.mktemp("dask"), TINY))


def test_dask_runner_matches_the_serial_run(tiny_config, mlflow_uri):
    from prefect_dask import DaskTaskRunner

    warm = s.warmstart_flow(tiny_config)
    start_policy = s.runs_dir(tiny_config) / "warmstart"
    mle_out = s.runs_dir(tiny_config) / "dask-mle"
    fast = tiny_config.model_copy(
        update={"policy": load_params_override(tiny_config, {"lr": 0.02, "warmup_steps": 0})}
    )
    s.train_iteration.fn(
        "mle", 1, start_policy, None, mle_out, fast, 3, hardware(fast.runtime)
    )  # another policy
    policies = {"warmstart": warm, "mle": mle_out}

    serial_runtime = tiny_config.runtime
    dask_runtime = serial_runtime.model_copy(update={"task_runner": "dask", "dask_workers": 2})
    runner = task_runner(dask_runtime)
    assert isinstance(runner, DaskTaskRunner) and runner.cluster_kwargs["n_workers"] == 2
    assert runner.cluster_kwargs["processes"] is False  # in-process workers: no network

    serial = s.evaluate_policies.with_options(task_runner=task_runner(serial_runtime))(
        tiny_config, policies, "validation"
    )
    parallel = s.evaluate_policies.with_options(task_runner=runner)(tiny_config, policies, "validation")
    assert set(parallel) == {"warmstart", "mle"}
    assert parallel == serial
    assert parallel["warmstart"]["samples"] != parallel["mle"]["samples"]  # two real, distinct evaluations


def test_dask_address_connects_to_an_existing_cluster(tiny_config):
    runtime = tiny_config.runtime.model_copy(
        update={"task_runner": "dask", "dask_address": "tcp://127.0.0.1:8786"}
    )
    runner = task_runner(runtime)
    assert runner.address == "tcp://127.0.0.1:8786"


def load_params_override(config, summarization_policy: dict):
    policy = config.policy.summarization.model_copy(update=summarization_policy)
    return config.policy.model_copy(update={"summarization": policy})
