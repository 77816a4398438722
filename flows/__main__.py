"""Command line for the pipeline stages: pgg STAGE [--method M] [--params FILE] [-S key=value ...]
(or python -m flows). --params FILE is laid over params.yaml (it holds only the keys it changes); each
-S key=value (dotted key, YAML value) is laid over both. Relative paths resolve against the project root.

``pgg STAGE`` runs the stage's flow directly, bypassing DVC (dvc.lock is not updated); ``pgg run``
goes through DVC against one Prefect server (what ``make run`` does): ``dvc repro [ARGS]``, or with -S
or --params ``dvc exp run -S ... [ARGS]`` so DVC records the experiment (e.g. ``pgg run align_pgg``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

import flows  # noqa: F401  (sets PREFECT_HOME and offline defaults before prefect loads)
from flows.config import DEFAULT_PARAMS, ParamsError, _flatten, check_data_root, load_or_exit

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

# dvc.yaml's stage for each CLI stage (and method): the bypass note names the way through DVC
DVC_STAGES = {
    "prepare": "prepare",
    "summarize-warmstart": "summarize_warmstart",
    "summarize-align": "align_{method}",
    "summarize-evaluate": "evaluate_summarization@{method}",
    "summarize": "evaluate_summarization",
    "prompt-embed": "prompt_embed",
    "prompt-train": "prompt_{method}",
    "prompt-evaluate": "evaluate_prompt@{method}",
    "prompt": "evaluate_prompt",
    "guidance-fit": "guidance_fit",
}


def _add_params_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        default=str(DEFAULT_PARAMS),
        help="params file laid over params.yaml (only the keys it changes)",
    )
    parser.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="set one param: a dotted key and a YAML value (repeatable), e.g. -S loop.prompt.policy_steps=20",
    )  # fmt: skip


def build_parser(prog: str = "pgg") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    stages.add_parser(
        "run",
        help="the whole pipeline through DVC (dvc repro, or dvc exp run with -S) against one Prefect server",
    )
    for name, description in STAGES.items():
        stage = stages.add_parser(
            name, help=description, description=f"{description} (bypasses DVC: see `pgg run`)"
        )
        if name in METHODS:
            stage.add_argument("--method", required=True, choices=METHODS[name])
        _add_params_options(stage)
    return parser


def build_run_parser(prog: str = "pgg") -> argparse.ArgumentParser:
    """``pgg run``'s own options; every other argument goes to dvc (targets, -f, ...: see dvc repro --help)."""
    parser = argparse.ArgumentParser(
        prog=f"{prog} run",
        allow_abbrev=False,  # --p... may be a dvc option
        description="Run the pipeline through DVC against one Prefect server: `dvc repro [ARGS]`, or with -S "
        "or --params `dvc exp run -S key=value ... [ARGS]` so DVC records the experiment (its values are "
        "written into params.yaml, as dvc exp run does). Other arguments go to dvc: see `dvc repro --help`.",
    )
    _add_params_options(parser)
    return parser


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """-S key=value pairs -> {dotted key: YAML-typed value}; a malformed one is a ParamsError."""
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"-S {pair}: expected KEY=VALUE with a dotted key, e.g. -S runtime.seed=1")
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ParamsError(
                f"-S {pair}: the value is not valid YAML ({getattr(err, 'problem', err)})"
            ) from None
    return overrides


def load_args_or_exit(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(config, overrides) of ``--params`` and ``-S``; a bad one prints its one line and exits 2."""
    try:
        overrides = parse_overrides(args.overrides)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return load_or_exit(args.params, overrides), overrides


def dvc_value(value: Any) -> str:
    """A YAML value as dvc exp run -S (Hydra's override grammar) reads it back unchanged."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(dvc_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{dvc_value(item)}" for key, item in value.items()) + "}"
    return json.dumps(value)  # numbers, true/false, null


def run_command(argv: list[str], prog: str = "pgg") -> list[str]:
    """The dvc command of ``pgg run ARGV``; -S and --params are validated first (exit 2 on a bad one)."""
    args, rest = build_run_parser(prog).parse_known_args(argv)
    _, overrides = load_args_or_exit(args)
    if Path(args.params).resolve() == DEFAULT_PARAMS.resolve():
        changed = overrides
    else:  # the overlay's keys that change a value become -S overrides: dvc exp run writes them into params.yaml
        current = dict(_flatten(yaml.safe_load(DEFAULT_PARAMS.read_text())))
        overlay = dict(_flatten(yaml.safe_load(Path(args.params).read_text()) or {}))
        changed = {**{k: v for k, v in overlay.items() if current.get(k) != v}, **overrides}
    if not changed:
        return ["dvc", "repro", *rest]
    sets = [arg for key, value in changed.items() for arg in ("-S", f"{key}={dvc_value(value)}")]
    return ["dvc", "exp", "run", *sets, *rest]


def check_stage_inputs(stage: str, config) -> None:
    """What the stage reads (your data, the splits `pgg prepare` writes): one line (exit 2) here, before
    Prefect starts or anything is written."""
    from flows.prepare import check_inputs, check_prepared, own_few_shot_folder, prompt_dir, summarization_dir

    if stage == "prepare":
        prompt = config.data.prompt
        if config.data.summarization.dataset == "bbc" or prompt.is_preset:
            check_data_root(config)  # the presets live in corpora/
        if not prompt.is_preset and not own_few_shot_folder(config).is_dir():
            param = "data.prompt.path" if prompt.path is not None else "data.prompt.dataset (under data.root)"
            raise ParamsError(f"{param}: folder {own_few_shot_folder(config)} does not exist")
        check_inputs(config)  # your own data is read here
    elif stage.startswith("summarize"):
        if not (summarization_dir(config) / "train.jsonl").is_file():
            raise ParamsError(
                f"{summarization_dir(config)} holds no prepared splits: run `pgg prepare` first"
            )
        check_prepared(config)  # a stale split
    elif stage.startswith("prompt"):
        from flows.prompt import check_verbalizers

        folder = prompt_dir(config, config.data.prompt.dataset, config.data.prompt.seed)
        if not (folder / "train.jsonl").is_file():
            raise ParamsError(f"{folder} holds no prepared splits: run `pgg prepare` first")
        check_verbalizers(config)  # a verbalizer of two tokens
    else:
        check_preferences(config)


def bypass_note(stage: str, method: str | None, prog: str = "pgg") -> str:
    through = DVC_STAGES[stage].format(method=method)
    return f"note: {prog} {stage} bypasses DVC (dvc.lock is not updated); `pgg run {through}` runs it through DVC"


def main(argv: list[str] | None = None, prog: str = "pgg") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # pgg run's own options; everything else belongs to dvc, unparsed
        command = run_command(argv[1:], prog)

        from flows.server import run_with_server

        # the stages call `python` and `dvc`: this interpreter's, even when the venv is not activated
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return run_with_server(command)
    args = build_parser(prog).parse_args(argv)
    method = getattr(args, "method", None)
    config, _ = load_args_or_exit(args)  # validates before anything heavy is imported
    from flows.tracking import TrackingUnavailable, check_reachable, lost_mid_run, tracking_uri

    if args.stage not in UNTRACKED_STAGES:  # one line, before torch loads, Prefect starts or anything trains
        try:
            check_reachable(tracking_uri(config))
        except TrackingUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    from components.data import DataError
    from components.preferences import PreferenceError

    try:  # what the stage reads: one line, exit 2, before Prefect starts or anything is written
        check_stage_inputs(args.stage, config)
    except (ParamsError, DataError, PreferenceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if "DVC_STAGE" not in os.environ:  # dvc repro sets it for every stage command: there it is no bypass
        print(bypass_note(args.stage, method, prog), file=sys.stderr, flush=True)
    from flows.checkpoints import CheckpointError

    try:
        return _run(args.stage, method, config)
    except (DataError, PreferenceError) as err:  # bad user data: one line, exit 2, nothing written
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (CheckpointError, TrackingUnavailable, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception:
        lost = lost_mid_run(tracking_uri(config))
        if lost is None:
            raise
        print(f"error: {lost}", file=sys.stderr)
        return 1


def check_preferences(config) -> None:
    """guidance_fit.data read and split as the fit will; no untied pair (every list a tie) stops here."""
    from components.preferences import PreferenceError
    from flows import guidance_fit as g

    section = config.guidance_fit
    try:
        train, _ = g.read_split(section, config.runtime.seed)
    except PreferenceError as err:
        named = section.data in str(err) or "guidance_fit.data" in str(err)
        raise PreferenceError(str(err) if named else f"guidance_fit.data {section.data}: {err}") from None
    if not any(len(set(ranked.scores)) > 1 for ranked in train):
        raise PreferenceError(
            f"guidance_fit.data {section.data}: every training list is a tie (all scores equal), so there is "
            "no preferred candidate to learn from; give at least one list two different scores"
        )


def _run(stage: str, method: str | None, config) -> int:
    """The stage's flow; main checked its inputs already."""
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

        print(g.guidance_fit_flow(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m flows"))
