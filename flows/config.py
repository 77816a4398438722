"""params.yaml -> typed, validated config. Loaded once per run; a bad value stops the run before any compute.

Every section forbids unknown keys, so a typo ("agregation") is an error, not a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
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
    dataset: Literal["bbc", "cnn_dailymail", "xsum"] = "bbc"
    target: Literal["title", "summary"] = "title"  # bbc only; hub corpora have one target
    validation_fraction: Fraction = 0.05
    test_fraction: Fraction = 0.05
    split_salt: str = "pgg"
    max_train_examples: PositiveInt | None = None
    max_eval_examples: PositiveInt | None = None


class PromptData(Section):
    dataset: Literal["sst-2", "agnews"] = "sst-2"
    seed: Literal[13, 21, 42, 87, 100] = 13


class DataConfig(Section):
    root: Path = Path("../shared/data")
    prepared_dir: Path = Path("data")
    summarization: SummarizationData = SummarizationData()
    prompt: PromptData = PromptData()


# --- models -----------------------------------------------------------------------------------


class SummarizationModels(Section):
    policy: str = "minilm"  # minilm | tiny | any HF seq2seq name (t5-small)
    decoder_layers: PositiveInt | None = 2  # warm starts from an encoder checkpoint only
    freeze_encoder: bool = True  # frozen encoder => its states are computed once and cached
    source_prefix: str = ""  # "summarize: " for T5
    reward_backbone: str = "minilm"
    # causal_lm: one stack reads [article; summary] causally, so r_t sees the article and y_<=t through
    # pretrained self-attention. seq2seq: the summary goes through a decoder whose cross-attention a
    # warm start from an encoder checkpoint leaves random (a frozen one then cannot read the article).
    reward_backbone_kind: Literal["causal_lm", "encoder", "seq2seq"] = "causal_lm"
    reward_decoder_layers: PositiveInt | None = 2  # seq2seq reward backbones only


class PromptModels(Section):
    policy: str = "minilm"  # minilm | tiny | any causal LM name (distilgpt2)
    task_model: Literal["prototype", "mlm"] = "prototype"
    task_model_name: str = "minilm"  # roberta-large for the paper's mlm task model
    reward_backbone: str = "minilm"  # must share the policy's tokenizer (token rewards align by id)
    reward_backbone_kind: Literal["causal_lm", "encoder"] = "causal_lm"  # causal: r_t sees only a_<=t


class ModelsConfig(Section):
    summarization: SummarizationModels = SummarizationModels()
    prompt: PromptModels = PromptModels()


# --- sampling ---------------------------------------------------------------------------------


class SummarizationSampling(Section):
    k: ListSize = 3
    top_k: NonNegativeInt = 50
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    temperature: PositiveFloat = 1.0
    max_source_tokens: PositiveInt = 128
    max_target_tokens: PositiveInt = 24
    articles_per_iteration: PositiveInt = 128


class PromptSampling(Section):
    k: ListSize = 5
    prompt_length: PositiveInt = 5
    top_k: PositiveInt = 256
    temperature: PositiveFloat = 1.0
    lists_per_step: PositiveInt = 4  # a policy step samples lists_per_step x k prompts
    warmup_lists: PositiveInt = 32  # lists from the initial policy before step 1 (the first guidance fit)


class SamplingConfig(Section):
    summarization: SummarizationSampling = SummarizationSampling()
    prompt: PromptSampling = PromptSampling()


# --- guidance ---------------------------------------------------------------------------------


class GuidanceSettings(Section):
    loss: RankingLoss = "listwise"
    aggregation: Aggregation = "avg"
    tau: PositiveFloat = 1.0  # temperature of softmax/softmin aggregation
    head_hidden: PositiveInt = 2048
    squash: Literal["softplus", "sigmoid"] = "softplus"
    freeze_backbone: bool = True
    lr: PositiveFloat = 1e-4
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 16  # lists per batch
    val_fraction: Fraction = 0.1
    patience: PositiveInt = 3
    refit: Literal["warm", "scratch"] = "warm"  # re-fit from previous weights or from scratch
    preference: Literal["rouge", "embedding", "meteor", "task", "rankings"] = "rouge"
    rankings_file: Path | None = None  # JSONL of {"source", "candidates", "scores"}; preference: rankings

    @model_validator(mode="after")
    def _rankings_need_file(self):
        if self.preference == "rankings" and self.rankings_file is None:
            raise ValueError(
                "preference 'rankings' needs rankings_file: path to a JSONL of ranked candidates"
            )
        return self


def _fill_task_defaults(raw: Any, defaults: dict[str, dict]) -> Any:
    """A task block given in part keeps that task's own defaults for the keys it leaves out."""
    if not isinstance(raw, dict):
        return raw
    return {
        **raw,
        **{task: {**d, **raw[task]} for task, d in defaults.items() if isinstance(raw.get(task), dict)},
    }


_GUIDANCE_DEFAULTS = {"prompt": {"aggregation": "sum", "preference": "task", "lr": 1e-3}}


class GuidanceConfig(Section):
    summarization: GuidanceSettings = GuidanceSettings()
    prompt: GuidanceSettings = GuidanceSettings(**_GUIDANCE_DEFAULTS["prompt"])

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw):
        return _fill_task_defaults(raw, _GUIDANCE_DEFAULTS)


# --- policy -----------------------------------------------------------------------------------


class SummarizationPolicy(Section):
    warmstart_steps: NonNegativeInt = 300
    warmstart_lr: PositiveFloat = 1e-3
    warmup_steps: NonNegativeInt = 20  # linear lr warm-up of every policy optimizer
    lr: PositiveFloat = 3e-4
    batch_size: PositiveInt = 32
    grad_accumulation: PositiveInt = 1
    grad_clip: PositiveFloat = 1.0
    # pgg's w_t: reward (r_t / sum r, the paper's) | exp_reward (exp r_t / sum exp r, the authors'
    # code's exp_in_wmle: weights within a factor 3.7, so no reference token stops being learned)
    wmle_weighting: Literal["reward", "exp_reward"] = "reward"
    reinforce_coef: NonNegativeFloat = 0.0  # the paper's optional REINFORCE term with r as weights
    entropy_coef: NonNegativeFloat = 0.0
    seqpg_coef: PositiveFloat = 1.0  # weight of the RLOO term of the sequence-level baseline
    # articles of each batch whose K samples enter the sampled terms (seqpg's RLOO, pgg's REINFORCE);
    # null: the whole batch. A sampled article costs about 6x an MLE one (K samples, K backward rows)
    sampled_articles: PositiveInt | None = 8

    @model_validator(mode="after")
    def _sampled_within_batch(self):
        if self.sampled_articles is not None and self.sampled_articles > self.batch_size:
            raise ValueError(
                f"sampled_articles ({self.sampled_articles}) must be <= batch_size ({self.batch_size})"
            )
        return self


class PromptPolicy(Section):
    lr: PositiveFloat = 1e-3  # Adam on the adaptor; high because the CPU default runs only 100 steps
    entropy_coef: NonNegativeFloat = 0.125  # alpha of the max-entropy bonus
    adaptor_hidden: PositiveInt = 2048
    # z-score rewards within each batch (seqpg: per prompt; pgg: token rewards centred per position,
    # scaled by the batch std) so entropy_coef weighs the same for both; false: the raw formulas
    normalize_rewards: bool = True


class PolicyConfig(Section):
    summarization: SummarizationPolicy = SummarizationPolicy()
    prompt: PromptPolicy = PromptPolicy()


# --- loop -------------------------------------------------------------------------------------


class LoopSchedule(Section):
    """policy_steps in blocks of refit_every; the guidance is refit before each block until refit_until."""

    policy_steps: PositiveInt = 300
    refit_every: PositiveInt = 100
    refit_until: NonNegativeInt = 200

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


_LOOP_DEFAULTS = {
    "summarization": {"policy_steps": 150, "refit_every": 50, "refit_until": 100},
    # 100 steps x 20 prompts: the quick default (pgg + baselines) fits in ~10 CPU minutes
    "prompt": {"policy_steps": 100, "refit_every": 25, "refit_until": 75},
}


class LoopConfig(Section):
    summarization: LoopSchedule = LoopSchedule(**_LOOP_DEFAULTS["summarization"])
    prompt: LoopSchedule = LoopSchedule(**_LOOP_DEFAULTS["prompt"])
    methods: tuple[str, ...] = ("pgg", "mle", "seqpg")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw):
        return _fill_task_defaults(raw, _LOOP_DEFAULTS)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods):
        unknown = set(methods) - {"pgg", "mle", "seqpg"}
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}: allowed pgg, mle, seqpg")
        return methods


# --- eval -------------------------------------------------------------------------------------


class SummarizationEval(Section):
    batch_size: PositiveInt = 64
    lead_k: PositiveInt = 6  # words of the article used by the lead-k baseline
    max_examples: PositiveInt | None = None


class PromptEval(Section):
    top_prompts: PositiveInt = 3
    manual_prompts: dict[str, str] = {"sst-2": "It was", "agnews": "Category:"}
    task_temperature: PositiveFloat = 0.05  # softmax temperature of the prototype classifier
    reward_fraction: Fraction = 0.8  # share of training examples that score a prompt each step
    gap_positive: PositiveFloat = 200.0
    gap_negative: PositiveFloat = 180.0
    candidates: PositiveInt = 16  # best prompts by training reward that are scored on dev for selection
    log_every: PositiveInt = 10  # policy steps between MLflow log points (best prompt scored on dev)
    max_test_examples: PositiveInt | None = None  # cap on the test split (tests, quick looks); None: all


class EvalConfig(Section):
    summarization: SummarizationEval = SummarizationEval()
    prompt: PromptEval = PromptEval()


# --- tracking and runtime ---------------------------------------------------------------------


class TrackingConfig(Section):
    mlflow_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the project
    experiment_prefix: str = "pgg"
    register_models: bool = True


class RuntimeConfig(Section):
    seed: NonNegativeInt = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False
    threads: PositiveInt | None = None  # torch intra-op threads; None keeps torch's choice
    runs_dir: Path = Path("runs")
    processes: PositiveInt = 1  # >1: each training step runs data-parallel in this many processes (GPUs)
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = None  # task_runner dask: scheduler address; None starts a local cluster
    dask_workers: PositiveInt = 2  # workers of that local cluster


class Config(Section):
    data: DataConfig = DataConfig()
    models: ModelsConfig = ModelsConfig()
    sampling: SamplingConfig = SamplingConfig()
    guidance: GuidanceConfig = GuidanceConfig()
    policy: PolicyConfig = PolicyConfig()
    loop: LoopConfig = LoopConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    runtime: RuntimeConfig = RuntimeConfig()

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


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate params. Relative paths inside resolve against the params file's folder.

    ``overrides`` maps dotted keys to values ({"loop.summarization.policy_steps": 2}); they go through the
    same validation as the file.
    """
    path = Path(path)
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
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{path}: {_describe(err.errors()[0])}") from None
    root = config.data.root if config.data.root.is_absolute() else (path.parent / config.data.root)
    if not root.is_dir():
        raise ParamsError(
            f"{path}: data.root: folder {root} does not exist; point it at the embedded corpora (../shared/data)"
        )
    runs_dir = (
        config.runtime.runs_dir
        if config.runtime.runs_dir.is_absolute()
        else path.parent / config.runtime.runs_dir
    )
    prepared = (
        config.data.prepared_dir
        if config.data.prepared_dir.is_absolute()
        else path.parent / config.data.prepared_dir
    )
    return config.model_copy(
        update={
            "data": config.data.model_copy(
                update={"root": root.resolve(), "prepared_dir": prepared.resolve()}
            ),
            "runtime": config.runtime.model_copy(update={"runs_dir": runs_dir.resolve()}),
        }
    )


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ParamsError(f"override {dotted}: {key} is not a section")
    tree[leaf] = value


def _describe(error: dict) -> str:
    """One pydantic error -> 'key.path: what is wrong (got X)'."""
    location = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-after"))
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(error["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see params.yaml"
        return f"{location}: unknown key; allowed here: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return f"{location}: required key is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{location or 'params'}: {message[0].lower() + message[1:]}{shown}"


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
