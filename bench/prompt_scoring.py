"""Prompt scoring throughput: MiniLM prototype task model with the input-embedding cache vs without.

Scores batches of random 5-word prompts against SST-2 16-shot train (seed 13, 32 rows), once with
the inputs encoded once (cached) and once re-encoding the inputs for every batch (uncached), and
reports prompts/s and the ratio. Also records, for the budget of the prompt-generation loop, the time
of one policy step (sample a batch, teacher-forced log-probs, REINFORCE update; the learned token
reward is not included) and the no-prompt / "It was" accuracy on SST-2 test (1,821 rows).

Run: python -m bench.prompt_scoring [--data-root ../shared/data] [--prompts 64] [--batch 16] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from bench.report import markdown_table, write_section
from components.gap_reward import accuracy, gap_reward
from components.prompt_losses import token_guided_reinforce_loss
from components.prompt_policy import build_prompt_policy, whole_word_token_ids
from components.task_models import build_task_model


def read_split(root: Path, dataset: str, seed: int, split: str) -> tuple[list[str], torch.Tensor]:
    path = root / "fsc" / "16-shot" / dataset / f"16-{seed}" / f"{split}.tsv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    column = "sentence" if dataset == "sst-2" else "text"
    return [r[column] for r in rows], torch.tensor([int(r["label"]) for r in rows])


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--policy-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = build_task_model("minilm", "sst-2")
    texts, labels = read_split(args.data_root, "sst-2", 13, "train")
    vocab = torch.tensor(whole_word_token_ids(task.tokenizer))
    picks = torch.randint(len(vocab), (args.prompts, 5), generator=torch.Generator().manual_seed(0))
    prompts = task.tokenizer.batch_decode(vocab[picks].tolist())
    batches = [prompts[i : i + args.batch] for i in range(0, len(prompts), args.batch)]

    task.class_probs(batches[0], texts)  # warm-up
    encoded, encode_s = timed(lambda: task.encode_inputs(texts))
    cached, cached_s = timed(lambda: torch.cat([task.class_probs(b, encoded) for b in batches]))
    uncached, uncached_s = timed(lambda: torch.cat([task.class_probs(b, texts) for b in batches]))
    assert torch.allclose(cached, uncached, atol=1e-5), "cached and uncached scores differ"
    train_acc = accuracy(cached, labels)

    # One policy step at batch size args.batch: sample, score (cached), reward, log-probs, update.
    policy = build_prompt_policy("minilm")
    optimizer = torch.optim.Adam(policy.adaptor.parameters(), lr=5e-5)
    generator = torch.Generator().manual_seed(0)
    sample_s, score_s, update_s = [], [], []
    for _ in range(args.policy_steps + 1):  # the first step is a warm-up
        start = time.perf_counter()
        ids, step_prompts = policy.sample(args.batch, top_k=256, generator=generator)
        sampled = time.perf_counter()
        rewards = gap_reward(task.class_probs(step_prompts, encoded), labels, generator=generator)
        scored = time.perf_counter()
        log_probs, entropy = policy.log_probs_and_entropy(ids)
        token_rewards = rewards[:, None].expand_as(log_probs) / 100
        loss = token_guided_reinforce_loss(log_probs, entropy, token_rewards)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sample_s.append(sampled - start)
        score_s.append(scored - sampled)
        update_s.append(time.perf_counter() - scored)
    mean = lambda xs: sum(xs[1:]) / len(xs[1:])  # noqa: E731
    step_total = mean(sample_s) + mean(score_s) + mean(update_s)

    test_texts, test_labels = read_split(args.data_root, "sst-2", 13, "test")
    test_encoded, test_encode_s = timed(lambda: task.encode_inputs(test_texts))
    no_prompt = accuracy(task.no_prompt_class_probs(test_encoded), test_labels).item()
    it_was = accuracy(task.class_probs(["It was"], test_encoded), test_labels).item()

    n = len(prompts)
    scoring = markdown_table(
        ["scoring (MiniLM prototype, SST-2 train seed 13, 32 rows)", "seconds", "prompts/s"],
        [
            [
                f"cached: inputs encoded once ({encode_s:.2f} s, not counted), {n} prompts in batches of {args.batch}",
                f"{cached_s:.2f}",
                f"{n / cached_s:.0f}",
            ],
            [
                f"uncached: inputs re-encoded for every batch of {args.batch}",
                f"{uncached_s:.2f}",
                f"{n / uncached_s:.0f}",
            ],
            ["**speed-up of the cache**", "", f"**{uncached_s / cached_s:.2f}x**"],
        ],
    )
    step = markdown_table(
        [f"policy step, batch {args.batch} (MiniLM causal policy, mean of {args.policy_steps})", "seconds"],
        [
            ["sample 16 prompts (5 tokens, top-k 256)", f"{mean(sample_s):.3f}"],
            ["score them (cached) + gap reward", f"{mean(score_s):.3f}"],
            ["teacher-forced log-probs + REINFORCE loss + Adam step", f"{mean(update_s):.3f}"],
            ["**total per step** (learned token reward not included)", f"**{step_total:.3f}**"],
        ],
    )
    body = (
        f"{scoring}\n\n{step}\n\n"
        f"Random 5-word prompts on the train split: accuracy {train_acc.min():.1%} to {train_acc.max():.1%} "
        f"(mean {train_acc.mean():.1%}).\n\n"
        f"SST-2 test (seed 13 file, {len(test_texts)} rows, encoded in {test_encode_s:.1f} s): "
        f'no prompt {no_prompt:.1%}, "It was" {it_was:.1%}.\n\n'
        f"Load average during the run: {os.getloadavg()[0]:.1f} (2-core machine shared with other jobs)."
    )
    print(body)
    command = "python -m bench.prompt_scoring " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_section("prompt_scoring", "Prompt scoring: embedding cache vs re-encoding", body, command.strip())


if __name__ == "__main__":
    main()
