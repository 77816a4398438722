"""prepare: raw corpora -> deterministic splits under data/ (a DVC output)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from components import data
from flows.common import atomic_write_json
from flows.config import Config


@task(retries=2, retry_delay_seconds=2)
def load_summaries(config: Config) -> dict[str, list[data.SummaryExample]]:
    settings = config.data.summarization
    if settings.dataset == "bbc":
        examples = data.load_bbc(config.data.root, settings.target)
        splits = data.split_examples(
            examples, settings.validation_fraction, settings.test_fraction, settings.split_salt
        )
    else:
        splits = {
            name: data.load_hub_summarization(
                settings.dataset,
                name,
                settings.max_train_examples if name == "train" else settings.max_eval_examples,
            )
            for name in data.SPLITS
        }
    if settings.max_train_examples:
        splits["train"] = splits["train"][: settings.max_train_examples]
    if settings.max_eval_examples:
        for name in ("validation", "test"):
            splits[name] = splits[name][: settings.max_eval_examples]
    return splits


@task(retries=2, retry_delay_seconds=2)
def load_few_shot(config: Config, dataset: str, seed: int) -> dict[str, list[data.ClassificationExample]]:
    return {
        split: data.load_fsc(config.data.root, dataset, seed, split) for split in ("train", "dev", "test")
    }


def summarization_dir(config: Config) -> Path:
    return config.data.prepared_dir / "summarization"


def prompt_dir(config: Config, dataset: str, seed: int) -> Path:
    return config.data.prepared_dir / "prompt" / dataset / str(seed)


@flow(name="prepare")
def prepare(config: Config) -> dict[str, int]:
    """Write every split pgg trains or evaluates on; return row counts (also saved as stats.json)."""
    counts: dict[str, int] = {}
    for split, examples in load_summaries(config).items():
        data.write_jsonl(summarization_dir(config) / f"{split}.jsonl", examples)
        counts[f"summarization/{split}"] = len(examples)
    for dataset in data.VERBALIZERS:
        for seed in data.FSC_SEEDS:
            for split, examples in load_few_shot(config, dataset, seed).items():
                data.write_jsonl(prompt_dir(config, dataset, seed) / f"{split}.jsonl", examples)
                counts[f"prompt/{dataset}/{seed}/{split}"] = len(examples)
    atomic_write_json(config.data.prepared_dir / "stats.json", counts)
    return counts
