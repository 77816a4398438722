"""prepare: raw corpora -> deterministic splits under data/ (a DVC output).

Everything is read and checked before the first file is written, so bad input leaves data/ as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task

from components import data
from flows.common import atomic_write_json
from flows.config import Config
from flows.stage_code import code_hash


def summarization_source(config: Config) -> data.SummarizationSource:
    settings = config.data.summarization
    return data.summarization_source(
        settings.dataset,
        config.data.root,
        settings.hub_config,
        settings.source_column,
        settings.target_column,
        settings.id_column,
    )


def _worth_retrying(task, task_run, state) -> bool:
    """Retry hub downloads (the network); bad local data fails the same way every time."""
    try:
        state.result()
    except data.DataError as err:
        return "cannot load hub dataset" in str(err)
    except Exception:
        return True
    return True


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_worth_retrying)
def load_summaries(config: Config) -> dict[str, list[data.SummaryExample]]:
    settings = config.data.summarization
    source = summarization_source(config)
    if source.kind == "hub":
        splits = {
            name: data.load_hub_summarization(
                source.location,
                name,
                settings.max_train_examples if name == "train" else settings.max_eval_examples,
                source.hub_config,
                source.columns,
            )
            for name in data.SPLITS
        }
    else:
        splits = data.load_summary_splits(
            source, settings.validation_fraction, settings.test_fraction, settings.split_salt, settings.target
        )
    if settings.max_train_examples:
        splits["train"] = splits["train"][: settings.max_train_examples]
    if settings.max_eval_examples:
        for name in ("validation", "test"):
            splits[name] = splits[name][: settings.max_eval_examples]
    return splits


def _blank_ok(config: Config) -> bool:
    return config.data.prompt.blank_text != "error"


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_worth_retrying)
def load_few_shot(config: Config, dataset: str, seed: int) -> dict[str, list[data.ClassificationExample]]:
    return {
        split: data.load_fsc(config.data.root, dataset, seed, split, _blank_ok(config))
        for split in data.FEW_SHOT_SPLITS
    }


def own_few_shot_folder(config: Config) -> Path:
    settings = config.data.prompt
    return settings.path or config.data.root / settings.dataset


def few_shot_source(config: Config, dataset: str, seed: int) -> Path:
    """The folder a few-shot dataset is read from: data.prompt's own, or a preset's under data.root."""
    settings = config.data.prompt
    if not settings.is_preset and (dataset, seed) == (settings.dataset, settings.seed):
        return own_few_shot_folder(config)
    return data.fsc_dir(config.data.root, dataset, seed)


def load_own_few_shot(config: Config) -> dict[str, list[data.ClassificationExample]]:
    """data.prompt's own folder (not a preset): train/dev/test with params' columns and verbalizers."""
    settings = config.data.prompt
    return data.load_few_shot_folder(
        own_few_shot_folder(config),
        settings.text_column,
        settings.label_column,
        settings.verbalizers,
        _blank_ok(config),
    )


def check_inputs(config: Config) -> None:
    """Read your own data (not the embedded presets, not a hub download) and raise DataError on the
    first problem: the CLI calls it before any flow starts, so bad data is one line and exit 2."""
    if summarization_source(config).kind in ("file", "folder"):
        load_summaries.fn(config)
    if not config.data.prompt.is_preset:
        folder = str(own_few_shot_folder(config))
        data.apply_blank_text(load_own_few_shot(config), config.data.prompt.blank_text, folder)


def blank_text_line(name: str, blank_text: str, blank: dict[str, int]) -> str | None:
    """The line prepare prints for a dataset with blank-text rows (None without any): what it did with
    how many, per split."""
    if not any(blank.values()):
        return None
    done = {"keep": "kept", "drop": "dropped"}[blank_text]
    counts = ", ".join(f"{split} {n}" for split, n in blank.items())
    other = "drop or error" if blank_text == "keep" else "keep or error"
    return f"{name}: {done} rows with blank text ({counts}); data.prompt.blank_text: {other} to change that"


def summarization_dir(config: Config) -> Path:
    return config.data.prepared_dir / "summarization"


PREPARED_WITH = "prepared_with.json"  # the data.summarization params (and code) the splits were written with
CODE_KEY = "code"  # PREPARED_WITH's hash of the prepare stage's code (flows/stage_code.py)


def _prepared_with(config: Config) -> dict:
    return {**config.data.summarization.model_dump(mode="json"), CODE_KEY: code_hash("prepare")}


def check_prepared(config: Config) -> None:
    """Raise DataError when data.summarization in params, or the prepare stage's code, differs from what
    the prepared splits were written with (e.g. a new test_fraction and a stale data/): a flow would read
    the old split silently. Splits without the record (written by hand) are not checked."""
    record = summarization_dir(config) / PREPARED_WITH
    if not record.exists():
        return
    written = json.loads(record.read_text())
    wanted = _prepared_with(config)
    code = wanted.pop(CODE_KEY)
    for key, value in wanted.items():
        if written.get(key) != value:
            raise data.DataError(
                f"{summarization_dir(config)} was prepared with data.summarization.{key}="
                f"{written.get(key)!r} but params say {value!r}: run `python -m flows prepare` "
                "(or `dvc repro prepare`)"
            )
    if written.get(CODE_KEY) != code:
        raise data.DataError(
            f"{summarization_dir(config)} was prepared by other code than the prepare stage runs now (an "
            "edit to a file dvc.yaml lists for it): run `python -m flows prepare` (or `dvc repro prepare`)"
        )


def prompt_dir(config: Config, dataset: str, seed: int) -> Path:
    return config.data.prepared_dir / "prompt" / dataset / str(seed)


@flow(name="prepare")
def prepare(config: Config) -> dict[str, int]:
    """Write every split pgg trains or evaluates on; return row counts (also saved as stats.json).

    Every few-shot preset under data.root is prepared (each data seed; data.prompt's preset must be
    there), and data.prompt's own folder when it names one."""
    summaries = load_summaries(config)
    few_shot = {
        (dataset, seed): load_few_shot(config, dataset, seed)
        for dataset in data.VERBALIZERS
        if dataset == config.data.prompt.dataset or (config.data.root / data.FSC_DIR / dataset).is_dir()
        for seed in data.FSC_SEEDS
    }
    if not config.data.prompt.is_preset:
        few_shot[(config.data.prompt.dataset, config.data.prompt.seed)] = load_own_few_shot(config)
    blank_text = config.data.prompt.blank_text
    for (dataset, seed), splits in few_shot.items():  # all applied before the first write
        source = str(few_shot_source(config, dataset, seed))
        few_shot[dataset, seed], blank = data.apply_blank_text(splits, blank_text, source)
        if line := blank_text_line(f"{dataset}/{seed}", blank_text, blank):
            print(line)
    counts: dict[str, int] = {}
    for split, examples in summaries.items():
        data.write_jsonl(summarization_dir(config) / f"{split}.jsonl", examples)
        counts[f"summarization/{split}"] = len(examples)
    atomic_write_json(summarization_dir(config) / PREPARED_WITH, _prepared_with(config))
    for (dataset, seed), splits in few_shot.items():
        for split, examples in splits.items():
            data.write_jsonl(prompt_dir(config, dataset, seed) / f"{split}.jsonl", examples)
            counts[f"prompt/{dataset}/{seed}/{split}"] = len(examples)
    atomic_write_json(config.data.prepared_dir / "stats.json", counts)
    return counts
