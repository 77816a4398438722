"""One data-parallel training step on tiny models, for tests/test_data_parallel.py.

``run_all`` trains the policy (pgg, weighted MLE) and fits the guidance, then writes the policy
checkpoint through ``flows.distributed.write_once``. Every process that runs the checkpoint writer
appends its rank to OUT/writes.txt, and every process records whether it sees a complete checkpoint
after the write. The same functions without an accelerator are the one-process baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from components.encoder_cache import encode_sources
from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec, load_model
from components.policy_trainer import train_policy
from components.preferences import RankedList
from components.reward_model import TokenRewardModel
from components.seq2seq_policy import encode_targets, freeze_encoder
from flows.distributed import Hardware, data_parallel, make_accelerator, write_once
from tests.conftest import guidance_config, policy_config

WORDS = ("stock", "bond", "gold", "oil", "tech", "bank", "car", "food")
ARTICLES = [f"the {w} market rose sharply on monday as traders bought {w} shares" for w in WORDS]
TITLES = [f"{w} prices rise" for w in WORDS]
# global batch 4 (2 per process), 2 micro-batches per step
POLICY = policy_config(method="pgg", steps=3, lr=3e-3, batch_size=4, grad_accumulation=2, seed=5)
GUIDANCE = guidance_config(lr=3e-3, epochs=2, batch_size=3, val_fraction=0.2, patience=5, seed=2)


def _no_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():  # one process and two would draw different dropout masks
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def policy_problem():
    tokenizer, model = load_model(ModelSpec("tiny", "seq2seq"))
    _no_dropout(model)
    freeze_encoder(model)
    sources = encode_sources(model.get_encoder(), tokenizer, ARTICLES, max_length=24, dtype=torch.float32)
    labels, mask = encode_targets(tokenizer, TITLES, 8, model)
    rewards = (torch.rand(labels.shape, generator=torch.Generator().manual_seed(1)) + 0.1) * mask
    return tokenizer, model, sources, labels, mask, rewards


def train_the_policy(accelerator=None):
    tokenizer, model, sources, labels, mask, rewards = policy_problem()
    history = train_policy(
        model, tokenizer, sources, labels, mask, POLICY, token_rewards=rewards, accelerator=accelerator
    )
    return tokenizer, model, history


def ranked_lists() -> list[RankedList]:
    # 7 training lists in batches of 3: shares of 2 and 1 lists, and a last batch of one list that
    # leaves the second process without a list; ties in the scores exercise the random tie-breaking
    scores = [[3.0, 1.0, 2.0], [1.0, 1.0, 0.0], [0.0, 2.0, 1.0]]
    return [
        RankedList(
            ARTICLES[i % 8], [f"{WORDS[i % 8]} up", f"{WORDS[(i + 3) % 8]} news", "markets"], scores[i % 3]
        )
        for i in range(9)
    ]


def fit_the_guidance(accelerator=None) -> dict:
    tokenizer, model = TokenRewardModel.from_spec(ModelSpec("tiny", "seq2seq"), head_hidden=16)
    _no_dropout(model)
    torch.manual_seed(100 + (accelerator.process_index if accelerator else 0))
    model.reset_head()  # a different random head on every process: the trainer must start from rank 0's
    report = GuidanceTrainer(model, tokenizer, GUIDANCE, accelerator=accelerator).fit(ranked_lists())
    return {
        "history": list(report.history),
        "val_loss": report.val_loss,
        "head": model.head[0].weight.detach().flatten().tolist(),
        "query": model.backbone.decoder.bert.encoder.layer[0].attention.self.query.weight.flatten().tolist(),
    }


@data_parallel
def run_all(out: str, hw: Hardware) -> dict:
    """The step ``@data_parallel`` launches: train both models, write the checkpoint once; returns the
    histories (the launch hands back the main process's)."""
    from flows.checkpoints import is_complete, save_policy

    out = Path(out)
    accelerator = make_accelerator(hw)
    tokenizer, model, history = train_the_policy(accelerator)
    guidance = fit_the_guidance(accelerator)
    folder = out / "policy"

    def write():
        with (out / "writes.txt").open("a") as handle:
            handle.write(f"{accelerator.process_index}\n")
        return save_policy(model, tokenizer, folder, {"steps": len(history)})

    write_once(accelerator, write)
    seen = {"rank": accelerator.process_index, "complete": is_complete(folder)}
    (out / f"seen-{accelerator.process_index}.json").write_text(json.dumps(seen))
    return {"processes": accelerator.num_processes, "policy": history, "guidance": guidance}
