"""Golden values from the authors' code (Yang et al. 2023) next to pgg's, on fixed seeded inputs.

    python -m bench.reference_check --authors /tmp/pgg-authors   # a checkout of
        github.com/Shentao-YANG/Preference_Grounded_Guidance (MIT); never copied into this repository

Each pair runs the authors' function on inputs built here (ties, padding, variable lengths, K from 2 to 8,
every aggregation, empty and one-token candidates), writes the inputs and their outputs (loss values and
gradients with respect to the rewards and the policy logits) to ``tests/fixtures/reference/PAIR.pt``
and prints a table of the largest difference from pgg. ``tests/test_reference_equivalence.py`` checks
pgg against those files (no checkout needed); docs/reference.md lists every difference and its param.

Their modules import packages pgg need not install (evaluate, nltk, datasets, wandb, click, hydra); while
this script imports them, a missing one is stubbed by an empty module (no function of theirs that runs
here uses it). Their methods run unbound with a stand-in ``self`` that carries the attributes they read.
Without ``--authors`` the script only prints the table from the stored fixtures.

The pgg side of every pair lives here (the ``pgg_*`` functions), so the table and the test compute pgg
the same way.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import torch

from bench.report import markdown_table
from components.aggregation import aggregate
from components.gap_reward import gap_reward
from components.policy_losses import entropy_bonus, token_reinforce_loss, weighted_mle_loss
from components.prompt_losses import token_guided_reinforce_loss
from components.prompt_policy import top_k_filter
from components.ranking_losses import plackett_luce_loss
from components.reward_model import TokenRewardModel

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference"
PAIRS = (
    "listmle",
    "aggregation",
    "guidance",
    "reward_head",
    "wmle",
    "sum_reinforce",
    "prompt_reinforce",
    "gap",
    "top_k",
)
AUTHORS_TEMPERATURE = 2.0  # soft_maxmin_temp, their default in both tasks
ENTROPY_EPS = 1e-8  # their softmax(logits) + 1e-8 inside the entropy
LISTMLE_EPS = 1e-10  # their log(cumsum + 1e-10)
STUBBED = ("evaluate", "nltk", "datasets", "wandb", "click", "hydra")
DTYPE = torch.float64  # float32 rounding alone is ~1e-6 on losses near 10: compare in float64


# ----- inputs -----------------------------------------------------------------------------------------


def _lengths_mask(lengths: list[int], width: int) -> torch.Tensor:
    return (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).to(DTYPE)


def listmle_cases() -> list[dict]:
    """Scores [B, K] and preferences with and without ties, K = 2..8; one list with a 30-nat spread
    where their 1e-10 floors the tail term."""
    cases = []
    for k in range(2, 9):
        g = torch.Generator().manual_seed(k)
        scores = torch.randn(3, k, generator=g, dtype=DTYPE) * 2
        distinct = torch.rand(3, k, generator=g, dtype=DTYPE)
        cases.append({"name": f"K{k}", "seed": k, "scores": scores, "preference": distinct, "ties": False})
        tied = torch.randint(0, max(2, k - 2), (3, k), generator=g).to(DTYPE)
        cases.append(
            {"name": f"K{k}_ties", "seed": 100 + k, "scores": scores, "preference": tied, "ties": True}
        )
    spread = torch.tensor([[0.0, 30.0, 5.0], [1.0, 2.0, 3.0]], dtype=DTYPE)
    preference = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]], dtype=DTYPE)
    cases.append({"name": "spread30", "seed": 7, "scores": spread, "preference": preference, "ties": False})
    return cases


def aggregation_cases() -> list[dict]:
    """Token rewards [B*K, T] (their flat layout) with variable lengths, one-token and empty candidates."""
    cases = []
    for k in (2, 3, 5, 8):
        g = torch.Generator().manual_seed(10 + k)
        width = 7
        lengths = torch.randint(1, width + 1, (2 * k,), generator=g).tolist()
        lengths[0] = 1  # a one-token candidate
        rewards = torch.rand(2 * k, width, generator=g, dtype=DTYPE) * 1.3
        cases.append({"name": f"K{k}", "k": k, "rewards": rewards, "mask": _lengths_mask(lengths, width)})
    g = torch.Generator().manual_seed(99)
    lengths = [3, 0, 5, 2, 4, 4]  # candidate 1 of the first list is empty
    rewards = torch.rand(6, 5, generator=g, dtype=DTYPE)
    cases.append({"name": "K3_empty", "k": 3, "rewards": rewards, "mask": _lengths_mask(lengths, 5)})
    return cases


def guidance_cases() -> list[dict]:
    """One guidance loss per task, the authors' defaults: summarization avg over K = 3, prompts sum over K = 5."""
    cases = []
    for name, k, method, width in (("summarization", 3, "avg", 8), ("prompt", 5, "sum", 5)):
        g = torch.Generator().manual_seed(k)
        lengths = torch.randint(1, width + 1, (4 * k,), generator=g).tolist()
        cases.append({
            "name": name,
            "k": k,
            "method": method,
            "seed": k,
            "rewards": torch.rand(4 * k, width, generator=g, dtype=DTYPE) * 1.3,
            "mask": _lengths_mask(lengths, width),
            "preference": torch.rand(4, k, generator=g, dtype=DTYPE),
        })  # fmt: skip
    return cases


def reward_head_case() -> dict:
    """Hidden states [N, T, H] and an MLP head (H -> 2048 -> 1, their size) whose logits reach both
    ends of the softplus clamp. Weights are float16 values, stored as such (half the bytes, exact)."""
    g = torch.Generator().manual_seed(3)
    hidden_size = 32
    head = {
        "0.weight": torch.randn(2048, hidden_size, generator=g) * 0.2,
        "0.bias": torch.randn(2048, generator=g) * 0.1,
        "2.weight": torch.randn(1, 2048, generator=g) * 0.2,
        "2.bias": torch.zeros(1),
    }
    head = {name: value.half() for name, value in head.items()}
    hidden = torch.randn(4, 6, hidden_size, generator=g, dtype=DTYPE) * 1.5
    mask = _lengths_mask([6, 4, 1, 3], 6)
    return {"name": "head", "hidden": hidden, "mask": mask, "head": head}


def _labels(lengths: list[int], width: int, vocab: int, g: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, vocab, (len(lengths), width), generator=g)
    return labels.masked_fill(_lengths_mask(lengths, width) == 0, -100)


def wmle_cases() -> list[dict]:
    """Policy logits [B, T, V], labels (-100 pads), token rewards in (1e-8, 1.31); one empty target."""
    cases = []
    for name, lengths, weighting in (
        ("variable", [5, 3, 1, 4], "reward"),
        ("variable_exp", [5, 3, 1, 4], "exp_reward"),
        ("empty_target", [4, 0, 2], "reward"),
    ):
        g = torch.Generator().manual_seed(len(name))
        width, vocab = max(lengths), 11
        cases.append({
            "name": name,
            "weighting": weighting,
            "logits": torch.randn(len(lengths), width, vocab, generator=g, dtype=DTYPE) * 2,
            "labels": _labels(lengths, width, vocab, g),
            "rewards": 1e-8 + torch.rand(len(lengths), width, generator=g, dtype=DTYPE) * 1.3,
        })  # fmt: skip
    return cases


def reinforce_cases() -> list[dict]:
    """Sampled sequences (pad id 0 after the end), their logits [N, T, V] and token rewards; equal
    lengths (where both averages agree) and variable ones."""
    cases = []
    for name, lengths in (("equal", [4, 4, 4, 4]), ("variable", [5, 2, 1, 4, 3, 5])):
        g = torch.Generator().manual_seed(len(lengths))
        width, vocab = max(lengths), 9
        mask = _lengths_mask(lengths, width)
        sequences = torch.randint(1, vocab, (len(lengths), width), generator=g).masked_fill(mask == 0, 0)
        cases.append({
            "name": name,
            "samples": 2,
            "logits": torch.randn(len(lengths), width, vocab, generator=g, dtype=DTYPE) * 2,
            "sequences": sequences,
            "mask": mask,
            "rewards": torch.rand(len(lengths), width, generator=g, dtype=DTYPE) * 1.3,
        })  # fmt: skip
    return cases


def prompt_reinforce_cases() -> list[dict]:
    """Prompts [n, L] of one batch, the policy's logits [n, L, V] and raw token rewards."""
    cases = []
    for name, n, vocab in (("n8_v16", 8, 16), ("n5_v64", 5, 64)):
        g = torch.Generator().manual_seed(n * vocab)
        cases.append({
            "name": name,
            "logits": torch.randn(n, 5, vocab, generator=g, dtype=DTYPE) * 2,
            "ids": torch.randint(0, vocab, (n, 5), generator=g),
            "rewards": torch.rand(n, 5, generator=g, dtype=DTYPE) * 1.3,
            "entropy_coef": 0.125,
        })  # fmt: skip
    return cases


def gap_cases() -> list[dict]:
    """Class probabilities [P, N, C] of P prompts on N examples; one prompt with a class tied to the label."""
    cases = []
    for name, classes in (("binary", 2), ("four_class", 4)):
        g = torch.Generator().manual_seed(classes)
        probs = torch.softmax(torch.randn(3, 10, classes, generator=g, dtype=DTYPE) * 2, -1)
        labels = torch.randint(0, classes, (10,), generator=g)
        cases.append({"name": name, "probs": probs, "labels": labels})
    probs = torch.tensor([[[0.5, 0.5], [0.7, 0.3], [0.2, 0.8]]], dtype=DTYPE)
    cases.append({"name": "tied_label", "probs": probs, "labels": torch.tensor([0, 0, 0])})
    return cases


def top_k_cases() -> list[dict]:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 40, generator=g, dtype=DTYPE)
    tied = logits.clone()
    tied[0, :6] = 3.0  # six tokens tie at the top: k = 4 keeps all six under both rules
    return [{"name": f"k{k}", "k": k, "logits": tied} for k in (1, 4, 10, 40)]


# ----- pgg's side: what the table and tests/test_reference_equivalence.py compare --------------------


class HiddenStates(torch.nn.Module):
    """A backbone that returns its input as last_hidden_state: both reward heads then read the same states."""

    def __init__(self, hidden_size):
        super().__init__()
        self.config = types.SimpleNamespace(hidden_size=hidden_size)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None):
        return types.SimpleNamespace(last_hidden_state=input_ids)


def _grad(loss_fn, leaf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, d loss / d leaf) at a copy of ``leaf``; a (loss, logs) result counts as its loss."""
    leaf = leaf.clone().requires_grad_(True)
    loss = loss_fn(leaf)
    loss = loss[0] if isinstance(loss, tuple) else loss
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def _probe(shape, seed: int = 0) -> torch.Tensor:
    """Fixed weights that turn a [..] output into a scalar, so its gradient is defined."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def pgg_listmle(case: dict, seed: int | None = None) -> dict:
    gen = torch.Generator().manual_seed(case["seed"] if seed is None else seed)
    loss, grad = _grad(lambda s: plackett_luce_loss(s, case["preference"], gen), case["scores"])
    return {"loss": loss, "grad": grad}


def pgg_aggregation(case: dict, method: str, tau: float = AUTHORS_TEMPERATURE) -> dict:
    k, (n, width) = case["k"], case["rewards"].shape
    probe = _probe((n // k, k))
    mask = case["mask"].view(-1, k, width)

    def scores(rewards):
        return aggregate(rewards.view(-1, k, width), mask, method, tau)

    out, grad = _grad(lambda r: (scores(r) * probe).sum(), case["rewards"])
    return {"scores": scores(case["rewards"]), "grad": grad}


def pgg_guidance(case: dict, method: str, tau: float) -> dict:
    """Plackett-Luce on the aggregated token rewards: one guidance loss (``method``, ``tau`` from params)."""
    k, width = case["k"], case["rewards"].shape[-1]
    mask = case["mask"].view(-1, k, width)

    def loss(rewards):
        scores = aggregate(rewards.view(-1, k, width), mask, method, tau)
        return plackett_luce_loss(scores, case["preference"], torch.Generator().manual_seed(case["seed"]))

    value, grad = _grad(loss, case["rewards"])
    return {"loss": value, "grad": grad}


def pgg_reward_head(case: dict) -> dict:
    model = TokenRewardModel(HiddenStates(case["hidden"].shape[-1]), kind="causal_lm", head_hidden=2048)
    model.head.load_state_dict({name: value.to(DTYPE) for name, value in case["head"].items()})
    model.head.to(DTYPE)
    probe = _probe(case["mask"].shape)
    _, grad = _grad(lambda h: (model.rewards_from_hidden(h, case["mask"]) * probe).sum(), case["hidden"])
    return {"rewards": model.rewards_from_hidden(case["hidden"], case["mask"]).detach(), "grad": grad}


def token_logp_and_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor):
    """pgg's teacher-forced log pi(y_t) and entropy per token (as components.seq2seq_policy computes them)."""
    log_dist = logits.log_softmax(-1)
    logp = log_dist.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return logp, -(log_dist.exp() * log_dist).sum(-1) * mask


def pgg_wmle(case: dict) -> dict:
    mask = (case["labels"] >= 0).to(DTYPE)

    def loss(logits):
        logp, _ = token_logp_and_entropy(logits, case["labels"], mask)
        return weighted_mle_loss(logp, mask, case["rewards"], case["weighting"])

    value, grad = _grad(loss, case["logits"])
    return {"loss": value, "grad": grad}


def pgg_sum_reinforce(case: dict, rows: slice = slice(None), token_mean: bool = False) -> dict:
    """token_reinforce_loss and entropy_bonus on raw rewards (reinforce_baseline: false); ``token_mean``
    is reinforce_mean: token."""
    mask, sequences = case["mask"][rows], case["sequences"][rows]

    def reinforce(logits):
        logp, _ = token_logp_and_entropy(logits, sequences, mask)
        return token_reinforce_loss(logp, mask, case["rewards"][rows], token_mean=token_mean)

    def bonus(logits):
        return entropy_bonus(token_logp_and_entropy(logits, sequences, mask)[1], mask)

    loss, grad = _grad(reinforce, case["logits"][rows])
    entropy, entropy_grad = _grad(bonus, case["logits"][rows])
    return {"loss": loss, "grad": grad, "entropy": entropy, "entropy_grad": entropy_grad}


def prompt_log_probs_and_entropy(logits: torch.Tensor, ids: torch.Tensor):
    """What PromptPolicy.log_probs_and_entropy returns, from given logits ``[n, L, V]``."""
    return token_logp_and_entropy(logits, ids, torch.ones(ids.shape, dtype=logits.dtype))


def pgg_prompt_reinforce(case: dict) -> dict:
    """token_guided_reinforce_loss on raw token rewards (normalize_rewards: false)."""

    def loss(logits):
        logp, entropy = prompt_log_probs_and_entropy(logits, case["ids"])
        return token_guided_reinforce_loss(logp, entropy, case["rewards"], case["entropy_coef"])

    value, grad = _grad(loss, case["logits"])
    return {"loss": value, "grad": grad}


def pgg_gap(case: dict) -> dict:
    return {"rewards": gap_reward(case["probs"], case["labels"], 200.0, 180.0, example_fraction=1.0)}


def pgg_top_k(case: dict) -> dict:
    return {"logits": top_k_filter(case["logits"], case["k"])}


def entropy_eps_term(logits: torch.Tensor) -> torch.Tensor:
    """Per token: sum_v (p+eps) log(p+eps) - p log p, what their 1e-8 adds to the negative entropy."""
    p = logits.softmax(-1)
    return ((p + ENTROPY_EPS) * (p + ENTROPY_EPS).log() - torch.special.xlogy(p, p)).sum(-1)


def listmle_eps_term(scores: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """What their log(cumsum + 1e-10) adds to the mean list loss, for preferences without ties."""
    order = preference.argsort(dim=1, descending=True, stable=True)
    ranked = scores.gather(1, order)
    tails = (ranked - ranked.max(1, keepdim=True).values).flip(1).exp().cumsum(1).flip(1)
    return ((tails + LISTMLE_EPS).log() - tails.log()).sum(1).mean()


# ----- the authors' side ----------------------------------------------------------------------------


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of a missing package in STUBBED (and its submodules) get an empty module whose
    attributes are inert placeholders."""

    def __init__(self, missing: set[str]):
        self.missing = missing

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in self.missing:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: type(attr, (), {"__init__": lambda self, *a, **k: None})
        return module

    def exec_module(self, module):
        pass


def import_authors(root: Path) -> dict:
    """Their functions and classes, imported from ``root`` (sum_task/ and prompt_task/)."""
    finder = _StubFinder({name for name in STUBBED if importlib.util.find_spec(name) is None})
    sys.meta_path.append(finder)
    import transformers

    if not hasattr(transformers, "WEIGHTS_NAME"):  # dropped from transformers' top level since 4.x
        transformers.WEIGHTS_NAME = "pytorch_model.bin"
    try:
        sys.path[:0] = [str(root / "sum_task"), str(root / "prompt_task")]
        sum_losses = importlib.import_module("reward_losses")
        sum_reward = importlib.import_module("reward_model")
        sum_policy = importlib.import_module("policy_trainer")
        prompt_module = importlib.import_module("rlprompt.modules.pg_reinforce_module")
        prompt_rewards = importlib.import_module("rlprompt.trainers.reward_model_trainer")
        prompt_utils = importlib.import_module("rlprompt.models.model_utils")
    finally:
        sys.meta_path.remove(finder)
    return {
        "listMLELoss": sum_losses.listMLELoss,
        "reward_model": sum_reward,
        "RewardPolicyTrainer": sum_policy.RewardPolicyTrainer,
        "reward_to_reward": sum_policy.reward_to_reward,
        "ReinforceModule": prompt_module.ReinforceModule,
        "RewardModelTrainer": prompt_rewards.RewardModelTrainer,
        "_top_k_logits": prompt_utils._top_k_logits,
        "stubbed": sorted(finder.missing),
    }


def authors_listmle(a, case):
    torch.manual_seed(case["seed"])  # their shuffle draws from the global generator
    loss, grad = _grad(lambda s: a["listMLELoss"](s, case["preference"]), case["scores"])
    return {"loss": loss, "grad": grad}


def _authors_aggregations(a, k: int) -> dict:
    m = a["reward_model"]
    return {
        "avg": lambda x, mask: m.tensor_average(x, mask, k),
        "sum": lambda x, mask: m.tensor_sum(x, mask, k),
        "softmax": lambda x, mask: m.logsumexp(x, mask, torch.tensor(-math.inf), AUTHORS_TEMPERATURE, k),
        "softmin": lambda x, mask: m.logsumexp(x, mask, torch.tensor(math.inf), -AUTHORS_TEMPERATURE, k),
    }


def authors_aggregation(a, case):
    k, out = case["k"], {}
    probe = _probe((case["rewards"].shape[0] // k, k))
    for method, fn in _authors_aggregations(a, k).items():
        x = case["rewards"].clone().requires_grad_(True)
        scores = fn(x, case["mask"])
        (grad,) = torch.autograd.grad((scores * probe).sum(), x)
        out[method] = {"scores": scores.detach(), "grad": grad}
    return out


def authors_guidance(a, case):
    aggregate_fn = _authors_aggregations(a, case["k"])[case["method"]]

    def loss(rewards):
        torch.manual_seed(case["seed"])
        return a["listMLELoss"](aggregate_fn(rewards, case["mask"]), case["preference"])

    value, grad = _grad(loss, case["rewards"])
    return {"loss": value, "grad": grad}


def authors_reward_head(a, case):
    args = types.SimpleNamespace(device="cpu", use_softplus=1)
    model = a["reward_model"].RewardModel(args, HiddenStates(case["hidden"].shape[-1]))
    model.mlp.load_state_dict({name: value.to(DTYPE) for name, value in case["head"].items()})
    model.mlp.to(DTYPE)
    probe = _probe(case["mask"].shape)
    _, grad = _grad(lambda h: (model(input_ids=h) * case["mask"] * probe).sum(), case["hidden"])
    return {"rewards": model(input_ids=case["hidden"]).detach(), "grad": grad}


def _sum_trainer_self(a, rewards, logits=None, exp_in_wmle=False, samples=1):
    return types.SimpleNamespace(
        reward_model=types.SimpleNamespace(forward=lambda **kwargs: rewards),
        policy=lambda **kwargs: types.SimpleNamespace(logits=logits),
        tokenizer_pad_id=torch.tensor(0),
        exp_in_wmle=exp_in_wmle,
        nll_loss_fct=torch.nn.CrossEntropyLoss(reduction="none"),
        rew_to_weight_func=a["reward_to_reward"],
        num_reinforce_samples=samples,
    )


def authors_wmle(a, case):
    labels = case["labels"]
    batch = {
        "input_ids": torch.zeros(len(labels), 1, dtype=torch.long),
        "attention_mask": torch.ones(len(labels), 1, dtype=torch.long),
        "decoder_input_ids": torch.zeros_like(labels),
        "labels": labels,
        "labels_mask": (labels != -100).to(DTYPE),
    }

    def loss(logits):
        me = _sum_trainer_self(a, case["rewards"], logits, case["weighting"] == "exp_reward")
        return a["RewardPolicyTrainer"].get_weighted_mle_loss(me, batch)[0]

    try:
        value, grad = _grad(loss, case["logits"])
    except AssertionError:  # their `assert final_loss.isfinite()`
        return {"error": "AssertionError: final_loss is not finite (0/0 weights of an empty target)"}
    return {"loss": value, "grad": grad}


def authors_sum_reinforce(a, case):
    n = len(case["sequences"])
    batch = {"input_ids": torch.zeros(n // case["samples"], 1, dtype=torch.long)}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    trainer = a["RewardPolicyTrainer"]

    def gen(logits):
        return types.SimpleNamespace(sequences=case["sequences"], scores=logits, sequences_mask=case["mask"])

    def reinforce(logits):
        me = _sum_trainer_self(a, case["rewards"], samples=case["samples"])
        return trainer.get_reinforce_loss(me, batch, gen(logits))[0]

    loss, grad = _grad(reinforce, case["logits"])
    neg_entropy, entropy_grad = _grad(lambda x: trainer.get_neg_entropy(None, batch, gen(x)), case["logits"])
    return {"loss": loss, "grad": grad, "neg_entropy": neg_entropy, "neg_entropy_grad": entropy_grad}


def authors_prompt_reinforce(a, case):
    def loss(logits):
        me = types.SimpleNamespace(
            _decode_sampling=lambda **kwargs: (logits, [["w"] * 5] * len(logits), case["ids"], None),
            reward_model=types.SimpleNamespace(forward=lambda **kwargs: case["rewards"]),
            rew_to_weight_func=lambda r: r,  # use_q_for_weight 0, their default
            nll_loss_fct=torch.nn.CrossEntropyLoss(reduction="none"),
            max_entropy_coeff=case["entropy_coef"],
            num_samples=len(logits),
            compute_rewards=lambda **kwargs: (torch.zeros(1), {}),  # their logging only
        )
        return a["ReinforceModule"].forward(me, {})[0]

    value, grad = _grad(loss, case["logits"])
    return {"loss": value, "grad": grad}


def authors_gap(a, case):
    probs, labels = case["probs"], case["labels"]
    n_prompts, n_examples, classes = probs.shape
    reward_func = types.SimpleNamespace(
        _format_prompts=lambda sources, prompts: list(zip(sources, prompts, strict=True)),
        # softmax(log p) over the verbalizers gives p back
        _get_logits=lambda templates: probs.log().reshape(-1, classes),
        verbalizer_ids=list(range(classes)),
        correct_coeff=200.0,
        incorrect_coeff=180.0,
    )
    me = types.SimpleNamespace(true_reward_func=reward_func, device="cpu")
    batch = {"source_texts": [f"x{i}" for i in range(n_examples)], "class_labels": labels}
    prompts = [f"p{i}" for i in range(n_prompts)]
    return {"rewards": a["RewardModelTrainer"].compute_rewards_multiple_prompts(me, batch, prompts)}


def authors_top_k(a, case):
    return {"logits": a["_top_k_logits"](case["logits"], case["k"])}


BUILDERS = {
    "listmle": (listmle_cases, authors_listmle),
    "aggregation": (aggregation_cases, authors_aggregation),
    "guidance": (guidance_cases, authors_guidance),
    "reward_head": (lambda: [reward_head_case()], authors_reward_head),
    "wmle": (wmle_cases, authors_wmle),
    "sum_reinforce": (reinforce_cases, authors_sum_reinforce),
    "prompt_reinforce": (prompt_reinforce_cases, authors_prompt_reinforce),
    "gap": (gap_cases, authors_gap),
    "top_k": (top_k_cases, authors_top_k),
}


def write_fixtures(authors_root: Path, out: Path) -> dict:
    a = import_authors(authors_root)
    fixtures = {}
    for pair, (build, run_authors) in BUILDERS.items():
        fixtures[pair] = build()
        for case in fixtures[pair]:
            case["authors"] = run_authors(a, case)
    out.mkdir(parents=True, exist_ok=True)  # only once every pair ran: never a mix of two checkouts
    for pair, cases in fixtures.items():
        torch.save(cases, out / f"{pair}.pt")
    return {"stubbed_imports": a["stubbed"], "cases": {pair: len(cases) for pair, cases in fixtures.items()}}


# ----- the table ------------------------------------------------------------------------------------


def _max_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.to(DTYPE) - y.to(DTYPE)).abs().max())


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.1e}"


def comparison_rows(fixtures: Path) -> list[list]:
    """One row per pair and case family: the largest |authors - pgg| of values and gradients, and
    what the difference is where pgg means to differ."""
    load = lambda pair: torch.load(fixtures / f"{pair}.pt", weights_only=False)  # noqa: E731
    rows = []
    for case in load("listmle"):
        pgg, theirs = pgg_listmle(case), case["authors"]
        eps = float(listmle_eps_term(case["scores"], case["preference"]))
        note = "ties broken by their unstable sort" if case["ties"] else ""
        note = f"their 1e-10 adds {eps:.2f}" if eps > 1e-6 else note
        rows.append(["listMLELoss / plackett_luce_loss", case["name"],
                     _fmt(abs(float(pgg["loss"]) - float(theirs["loss"]))), _fmt(_max_diff(pgg["grad"], theirs["grad"])), note])  # fmt: skip
    for case in load("aggregation"):
        for method, theirs in case["authors"].items():
            pgg = pgg_aggregation(case, method)
            real = torch.isfinite(theirs["scores"])
            note = (
                ""
                if bool(real.all())
                else f"empty candidate: theirs {theirs['scores'][~real].tolist()}, pgg 0"
            )
            rows.append([f"aggregation {method} (temperature 2)", case["name"],
                         _fmt(_max_diff(pgg["scores"][real], theirs["scores"][real])),
                         _fmt(_max_diff(pgg["grad"][case["mask"] > 0], theirs["grad"][case["mask"] > 0])) if not note else "n/a", note])  # fmt: skip
    for case in load("guidance"):
        pgg, theirs = pgg_guidance(case, case["method"], AUTHORS_TEMPERATURE), case["authors"]
        rows.append([f"guidance loss ({case['method']}, K={case['k']})", case["name"],
                     _fmt(abs(float(pgg["loss"]) - float(theirs["loss"]))), _fmt(_max_diff(pgg["grad"], theirs["grad"])), ""])  # fmt: skip
    for case in load("reward_head"):
        pgg, theirs = pgg_reward_head(case), case["authors"]
        real = case["mask"] > 0
        rows.append(["RewardModel head+squash / rewards_from_hidden", case["name"],
                     _fmt(_max_diff(pgg["rewards"][real], theirs["rewards"][real])), _fmt(_max_diff(pgg["grad"], theirs["grad"])),
                     f"pads: theirs up to {float(theirs['rewards'][~real].max()):.2f}, pgg 0"])  # fmt: skip
    for case in load("wmle"):
        pgg, theirs = pgg_wmle(case), case["authors"]
        if "error" in theirs:
            rows.append(["get_weighted_mle_loss / weighted_mle_loss", case["name"], "n/a", "n/a",
                         f"theirs: {theirs['error']}; pgg {float(pgg['loss']):.4f}"])  # fmt: skip
            continue
        rows.append(["get_weighted_mle_loss / weighted_mle_loss", case["name"],
                     _fmt(abs(float(pgg["loss"]) - float(theirs["loss"]))), _fmt(_max_diff(pgg["grad"], theirs["grad"])), ""])  # fmt: skip
    for case in load("sum_reinforce"):
        theirs = case["authors"]
        for token_mean in (True, False):
            pgg = pgg_sum_reinforce(case, token_mean=token_mean)
            rows.append([f"summarization REINFORCE / token_reinforce_loss, reinforce_mean {'token' if token_mean else 'sequence'}",
                         case["name"], _fmt(abs(float(pgg["loss"]) - float(theirs["loss"]))), _fmt(_max_diff(pgg["grad"], theirs["grad"])),
                         "" if token_mean or case["name"] == "equal" else "reinforce_mean sequence: each sample counts once"])  # fmt: skip
        rows.append(["summarization -entropy / entropy_bonus", case["name"],
                     _fmt(abs(float(pgg["entropy"]) + float(theirs["neg_entropy"]))),
                     _fmt(_max_diff(-pgg["entropy_grad"], theirs["neg_entropy_grad"])),
                     "their 1e-8 in the log" + ("; token vs sequence mean" if case["name"] != "equal" else "")])  # fmt: skip
    for case in load("prompt_reinforce"):
        pgg, theirs = pgg_prompt_reinforce(case), case["authors"]
        eps = case["entropy_coef"] * float(entropy_eps_term(case["logits"]).mean())
        rows.append(["prompt pg_reinforce / token_guided_reinforce_loss (raw r)", case["name"],
                     _fmt(abs(float(pgg["loss"]) - float(theirs["loss"]))), _fmt(_max_diff(pgg["grad"], theirs["grad"])),
                     f"their 1e-8 in the entropy adds {eps:.1e}"])  # fmt: skip
    for case in load("gap"):
        pgg, theirs = pgg_gap(case), case["authors"]
        diff = _max_diff(pgg["rewards"], theirs["rewards"])
        note = (
            f"label tie: theirs {float(theirs['rewards'][0]):.1f}, pgg {float(pgg['rewards'][0]):.1f}"
            if diff > 1e-6
            else ""
        )
        rows.append(["gap reward / gap_reward", case["name"], _fmt(diff), "n/a", note])
    for case in load("top_k"):
        same = bool(torch.equal(pgg_top_k(case)["logits"], case["authors"]["logits"]))
        rows.append(["_top_k_logits / top_k_filter", case["name"], "0" if same else "differs", "n/a", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--authors", type=Path, help="checkout of Shentao-YANG/Preference_Grounded_Guidance")
    parser.add_argument("--out", type=Path, default=FIXTURES, help="fixture folder (default: %(default)s)")
    args = parser.parse_args()
    if args.authors is not None:
        missing = [
            p
            for p in ("sum_task/reward_losses.py", "prompt_task/rlprompt")
            if not (args.authors / p).exists()
        ]
        if missing:
            print(
                f"--authors {args.authors}: no {missing[0]}; pass a checkout of the authors' repository",
                file=sys.stderr,
            )
            sys.exit(2)
        info = write_fixtures(args.authors, args.out)
        print(f"fixtures written to {args.out}: {json.dumps(info)}")
    elif not (args.out / "listmle.pt").exists():
        print(f"{args.out}: no fixtures; pass --authors PATH to build them", file=sys.stderr)
        sys.exit(2)
    print(markdown_table(["authors / pgg", "case", "max |Δ| value", "max |Δ| grad", "documented difference"],
                         comparison_rows(args.out)))  # fmt: skip


if __name__ == "__main__":
    main()
