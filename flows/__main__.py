"""Command line for the pipeline stages: pgg STAGE [--method M] [--params params.yaml] (or python -m flows).

``pgg run`` runs the whole DVC pipeline against one Prefect server (what ``make run`` does); extra
arguments go to ``dvc repro`` (e.g. ``pgg run align_pgg``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import flows  # noqa: F401  (sets PREFECT_HOME and offline defaults before prefect loads)
from flows.config import DEFAULT_PARAMS, load_or_exit

STAGES = {
    "prepare": "write the prepared splits under data/",
    "summarize-warmstart": "encoder cache + MLE warm start",
    "summarize-align": "the loop for one --method (pgg, mle, seqpg)",
    "summarize-evaluate": "test ROUGE for one --method (lead, warmstart, pgg, mle, seqpg)",
    "summarize": "the whole summarization pipeline",
    "prompt-embed": "task-model encoding of data.prompt's splits (cached, shared by all methods)",
    "prompt-train": "the prompt search for one --method (pgg, seqpg, random)",
    "prompt-evaluate": "select on dev, test accuracy for one --method (none, manual, random, seqpg, pgg)",
    "prompt": "the whole prompt pipeline for data.prompt",
    "guidance-fit": "token reward model (+ sequence baseline) on guidance_fit.data",
}

# The --method choices of each stage that takes one: argparse rejects anything else (exit 2) before
# params are read, Prefect starts or a folder is made.
METHODS = {
    "summarize-align": ("pgg", "mle", "seqpg"),
    "summarize-evaluate": ("lead", "warmstart", "pgg", "mle", "seqpg"),
    "prompt-train": ("pgg", "seqpg", "random"),
    "prompt-evaluate": ("none", "manual", "random", "seqpg", "pgg"),
}

UNTRACKED_STAGES = {"prepare", "summarize-warmstart", "prompt-embed"}  # stages that log nothing to MLflow


def build_parser(prog: str = "pgg") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    stages.add_parser("run", help="the whole pipeline: dvc repro [ARGS] against one Prefect server")
    for name, description in STAGES.items():
        stage = stages.add_parser(name, help=description, description=description)
        if name in METHODS:
            stage.add_argument("--method", required=True, choices=METHODS[name])
        stage.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    return parser


def main(argv: list[str] | None = None, prog: str = "pgg") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # everything after `run` belongs to dvc repro, unparsed
        import os

        from flows.server import run_with_server

        # the stages call `python` and `dvc`: this interpreter's, even when the venv is not activated
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return run_with_server(["dvc", "repro", *argv[1:]])
    args = build_parser(prog).parse_args(argv)
    method = getattr(args, "method", None)
    config = load_or_exit(args.params)  # validates before anything heavy is imported

    from flows.tracking import TrackingUnavailable, check_reachable, tracking_uri

    if args.stage not in UNTRACKED_STAGES:  # one line, before torch loads, Prefect starts or anything trains
        try:
            check_reachable(tracking_uri(config))
        except TrackingUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    from components.data import DataError
    from components.preferences import PreferenceError
    from flows.checkpoints import CheckpointError

    try:
        return _run(args.stage, method, config)
    except (DataError, PreferenceError) as err:  # bad user data: one line, exit 2, nothing written
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, TrackingUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run(stage: str, method: str | None, config) -> int:
    if stage == "prepare":
        from flows.prepare import check_inputs, prepare

        check_inputs(config)  # your own data is checked here, before any flow run
        counts = prepare(config)
        print(f"prepared {sum(counts.values())} rows into {config.data.prepared_dir}")
    elif stage.startswith("summarize"):
        from flows import summarization as s
        from flows.prepare import check_prepared

        check_prepared(config)  # before any flow run: a stale split is one line, exit 2

        if stage == "summarize-warmstart":
            print(f"warm start: {s.warmstart_flow(config)}")
        elif stage == "summarize-align":
            rows = s.align_flow(config, method)
            print(f"{method}: {len(rows)} iterations, last {rows[-1] if rows else {}}")
        elif stage == "summarize-evaluate":
            print(f"{method}: {s.evaluate_flow(config, method)}")
        else:
            print(s.summarization_pipeline(config))
    elif stage.startswith("prompt"):
        from flows import prompt as p

        p.check_verbalizers(config)  # before any flow run: a verbalizer of two tokens stops here
        if stage == "prompt-embed":
            print(f"embeddings: {p.embed_flow(config)}")
        elif stage == "prompt-train":
            rows = p.search_flow(config, method)
            print(f"{method}: {len(rows)} log rows, last {rows[-1] if rows else {}}")
        elif stage == "prompt-evaluate":
            print(f"{method}: {p.evaluate_flow(config, method)}")
        else:
            print(p.prompt_pipeline(config))
    elif stage == "guidance-fit":
        from flows import guidance_fit as g

        g.read_split(config.guidance_fit, config.runtime.seed)  # bad data stops here, before any flow run
        print(g.guidance_fit_flow(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m flows"))
