"""Where do pgg's reference weights go, and where are the policy's errors? (#16)

    python -m bench.summarization_weights [--runs runs/summarization]

Reads a finished summarization run (`make run`, or bench.summarization's runs): its warm start, the last
guidance of pgg, and the last policy of every method. Reference tokens are split in two: *copied* (the token
occurs in the 128 article tokens the policy and the guidance read) and *novel* (it does not); eos apart.

- weights: each class's share of the per-sequence weight mass on the training references, under MLE
  (1/length per token), pgg's w_t = r_t / sum r, and the softer w_t ∝ exp r_t (``wmle_weighting``);
- errors: each class's share of a policy's negative log-likelihood on the validation references (where
  the policy has most to learn), and the mean NLL per token of each class, for the warm start and for each
  method's final policy.

Writes the ``summarization_weights`` section of BENCHMARKS.md. No setting is chosen from it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from bench.report import markdown_table, write_section
from components import data
from components.encoder_cache import EncodedSources
from components.models import load_tokenizer
from components.policy_losses import token_weights
from components.reference_rewards import eos_and_body, reference_token_rewards, reward_sources
from components.seq2seq_policy import encode_targets, sequence_log_probs, source_kwargs, tokenize_sources
from flows.checkpoints import load_guidance, load_policy
from flows.config import DEFAULT_PARAMS, load_params
from flows.summarization import split_file

METHODS = ("mle", "pgg", "seqpg")


def last_iteration(folder: Path) -> Path:
    return max(folder.glob("iter-*"), key=lambda p: int(p.name.split("-")[1]))


def token_classes(
    labels, mask, article_ids: torch.Tensor, article_mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Masks [N, T] of copied, novel and eos reference tokens."""
    _, body = eos_and_body(mask)
    visible = torch.zeros(len(labels), int(max(labels.max(), article_ids.max())) + 1, dtype=torch.bool)
    visible.scatter_(1, article_ids * article_mask.long(), article_mask.bool())
    copied = visible.gather(1, labels) & body.bool()
    return {"copied": copied.float(), "novel": (body.bool() & ~copied).float(), "eos": mask - body}


def policy_nll(policy_dir: Path, labels, mask, sources, frozen: bool, chunk: int = 64) -> torch.Tensor:
    _, model = load_policy(policy_dir, frozen)
    model.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(labels), chunk):
            rows = torch.arange(start, min(start + chunk, len(labels)))
            out = sequence_log_probs(model, labels[rows], mask[rows], **source_kwargs(sources, rows))
            parts.append(-out.logp)
    return torch.cat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/summarization"))
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_params(args.params)
    models, sampling = config.models.summarization, config.sampling.summarization
    frozen = models.freeze_encoder
    warm = args.runs / "warmstart"
    tokenizer, policy = load_policy(warm, frozen)
    guidance = load_guidance(last_iteration(args.runs / "pgg") / "guidance", freeze_backbone=True)
    reward_tokenizer = load_tokenizer(models.reward_backbone)

    def split(name: str):
        examples = data.read_summaries(split_file(config, name))
        labels, mask = encode_targets(
            tokenizer, [e.target for e in examples], sampling.max_target_tokens, policy
        )
        cache = args.runs / "encoder_cache" / f"{name}.pt"
        sources = EncodedSources.load(cache) if frozen and cache.exists() else dict(
            tokenize_sources(tokenizer, [e.source for e in examples], sampling.max_source_tokens, models.source_prefix)
        )  # fmt: skip
        article = tokenize_sources(tokenizer, [e.source for e in examples], sampling.max_source_tokens)
        classes = token_classes(labels, mask, article["input_ids"], article["attention_mask"])
        return examples, labels, mask, sources, classes

    # Weights on the training references, as pgg trains on them.
    examples, labels, mask, sources, classes = split("train")
    n_train = len(examples)
    readings = reward_sources(
        guidance, reward_tokenizer, [e.source for e in examples], sources, sampling.max_source_tokens
    )
    rewards = reference_token_rewards(guidance, labels, mask, readings)
    weightings = {
        "MLE (1 / length)": mask / mask.sum(dim=1, keepdim=True),
        "pgg, w_t = r_t / sum r (default)": token_weights(rewards, mask, "reward"),
        "pgg, w_t ∝ exp r_t": token_weights(rewards, mask, "exp_reward"),
    }
    n_tokens = {name: int(m.sum()) for name, m in classes.items()}
    weight_rows = [
        ["share of reference tokens", *(f"{100 * n_tokens[c] / int(mask.sum()):.1f}" for c in classes)],
        *[[name, *(f"{100 * float((w * m).sum() / w.sum()):.1f}" for m in classes.values())] for name, w in weightings.items()],
        ["pgg's mean r_t", *(f"{float((rewards * m).sum() / m.sum()):.3f}" for m in classes.values())],
    ]  # fmt: skip
    train_nll = policy_nll(warm, labels, mask, sources, frozen)
    weight_rows.append(
        [
            "warm start's NLL per token (nats)",
            *(f"{float((train_nll * m).sum() / m.sum()):.2f}" for m in classes.values()),
        ]
    )
    effective = 1 / (weightings["pgg, w_t = r_t / sum r (default)"] ** 2).sum(dim=1)
    ratio = float((effective / mask.sum(dim=1)).mean())

    # Errors on the validation references, before and after each method's training.
    _, labels, mask, sources, classes = split("validation")
    policies = {
        "warm start": warm,
        **{m: last_iteration(args.runs / m) / "policy" for m in METHODS if (args.runs / m).exists()},
    }
    error_rows = []
    for name, folder in policies.items():
        nll = policy_nll(folder, labels, mask, sources, frozen)
        shares = [f"{100 * float((nll * m).sum() / (nll * mask).sum()):.1f}" for m in classes.values()]
        means = [f"{float((nll * m).sum() / m.sum()):.2f}" for m in classes.values()]
        error_rows.append([name, *shares, *means, f"{float((nll * mask).sum() / mask.sum()):.3f}"])
        print(error_rows[-1], flush=True)

    names = list(classes)
    body = f"""Run read: `{args.runs}` (`params.yaml`: BBC titles, max {sampling.max_target_tokens} target tokens, guidance
`{last_iteration(args.runs / "pgg").name}` of pgg). Copied: the reference token occurs among the article's first
{sampling.max_source_tokens} tokens, which the policy and the guidance read; novel: it does not.

Weight mass on the {n_train} training references (% of the total), the guidance's mean reward per class, and how\nwell the warm start already fits each class there:

{markdown_table(["weighting", *names], weight_rows)}

pgg's weights put a reference's learning on {100 * ratio:.0f} % of its tokens, by the effective count
1 / sum w_t² against its length (MLE: 100 %).

Errors on the {len(labels)} validation references: each class's share of the policy's negative log-likelihood (%),
and its mean NLL per token (nats):

{markdown_table(["policy", *(f"NLL share, {n}" for n in names), *(f"NLL per token, {n}" for n in names), "NLL per token, all"], error_rows)}

{args.threads} torch threads; load average {os.getloadavg()[0]:.1f}."""
    write_section(
        "summarization_weights",
        "Summarization: where pgg's weights go, and where the errors are (issue #16)",
        body,
    )


if __name__ == "__main__":
    main()
