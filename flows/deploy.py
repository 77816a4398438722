"""Deployment entry flows: JSON-able parameters in, a whole task pipeline out, as an experiment.

The task pipelines take a validated ``Config``; a deployment can only pass JSON, so these thin flows
take a params file and dotted overrides, prepare the data and run the pipeline. A deployment run is an
experiment: it writes its prepared data, checkpoints and metrics under ``experiments/<flow run id>/``
and its results to MLflow, never into the workspace's DVC outputs (data/, runs/, metrics/). The parent
flow run logs every stage's outcome and the command that shows that stage's logs.

``prefect.yaml`` deploys them to a ``process`` work pool; for a quick local schedule without a work pool:

    python -m flows.deploy serve --cron "0 3 * * *"        # all three flows on one cron; Ctrl-C stops
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

import flows  # noqa: F401  (sets PREFECT_HOME and offline defaults before prefect runs anything)
from flows.config import PROJECT_ROOT, Config, ParamsError, load_params

EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"  # git-ignored; one folder per deployment run


class ExplainedFailure(Exception):
    """A failure the run has already explained in one line (a bad override, a failed stage)."""


class _NoTracebackForExplained(logging.Filter):
    """Prefect logs the traceback of whatever ends a top-level flow run; for an explained failure that
    is the traceback of its own result lookup, noise under the one line that says what went wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ExplainedFailure))


logging.getLogger("prefect.flow_runs").addFilter(_NoTracebackForExplained())


def experiment_dir(flow_run_id: str | None) -> Path:
    return EXPERIMENTS_DIR / (flow_run_id or "local")


def _folder_overrides(folder: Path) -> dict[str, str]:
    """Every path a pipeline writes, moved into the run's own folder (metrics/ is beside runs/)."""
    return {
        "data.prepared_dir": str(folder / "data"),
        "runtime.runs_dir": str(folder / "runs"),
        "guidance_fit.output_dir": str(folder / "runs" / "guidance_fit" / "model"),
        "guidance_fit.report": str(folder / "metrics" / "guidance_fit.json"),
    }


def _config(params_path: str, overrides: dict[str, Any] | None, folder: Path | None = None) -> Config:
    """The params file with the overrides (and the run's folder) applied. An error the overrides cause
    names the override as its source, not the params file."""
    path = Path(params_path)
    path = path if path.is_absolute() else PROJECT_ROOT / path
    config = load_params(path)  # the file's own errors name the file
    if not overrides and folder is None:
        return config
    try:
        return load_params(path, {**(overrides or {}), **(_folder_overrides(folder) if folder else {})})
    except ParamsError as err:
        problem = str(err).removeprefix(f"{path}: ").removeprefix("-S ")  # config names a CLI -S source
        raise ParamsError(
            f"bad override {problem}; fix the run's overrides parameter ({path.name} itself is valid)"
        ) from None


def _stages(parent_id: str) -> list:
    """(flow name, flow run) of every subflow run under ``parent_id``, nested ones too, in start order."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    found, frontier = [], [parent_id]
    with get_client(sync_client=True) as client:
        while frontier:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
            )
            found += children
            frontier = [child.id for child in children]
        names = {flow_id: client.read_flow(flow_id).name for flow_id in {run.flow_id for run in found}}
    found.sort(key=lambda run: run.start_time or run.expected_start_time)
    return [(names[run.flow_id], run) for run in found]


def _report_stages(parent_id: str | None) -> str | None:
    """One log line per stage: its outcome and how to read its logs. Returns the innermost failure."""
    if parent_id is None:
        return None
    logger, failure = get_run_logger(), None
    for name, run in _stages(parent_id):
        state = run.state
        outcome = state.name if state.is_completed() else f"{state.name}: {state.message}"
        method = run.parameters.get("method")  # a stage run per method: say which
        line = (
            f"stage {name}{f'[{method}]' if method else ''}: {outcome} (logs: prefect flow-run logs {run.id})"
        )
        if state.is_completed():
            logger.info(line)
        else:
            logger.error(line)
            failure = line  # the last to start is the innermost: the stage that raised
    return failure


def _failed(message: str):
    get_run_logger().error(message)
    return Failed(message=message, data=ExplainedFailure(message))


def _experiment(params_path: str, overrides: dict[str, Any] | None, pipeline: Callable[[Config], dict]):
    """Run ``pipeline`` as an experiment in its own folder; a bad override or a failed stage ends the
    run Failed with one line that says why (the failed stage's own logs hold the traceback)."""
    from prefect.runtime import flow_run

    from flows.tracking import overrides_tag, run_tags

    logger, run_id = get_run_logger(), flow_run.id
    folder = experiment_dir(run_id)
    try:
        config = _config(params_path, overrides, folder)
    except ParamsError as err:
        return _failed(str(err))
    logger.info(f"experiment folder {folder} (data/, runs/, metrics/); overrides {overrides_tag(overrides)}")
    tags = {
        "overrides": overrides_tag(overrides),
        "experiment_dir": str(folder),
        "prefect_flow_run_id": run_id,
    }
    with run_tags(tags):
        try:
            result = pipeline(config)
        except Exception as err:  # noqa: BLE001  (the stage's own run logged the traceback)
            return _failed(_report_stages(run_id) or f"{type(err).__name__}: {err}")
    _report_stages(run_id)
    return result


def _summarize(config: Config) -> dict:
    from flows.prepare import prepare
    from flows.summarization import summarization_pipeline

    prepare(config)  # into the run's folder: deterministic and cheap
    return summarization_pipeline(config)


def _prompt(config: Config) -> dict:
    from flows.prepare import prepare
    from flows.prompt import prompt_pipeline

    prepare(config)
    return prompt_pipeline(config)


def _fit_guidance(config: Config) -> dict:
    from flows.guidance_fit import guidance_fit_flow

    return guidance_fit_flow(config)


@flow(name="pgg-summarization")
def summarization_deployment(
    params_path: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> dict:
    """prepare + the summarization pipeline. ``overrides``: {"loop.summarization.policy_steps": 100}."""
    return _experiment(params_path, overrides, _summarize)


@flow(name="pgg-prompt")
def prompt_deployment(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict:
    """prepare + the prompt pipeline for data.prompt (dataset and data seed)."""
    return _experiment(params_path, overrides, _prompt)


@flow(name="pgg-guidance-fit")
def guidance_fit_deployment(
    params_path: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> dict:
    """A token reward model on guidance_fit.data (the synthetic demo set when it is the default path)."""
    return _experiment(params_path, overrides, _fit_guidance)


DEPLOYMENTS = {
    "summarization": summarization_deployment,
    "prompt": prompt_deployment,
    "guidance-fit": guidance_fit_deployment,
}


def serve(tasks: list[str], cron: str, params_path: str) -> None:
    """Serve the chosen task flows from this process on a cron schedule (active while it runs)."""
    from prefect import serve as prefect_serve

    prefect_serve(
        *(
            DEPLOYMENTS[task].to_deployment(
                name="local", cron=cron, parameters={"params_path": params_path, "overrides": {}}
            )
            for task in tasks
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--task", choices=[*DEPLOYMENTS, "all"], default="all")
    parser.add_argument("--cron", default="0 3 * * *", help="cron schedule (default: daily at 03:00)")
    parser.add_argument("--params", default="params.yaml", help="params file, relative to the project root")
    args = parser.parse_args(argv)
    try:
        _config(args.params, None)  # a bad params file fails now, not at the first scheduled run
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    serve(list(DEPLOYMENTS) if args.task == "all" else [args.task], args.cron, args.params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
