"""params.yaml -> typed, validated config. Loaded once per run; a bad value stops the run before any compute.

Every section forbids unknown keys, so a typo ("agregation") is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = PROJECT_ROOT / "params.yaml"

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
ListSize = Annotated[int, Field(ge=2, description="K: candidates ranked per input")]
Aggregation = Literal["avg", "sum", "softmax", "softmin"]
RankingLoss = Literal["listwise", "pairwise"]


class ParamsError(ValueError):
    """params.yaml is invalid; str() is the one-line message shown to the user."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- data -------------------------------------------------------------------------------------


class SummarizationData(Section):
    # bbc | cnn_dailymail | xsum (presets) | a .jsonl/.csv/.parquet file or a folder of train/validation/
    # test files (under data.root, or absolute) | a hub dataset name
    dataset: Annotated[str, Field(min_length=1)]
    hub_config: str | None  # hub datasets: the config name; None: the preset's (cnn_dailymail: 3.0.0)
    source_column: str | None  # None: the preset's; your own data names it
    target_column: str | None
    id_column: str | None  # the hash split's key (a file without splits); None: a hash of the source
    target: Literal["title", "summary"]  # bbc only
    validation_fraction: Fraction
    test_fraction: Fraction
    split_salt: str
    max_train_examples: PositiveInt | None
    max_eval_examples: PositiveInt | None

    @model_validator(mode="after")
    def _columns_known(self):
        from components.data import SUMMARIZATION_PRESETS

        given = [k for k in ("hub_config", "source_column", "target_column", "id_column") if getattr(self, k)]
        if self.dataset == "bbc" and given:
            raise ValueError(
                f"{given[0]}: bbc is a preset with fixed columns (article -> title|summary: see target); "
                "set it to null, or point dataset at your own file"
            )
        if self.dataset not in SUMMARIZATION_PRESETS and not (self.source_column and self.target_column):
            raise ValueError(
                f"dataset {self.dataset!r} is not a preset ({', '.join(SUMMARIZATION_PRESETS)}): set "
                "source_column and target_column to its columns"
            )
        return self


class PromptData(Section):
    # sst-2 | agnews (the LM-BFF 16-shot presets) | the name of your dataset: its folder under data.root
    # (or at path) holds train/dev/test as .tsv, .csv or .jsonl; the name also names runs and metrics
    dataset: str
    path: Path | None  # your dataset's folder, absolute or under data.root; None: data.root/dataset
    seed: int  # presets: the 16-shot data seed (13, 21, 42, 87, 100); yours: any integer, it names the run
    text_column: str | None  # your dataset; None: 'sentence' or 'text', whichever the file has
    label_column: str  # your dataset: a verbalizer word or its index 0..C-1
    verbalizers: tuple[str, ...] | None  # one one-token word per class, in label order; None: the preset's
    template: str | None  # the mlm task model's cloze ({input} {prompt} {mask}); None: the preset's
    # a row whose text is empty or whitespace (presets and yours): keep it as an empty input (published
    # splits hold such rows; their test set stays as published) | drop the row | error: stop the read
    blank_text: Literal["keep", "drop", "error"]

    @property
    def is_preset(self) -> bool:
        from components.data import VERBALIZERS

        return self.dataset in VERBALIZERS and self.path is None

    @field_validator("dataset")
    @classmethod
    def _a_name(cls, dataset):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", dataset):
            raise ValueError(
                "must be a name (letters, digits, '.', '_', '-'): it names the run's folders; "
                "put a folder outside data.root in data.prompt.path"
            )
        return dataset

    @field_validator("verbalizers")
    @classmethod
    def _words(cls, verbalizers):
        if verbalizers is None:
            return None
        if len(verbalizers) < 2 or len(set(verbalizers)) != len(verbalizers):
            raise ValueError(f"needs at least 2 distinct words, one per class (got {list(verbalizers)})")
        for word in verbalizers:
            if not word.strip() or word != word.strip() or " " in word:
                raise ValueError(f"{word!r} is not one word; each class needs a one-token word")
        return verbalizers

    @field_validator("template")
    @classmethod
    def _cloze(cls, template):
        for field in ("{input}", "{prompt}", "{mask}"):
            if template is not None and template.count(field) != 1:
                raise ValueError(f"the template must hold {field} exactly once")
        return template

    @model_validator(mode="after")
    def _preset_or_own(self):
        from components.data import FSC_SEEDS, VERBALIZERS

        if self.is_preset and self.seed not in FSC_SEEDS:
            raise ValueError(
                f"seed: {self.dataset} is published for the 16-shot seeds {', '.join(map(str, FSC_SEEDS))}; "
                f"got {self.seed} (your own dataset takes any integer)"
            )
        if self.path is not None and self.dataset in VERBALIZERS:
            raise ValueError(f"dataset {self.dataset!r} is a preset; give your folder at path another name")
        if not self.is_preset and self.verbalizers is None:
            raise ValueError(
                f"verbalizers: dataset {self.dataset!r} is your own (presets: {', '.join(VERBALIZERS)}); "
                "list one word per class in label order"
            )
        if self.is_preset and self.verbalizers and len(self.verbalizers) != len(VERBALIZERS[self.dataset]):
            raise ValueError(
                f"verbalizers: {self.dataset} has {len(VERBALIZERS[self.dataset])} classes, "
                f"got {len(self.verbalizers)} words"
            )
        return self


class DataConfig(Section):
    root: Path
    prepared_dir: Path
    summarization: SummarizationData
    prompt: PromptData


# --- models -----------------------------------------------------------------------------------


class SummarizationModels(Section):
    policy: str  # minilm | tiny | any HF seq2seq name (t5-small)
    decoder_layers: PositiveInt | None  # warm starts from an encoder checkpoint only
    freeze_encoder: bool  # frozen encoder => its states are computed once and cached
    encoder_cache_storage: Literal["int8", "fp16"]  # how the cached states are stored on disk
    source_prefix: str  # "summarize: " for T5
    reward_backbone: str
    # causal_lm: one stack reads [article; summary] causally, so r_t sees the article and y_<=t through
    # pretrained self-attention. seq2seq: the summary goes through a decoder whose cross-attention a
    # warm start from an encoder checkpoint leaves random (a frozen one then cannot read the article).
    reward_backbone_kind: Literal["causal_lm", "encoder", "seq2seq"]
    reward_decoder_layers: PositiveInt | None  # seq2seq reward backbones only


class PromptModels(Section):
    policy: str  # minilm | tiny | any causal LM name (distilgpt2)
    task_model: Literal[
        "prototype", "prefix_lm", "mlm"
    ]  # prefix_lm: prompt-conditioned MiniLM (filled reading)
    task_model_name: str  # roberta-large for the paper's mlm task model
    reward_backbone: str  # must share the policy's tokenizer (token rewards align by id)
    reward_backbone_kind: Literal["causal_lm", "encoder"]  # causal: r_t sees only a_<=t


class ModelsConfig(Section):
    summarization: SummarizationModels
    prompt: PromptModels


# --- sampling ---------------------------------------------------------------------------------


class SummarizationSampling(Section):
    k: ListSize
    top_k: NonNegativeInt
    top_p: Annotated[float, Field(gt=0.0, le=1.0)]
    temperature: PositiveFloat
    max_source_tokens: PositiveInt
    max_target_tokens: PositiveInt
    articles_per_iteration: PositiveInt


class PromptSampling(Section):
    k: ListSize
    prompt_length: PositiveInt
    top_k: PositiveInt
    temperature: PositiveFloat
    lists_per_step: PositiveInt  # a policy step samples lists_per_step x k prompts
    warmup_lists: PositiveInt  # lists from the initial policy before step 1 (the first guidance fit)
    # prompts scored per policy step (one example subset); null: lists_per_step x k. The authors' 16 is
    # not a multiple of k = 5, so its lists must be resampled (guidance.prompt.resampled_lists)
    prompts_per_step: PositiveInt | None

    @property
    def step_prompts(self) -> int:
        return self.prompts_per_step or self.lists_per_step * self.k


class SamplingConfig(Section):
    summarization: SummarizationSampling
    prompt: PromptSampling


# --- guidance ---------------------------------------------------------------------------------


class GuidanceSection(Section):
    loss: RankingLoss
    aggregation: Aggregation
    tau: PositiveFloat  # temperature of softmax/softmin aggregation
    head_hidden: PositiveInt
    squash: Literal["softplus", "sigmoid"]
    freeze_backbone: bool
    lr: PositiveFloat
    epochs: PositiveInt
    batch_size: PositiveInt  # lists per batch
    val_fraction: Fraction
    patience: PositiveInt
    grad_clip: PositiveFloat | None  # max grad norm of each fit step; null: no clipping
    plateau_factor: Fraction  # ReduceLROnPlateau on the held-out loss
    plateau_patience: NonNegativeInt
    min_lr: PositiveFloat
    refit: Literal["warm", "scratch"]  # re-fit from previous weights or from scratch
    preference: Literal["rouge", "embedding", "meteor", "task", "rankings"]
    rankings_file: Path | None  # JSONL of {"source", "candidates", "scores"}; preference: rankings

    @model_validator(mode="after")
    def _rankings_need_file(self):
        if self.preference == "rankings" and self.rankings_file is None:
            raise ValueError(
                "preference 'rankings' needs rankings_file: path to a JSONL of ranked candidates"
            )
        return self

    def trainer_config(self, seed: int, max_length: int, max_source_length: int):
        """The guidance trainer's ``GuidanceConfig``: this section's fields of the same name, plus the
        run's seed and token limits (which come from the sampling section)."""
        return _guidance_config(self, seed=seed, max_length=max_length, max_source_length=max_source_length)


def _guidance_config(section: Section, **extra):
    """``GuidanceConfig`` from the section's fields of the same name plus ``extra``."""
    from components.guidance_trainer import GuidanceConfig  # torch: only once a run needs it

    shared = {f.name for f in dataclasses.fields(GuidanceConfig)} & set(type(section).model_fields)
    return GuidanceConfig(**section.model_dump(include=shared - set(extra)), **extra)


class GuidanceFitSection(Section):
    """The standalone guidance fit (python -m flows guidance-fit): a token reward model on your data."""

    data: str  # .jsonl / .json / .parquet file (relative: to the project root) or a hub dataset name
    format: Literal["auto", "kwise", "trl"]
    backbone: str  # minilm | tiny | any HF name sharing the policy's tokenizer
    backbone_kind: Literal["causal_lm", "encoder"]
    freeze_backbone: bool  # frozen: the saved model is the head plus a reference to the base weights
    head_hidden: PositiveInt
    squash: Literal["softplus", "sigmoid"]
    loss: RankingLoss
    aggregation: Aggregation
    tau: PositiveFloat
    lr: PositiveFloat
    epochs: PositiveInt
    batch_size: PositiveInt  # lists per step
    val_fraction: Fraction  # share of records held out for early stopping and the report
    patience: PositiveInt
    grad_clip: PositiveFloat | None
    plateau_factor: Fraction
    plateau_patience: NonNegativeInt
    min_lr: PositiveFloat
    max_length: PositiveInt  # candidate tokens kept
    max_source_length: PositiveInt  # prompt tokens kept
    baseline_lr: PositiveFloat  # the Bradley-Terry sequence baseline's Adam lr
    baseline_epochs: PositiveInt
    baseline_batch_size: PositiveInt  # pairs per step
    heatmap_examples: PositiveInt  # held-out records shown in the token-reward heatmap
    output_dir: Path  # the model folder (relative: to the project root)
    report: Path  # the report JSON (DVC metrics)
    register_name: str  # MLflow registered model; alias "latest-fit" points at the newest fit

    def trainer_config(self, seed: int):
        return _guidance_config(self, seed=seed)


class PromptGuidanceSection(GuidanceSection):
    """The prompt task's guidance: which scored lists each refit learns from, and how much backbone trains."""

    # refit on the lists of the last window_blocks blocks (1: only those scored since the previous
    # fit; null: every list scored so far)
    window_blocks: PositiveInt | None
    # 0: the sampled lists of K consecutive prompts as they are; n: n lists of K drawn anew from each
    # scored batch (its prompts share one example subset, so any K of them form a fair list)
    resampled_lists: NonNegativeInt
    # with freeze_backbone false: only the top trainable_layers layers train (null: the whole backbone)
    trainable_layers: NonNegativeInt | None
    # before each refit after the first, this many fresh prompts of the current policy are scored (in
    # batches of a policy step's size) and join the fit's data: the authors' streamed fit data. 0: none
    fresh_prompts: NonNegativeInt

    @model_validator(mode="after")
    def _layers_need_trainable_backbone(self):
        if self.freeze_backbone and self.trainable_layers is not None:
            raise ValueError(
                "guidance.prompt.trainable_layers is set but freeze_backbone is true; set freeze_backbone "
                "to false or trainable_layers to null"
            )
        return self


class GuidanceSections(Section):
    summarization: GuidanceSection
    prompt: PromptGuidanceSection


# --- policy -----------------------------------------------------------------------------------


class SummarizationPolicy(Section):
    warmstart_steps: NonNegativeInt
    warmstart_lr: PositiveFloat
    warmup_steps: NonNegativeInt  # linear lr warm-up of every policy optimizer
    lr: PositiveFloat
    batch_size: PositiveInt
    grad_accumulation: PositiveInt
    grad_clip: PositiveFloat
    # pgg's w_t: reward (r_t / sum r, the paper's) | exp_reward (exp r_t / sum exp r, the authors'
    # code's exp_in_wmle: weights within a factor 3.7, so no reference token stops being learned)
    wmle_weighting: Literal["reward", "exp_reward"]
    reinforce_coef: NonNegativeFloat  # the paper's optional REINFORCE term with r as weights
    reinforce_mean: Literal["sequence", "token"]  # pgg's REINFORCE term: each sample | each token counts once
    reinforce_baseline: bool  # pgg's REINFORCE term: subtract the batch's token-mean reward
    entropy_coef: NonNegativeFloat
    seqpg_coef: PositiveFloat  # weight of the RLOO term of the sequence-level baseline
    # articles of each batch whose K samples enter the sampled terms (seqpg's RLOO, pgg's REINFORCE);
    # null: the whole batch. A sampled article costs about 6x an MLE one (K samples, K backward rows)
    sampled_articles: PositiveInt | None

    @model_validator(mode="after")
    def _sampled_within_batch(self):
        if self.sampled_articles is not None and self.sampled_articles > self.batch_size:
            raise ValueError(
                f"sampled_articles ({self.sampled_articles}) must be <= batch_size ({self.batch_size})"
            )
        return self

    def train_config(self, method: str, steps: int, lr: float, seed: int, sampling: SummarizationSampling):
        """``components.policy_trainer.PolicyTrainConfig`` for ``steps`` steps of ``method`` (the warm start
        is ``mle`` at ``warmstart_lr``): the fields of this section and of ``sampling`` with the same
        names, and the method's coefficients (seqpg's RLOO weight is ``seqpg_coef``; only pgg keeps the
        entropy bonus)."""
        from components.policy_trainer import PolicyTrainConfig  # torch: only once a run needs it

        names = {f.name for f in dataclasses.fields(PolicyTrainConfig)}
        values = {**sampling.model_dump(include=names), **self.model_dump(include=names)}
        values.update(
            method=method,
            steps=steps,
            lr=lr,
            seed=seed,
            reinforce_coef=self.seqpg_coef if method == "seqpg" else self.reinforce_coef,
            entropy_coef=self.entropy_coef if method == "pgg" else 0.0,
        )
        return PolicyTrainConfig(**values)


class PromptPolicySection(Section):
    lr: PositiveFloat  # Adam on the adaptor; high because the CPU default runs only 100 steps
    entropy_coef: NonNegativeFloat  # alpha of the max-entropy bonus
    adaptor_hidden: PositiveInt
    # z-score rewards within each batch (seqpg: per prompt; pgg: token rewards centred per position,
    # scaled by the batch std) so entropy_coef weighs the same for both; false: the raw formulas
    normalize_rewards: bool
    # pgg: after each real update, this many updates on guidance_samples fresh prompts scored by the
    # learned token reward alone (no task-model query); 0: every update is tied to real queries
    guidance_updates: NonNegativeInt
    guidance_samples: PositiveInt
    # pgg: weight each token by the sum of the token rewards from it to the prompt's end (reward-to-go)
    # instead of its own r_t
    reward_to_go: bool
    # pgg: token (each token weighted by its own r_t, the paper's) | sequence (every token by the prompt's
    # aggregated learned reward, seqpg's update on the learned reward: an ablation of the token credit) |
    # gap_spread (seqpg's gap reward, moved between a prompt's tokens by the guidance)
    guidance_credit: Literal["token", "sequence", "gap_spread"]
    # pgg: scored (REINFORCE on the step's task-model-scored prompts, r_t as credit) | learned (the
    # authors': each step updates on guidance_samples fresh prompts scored by the learned reward alone;
    # the step's scored prompts only log, select and feed the guidance)
    pgg_update: Literal["scored", "learned"]

    @model_validator(mode="after")
    def _credit_and_reward_to_go(self):
        if self.reward_to_go and self.guidance_credit != "token":
            raise ValueError(
                "reward_to_go applies to token credit only; set guidance_credit: token or reward_to_go: false"
            )
        if self.guidance_credit == "gap_spread" and not self.normalize_rewards:
            raise ValueError("guidance_credit gap_spread adds z-scored rewards; set normalize_rewards: true")
        if self.guidance_credit == "gap_spread" and (self.guidance_updates or self.pgg_update == "learned"):
            raise ValueError(
                "guidance_credit gap_spread needs each prompt's gap reward, which guidance-only updates lack; "
                "set guidance_updates: 0, pgg_update: scored or guidance_credit: token"
            )
        return self


class PolicyConfig(Section):
    summarization: SummarizationPolicy
    prompt: PromptPolicySection


# --- loop -------------------------------------------------------------------------------------


class LoopSchedule(Section):
    """policy_steps in blocks of refit_every; the guidance is refit before each block until refit_until."""

    policy_steps: PositiveInt
    refit_every: PositiveInt
    refit_until: NonNegativeInt

    @model_validator(mode="after")
    def _consistent(self):
        if self.refit_every > self.policy_steps:
            raise ValueError(
                f"refit_every ({self.refit_every}) must be <= policy_steps ({self.policy_steps})"
            )
        if self.refit_until > self.policy_steps:
            raise ValueError(
                f"refit_until ({self.refit_until}) must be <= policy_steps ({self.policy_steps})"
            )
        return self

    @property
    def iterations(self) -> int:
        return -(-self.policy_steps // self.refit_every)


class LoopConfig(Section):
    summarization: LoopSchedule
    prompt: LoopSchedule
    methods: tuple[str, ...]

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods):
        unknown = set(methods) - {"pgg", "mle", "seqpg"}
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}: allowed pgg, mle, seqpg")
        return methods


# --- eval -------------------------------------------------------------------------------------


class SummarizationEval(Section):
    batch_size: PositiveInt
    lead_k: PositiveInt  # words of the article used by the lead-k baseline
    max_examples: PositiveInt | None


class PromptEval(Section):
    top_prompts: PositiveInt
    manual_prompts: dict[str, str]
    candidates: PositiveInt  # best prompts by training reward that are scored on dev for selection
    policy_samples: (
        PositiveInt  # policy selection: prompts sampled from the trained policy (+ its greedy one)
    )
    log_every: PositiveInt  # policy steps between MLflow log points (best prompt scored on dev)
    max_test_examples: PositiveInt | None  # cap on the test split (tests, quick looks); None: all
    query_curve: bool  # both selections after every block, against task-model queries (sample efficiency)


class PromptReward(Section):
    """The prompt task's sequence-level preference: RLPrompt's gap reward from the frozen task model."""

    task_temperature: PositiveFloat  # softmax temperature of the prototype classifier
    reward_fraction: Fraction  # share of training examples that score a prompt each step
    gap_positive: PositiveFloat
    gap_negative: PositiveFloat


class RewardSections(Section):
    prompt: PromptReward


class EvalConfig(Section):
    summarization: SummarizationEval
    prompt: PromptEval


# --- tracking and runtime ---------------------------------------------------------------------


class TrackingConfig(Section):
    mlflow_uri: str | None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the project
    experiment_prefix: str
    register_models: bool


class RuntimeConfig(Section):
    seed: NonNegativeInt
    device: Literal["auto", "cpu", "cuda"]
    bf16: bool
    threads: PositiveInt | None  # torch intra-op threads (results depend on it); None keeps torch's choice
    runs_dir: Path
    processes: PositiveInt  # >1: each training step runs data-parallel in this many processes (GPUs)
    task_runner: Literal["thread", "dask"]
    dask_address: str | None  # task_runner dask: scheduler address; None starts a local cluster
    dask_workers: PositiveInt  # workers of that local cluster


class Config(Section):
    data: DataConfig
    models: ModelsConfig
    sampling: SamplingConfig
    guidance: GuidanceSections
    guidance_fit: GuidanceFitSection
    reward: RewardSections
    policy: PolicyConfig
    loop: LoopConfig
    eval: EvalConfig
    tracking: TrackingConfig
    runtime: RuntimeConfig

    @model_validator(mode="after")
    def _prompt_task_complete(self):
        prompt = self.data.prompt
        if prompt.dataset not in self.eval.prompt.manual_prompts:
            raise ValueError(
                f"eval.prompt.manual_prompts has no prompt for data.prompt.dataset {prompt.dataset!r}; "
                f"add `{prompt.dataset}: <your prompt>`"
            )
        if self.models.prompt.task_model == "mlm" and not prompt.is_preset and prompt.template is None:
            raise ValueError(
                "data.prompt.template: the mlm task model needs a cloze template for your dataset, "
                'e.g. "{input} {prompt} {mask} ."'
            )
        sampling = self.sampling.prompt
        if sampling.step_prompts % sampling.k and not self.guidance.prompt.resampled_lists:
            raise ValueError(
                f"sampling.prompt.prompts_per_step {sampling.step_prompts} is not a multiple of k "
                f"{sampling.k}, so a step's prompts do not form lists; set guidance.prompt.resampled_lists"
            )
        if sampling.step_prompts % sampling.k and self.policy.prompt.pgg_update == "scored":
            raise ValueError(
                f"policy.prompt.pgg_update scored ranks a step's prompts in lists of k {sampling.k}; set "
                f"sampling.prompt.prompts_per_step to a multiple of k or pgg_update: learned"
            )
        return self

    def prompt_block_steps(self, iteration: int) -> list[tuple[int, int]]:
        """(policy step, prompts to score) of each step of a prompt search's block ``iteration``; the
        warm-up (iteration 0) scores warmup_lists lists at step 0 without updating."""
        sampling, loop = self.sampling.prompt, self.loop.prompt
        batch = sampling.step_prompts
        if iteration == 0:
            total = sampling.warmup_lists * sampling.k
            return [(0, min(batch, total - start)) for start in range(0, total, batch)]
        first = (iteration - 1) * loop.refit_every + 1
        return [(step, batch) for step in range(first, min(first + loop.refit_every, loop.policy_steps + 1))]

    def prompt_train_config(self, method: str):
        """``components.prompt_trainer.PromptTrainConfig`` of ``method``: the prompt sections' fields of
        the same names (the guidance section gives only its aggregation: its lr is the fit's)."""
        from components.prompt_trainer import PromptTrainConfig  # torch: only once a run needs it

        names = {f.name for f in dataclasses.fields(PromptTrainConfig)}
        values = {
            **self.sampling.prompt.model_dump(include=names),
            **self.reward.prompt.model_dump(include=names),
            **self.guidance.prompt.model_dump(include={"aggregation", "tau"}),
            **self.policy.prompt.model_dump(include=names),
        }
        return PromptTrainConfig(method=method, **values)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, for MLflow params."""
        return dict(_flatten(self.model_dump(mode="json")))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[
            :12
        ]


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "manual_prompts":
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def load_params(
    path: str | Path = DEFAULT_PARAMS,
    overrides: dict[str, Any] | None = None,
    base: str | Path | None = DEFAULT_PARAMS,
) -> Config:
    """Read and validate params: ``path`` laid over ``base`` (the project's params.yaml), so a file that
    holds only the keys it changes is enough; ``base=None`` reads ``path`` alone. Relative paths inside
    any of them resolve against the project root, wherever the file lies.

    ``overrides`` maps dotted keys to values ({"loop.summarization.policy_steps": 2}), laid over both
    (the CLI's ``-S key=value``); they go through the same validation as the file. An error names the
    file or override that set the bad key.
    """
    layers = [] if base is None or _same_file(base, path) else [(str(base), _read_yaml(Path(base)))]
    layers.append((str(path), _read_yaml(Path(path))))
    for dotted, value in (overrides or {}).items():
        layers.append((f"-S {dotted}", _nested(dotted, value)))
    raw: dict = {}
    for _, tree in layers:
        raw = _merge(raw, tree)
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        # an unknown key first: a typo also leaves its real key missing, and the typo is the news
        error = min(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
        source, detail = _source_of(error["loc"], layers), _describe(error)
        if source.startswith("-S ") and source.removeprefix("-S ").startswith(_location(error)):
            raise ParamsError(f"-S {detail}") from None  # the detail names the key already
        raise ParamsError(f"{source}: {detail}") from None
    root = _from_project_root(config.data.root)
    prompt = config.data.prompt
    if prompt.path is not None and not prompt.path.is_absolute():
        prompt = prompt.model_copy(update={"path": (root / prompt.path).resolve()})
    return config.model_copy(
        update={
            "data": config.data.model_copy(
                update={
                    "root": root,
                    "prepared_dir": _from_project_root(config.data.prepared_dir),
                    "prompt": prompt,
                }
            ),
            "runtime": config.runtime.model_copy(
                update={"runs_dir": _from_project_root(config.runtime.runs_dir)}
            ),
            "guidance_fit": _resolve_guidance_fit(config.guidance_fit),
        }
    )


def check_data_root(config: Config) -> None:
    """Raise ParamsError when data.root (the embedded corpora) is missing: only stages that read it call
    this, so guidance-fit on your own file runs without corpora/."""
    if not config.data.root.is_dir():
        raise ParamsError(
            f"data.root: folder {config.data.root} does not exist; run `make corpora` (copies ../shared/data "
            "in) or point data.root at the embedded corpora"
        )


def _from_project_root(value: Path) -> Path:
    return (PROJECT_ROOT / value).resolve()  # an absolute value stays itself


def _same_file(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ParamsError(f"{path}: not found; run from the project root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{path}: top level must be a mapping of sections ({', '.join(Config.model_fields)})"
        )
    return raw


def _nested(dotted: str, value: Any) -> dict:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}}."""
    keys = dotted.split(".")
    if not all(keys):
        raise ParamsError(f"-S {dotted}: not a dotted key; write section.key=value (e.g. runtime.seed=1)")
    tree: Any = value
    for key in reversed(keys):
        tree = {key: tree}
    return tree


def _merge(under: dict, over: dict) -> dict:
    """``over`` laid on ``under`` section by section (a new dict; lists and values replace)."""
    out = dict(under)
    for key, value in over.items():
        both_sections = isinstance(value, dict) and isinstance(under.get(key), dict)
        out[key] = _merge(under[key], value) if both_sections else value
    return out


def _source_of(loc: tuple, layers: list[tuple[str, dict]]) -> str:
    """The last layer (file or -S override) that set the key or section at ``loc``; a key none set (a
    missing one) is the base file's."""
    keys = [str(part) for part in loc if not str(part).startswith("function-after")]
    for label, tree in reversed(layers):
        node: Any = tree
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            return label
    return layers[0][0]


def _resolve_guidance_fit(section: GuidanceFitSection) -> GuidanceFitSection:
    """Relative paths against the project root; a hub name (owner/name, no suffix) stays."""
    data = Path(section.data)
    local = data.suffix in (".jsonl", ".json", ".parquet") or section.data.startswith((".", "/"))
    return section.model_copy(
        update={
            "data": str(_from_project_root(data)) if local else section.data,
            "output_dir": _from_project_root(section.output_dir),
            "report": _from_project_root(section.report),
        }
    )


def _describe(error: dict) -> str:
    """One pydantic error -> 'key.path: what is wrong (got X)'."""
    location = _location(error)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(error["loc"][:-1])
        allowed = list(parent.model_fields) if parent else []
        closest = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
        if closest:
            return f"{location}: unknown key; did you mean {closest[0]}?"
        return f"{location}: unknown key; allowed here: {', '.join(allowed) or 'see params.yaml'}"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return f"{location}: required key is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{location or 'params'}: {message[0].lower() + message[1:]}{shown}"


def _location(error: dict) -> str:
    return ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-after"))


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def load_or_exit(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Config:
    """CLI front door: print the one-line error and exit 2 on bad params."""
    try:
        return load_params(path, overrides)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
