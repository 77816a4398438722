"""Deployment entry flows: JSON-able parameters in, a whole task pipeline out.

The task pipelines take a validated ``Config``; a deployment can only pass JSON, so these thin flows
take a params file and dotted overrides, prepare the data and run the pipeline. ``prefect.yaml``
deploys them to a ``process`` work pool; for a quick local schedule without a work pool:

    python -m flows.deploy serve --cron "0 3 * * *"        # both tasks; Ctrl-C stops serving
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow

import flows  # noqa: F401  (sets PREFECT_HOME and offline defaults before prefect runs anything)
from flows.config import PROJECT_ROOT, Config, load_params


def _config(params_path: str, overrides: dict[str, Any] | None) -> Config:
    path = Path(params_path)
    return load_params(path if path.is_absolute() else PROJECT_ROOT / path, overrides)


@flow(name="pgg-summarization")
def summarization_deployment(
    params_path: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> dict:
    """prepare + the summarization pipeline. ``overrides``: {"loop.summarization.policy_steps": 100}."""
    from flows.prepare import prepare
    from flows.summarization import summarization_pipeline

    config = _config(params_path, overrides)
    prepare(config)  # deterministic and cheap: a fresh checkout or a changed data section just works
    return summarization_pipeline(config)


@flow(name="pgg-prompt")
def prompt_deployment(params_path: str = "params.yaml", overrides: dict[str, Any] | None = None) -> dict:
    """prepare + the prompt pipeline for data.prompt (dataset and data seed)."""
    from flows.prepare import prepare
    from flows.prompt import prompt_pipeline

    config = _config(params_path, overrides)
    prepare(config)
    return prompt_pipeline(config)


@flow(name="pgg-guidance-fit")
def guidance_fit_deployment(
    params_path: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> dict:
    """A token reward model on guidance_fit.data (the synthetic demo set when it is the default path)."""
    from flows.guidance_fit import guidance_fit_flow

    return guidance_fit_flow(_config(params_path, overrides))


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
    _config(args.params, None)  # a bad params file fails now, not at the first scheduled run
    serve(list(DEPLOYMENTS) if args.task == "all" else [args.task], args.cron, args.params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
