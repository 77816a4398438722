"""Command line for the pipeline stages: python -m flows STAGE [--method M] [--params params.yaml]."""

from __future__ import annotations

import argparse
import sys

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

UNTRACKED_STAGES = {"prepare", "summarize-warmstart", "prompt-embed"}  # stages that log nothing to MLflow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows",
        description=__doc__,
        epilog="\n".join(f"  {k:22s}{v}" for k, v in STAGES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--method", help="method for align/evaluate stages")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    config = load_or_exit(args.params)  # validates before anything heavy is imported
    if args.stage.endswith(("-align", "-evaluate", "-train")) and not args.method:
        parser.error(f"{args.stage} needs --method")

    from flows.tracking import TrackingUnavailable, check_reachable, tracking_uri

    if args.stage not in UNTRACKED_STAGES:  # one line, before torch loads, Prefect starts or anything trains
        try:
            check_reachable(tracking_uri(config))
        except TrackingUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    from components.preferences import PreferenceError
    from flows.checkpoints import CheckpointError

    try:
        return _run(args.stage, args.method, config)
    except PreferenceError as err:  # bad user data: one line, exit 2, nothing written
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, TrackingUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run(stage: str, method: str | None, config) -> int:
    if stage == "prepare":
        from flows.prepare import prepare

        counts = prepare(config)
        print(f"prepared {sum(counts.values())} rows into {config.data.prepared_dir}")
    elif stage.startswith("summarize"):
        from flows import summarization as s

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
    sys.exit(main())
