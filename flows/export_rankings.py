"""Export the summarization loop's own sampled, ranked lists from an MLflow run to pgg's K-wise JSONL,
ready for ``python -m flows guidance-fit`` (guidance_fit.data):

    python -m flows.export_rankings RUN_ID --out runs/guidance_fit/own-samples.jsonl

Reads every ``samples/iter-N.json`` table the pgg run logged (its first 20 articles per refit, sources
cut to 300 characters, each candidate with its preference score).
"""

from __future__ import annotations

import argparse
import sys

import flows  # noqa: F401  (offline defaults)


def export(run_id: str, out: str) -> int:
    import mlflow

    from components.preference_data import ranked_lists_from_rows, write_kwise_jsonl

    client = mlflow.MlflowClient()
    tables = sorted(f.path for f in client.list_artifacts(run_id, "samples") if f.path.endswith(".json"))
    lists = []
    for table in tables:
        payload = mlflow.artifacts.load_dict(f"runs:/{run_id}/{table}")
        rows = [dict(zip(payload["columns"], values, strict=True)) for values in payload["data"]]
        # articles are numbered per refit: keep lists of different refits apart
        lists += ranked_lists_from_rows([{**row, "article": (table, row["article"])} for row in rows])
    if not lists:
        raise ValueError(
            f"MLflow run {run_id} has no samples/iter-N.json tables; pick a pgg summarization run"
        )
    write_kwise_jsonl(lists, out)
    return len(lists)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.export_rankings", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_id", help="MLflow run id of a pgg summarization run")
    parser.add_argument("--out", default="runs/guidance_fit/own-samples.jsonl")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {export(args.run_id, args.out)} ranked lists to {args.out}")
    except Exception as err:  # mlflow raises its own types for an unknown run
        print(f"error: {str(err).splitlines()[0][:200]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
