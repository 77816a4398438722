"""Command line for the pipeline stages: python -m flows STAGE [--params params.yaml]."""

from __future__ import annotations

import argparse
import sys

import flows  # noqa: F401  (sets PREFECT_HOME and offline defaults before prefect loads)
from flows.config import DEFAULT_PARAMS, load_or_exit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__)
    parser.add_argument("stage", choices=["prepare"])
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    config = load_or_exit(args.params)  # validates before anything heavy is imported

    if args.stage == "prepare":
        from flows.prepare import prepare

        counts = prepare(config)
        print(f"prepared {sum(counts.values())} rows into {config.data.prepared_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
