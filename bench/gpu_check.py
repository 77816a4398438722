"""Device check: a tiny end-to-end pgg loop, then throughput, on whatever device is present (< 5 min).

    python -m bench.gpu_check                 # minilm BERT2BERT policy, cuda if visible, else CPU
    python -m bench.gpu_check --smoke         # tiny policy, 8 articles, seconds: prints, writes nothing

The loop runs every stage of one pgg iteration on synthetic articles (no data files needed): sample K
per article, rank by ROUGE, fit the guidance, reward the references, weighted-MLE steps, greedy
evaluation. Throughput, each against its baseline in the same run: sampling tokens/s; a weighted-MLE
training step in fp32 and with bf16 autocast (tokens/s); greedy decoding of sources in batches sorted
by length against batches in corpus order.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import time
from pathlib import Path

import torch

import flows  # noqa: F401  (offline defaults)
from bench.report import add_smoke_flag, markdown_table, write_section
from components.encoder_cache import encode_sources
from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec, load_model
from components.policy_trainer import train_policy
from components.preferences import make_preference, rank_candidates
from components.reference_rewards import reference_token_rewards
from components.reward_model import TokenRewardModel
from components.rouge import compute_rouge
from components.seq2seq_policy import (
    encode_targets,
    freeze_encoder,
    generate_greedy,
    length_batches,
    sample_k,
    source_kwargs,
    tokenize_sources,
)
from flows.common import pick_device
from flows.config import DEFAULT_PARAMS, load_params
from flows.distributed import Hardware, make_accelerator

WORDS = (
    "market shares rose fell government minister said report company profits sales growth bank rates "
    "club season match players coach film music award show election party vote court police city"
).split()


def synthetic_articles(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Articles of 8 to 120 words (so lengths vary as in a real corpus); the title is the first 6."""
    rng = random.Random(seed)
    articles = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 120))) for _ in range(n)]
    return articles, [" ".join(a.split()[:6]) for a in articles]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    value = fn()
    sync(device)
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="minilm (default) | tiny | a hub seq2seq name")
    parser.add_argument("--articles", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16, help="articles per batch")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="weighted-MLE steps per timing round")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="the guidance fit's settings")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.articles, args.batch, args.steps, args.no_write = "tiny", 8, 4, 1, True
    device = pick_device(args.device)
    started = time.perf_counter()
    torch.manual_seed(0)
    spec = ModelSpec(args.model, "seq2seq", 2 if args.model == "minilm" else None)
    tokenizer, policy = load_model(spec)
    freeze_encoder(policy)
    policy.to(device)
    articles, titles = synthetic_articles(args.articles)
    sources = encode_sources(policy.get_encoder(), tokenizer, articles, max_length=128, dtype=torch.float32)
    labels, mask = encode_targets(tokenizer, titles, 12, policy)
    lengths = sources.attention_mask.sum(dim=1)

    # --- the loop, once ---------------------------------------------------------------------------
    stages: dict[str, float] = {}
    start = time.perf_counter()
    candidates: dict[int, list[str]] = {}
    for chunk, rows in enumerate(length_batches(lengths, args.batch)):
        part = sources.select(rows)
        out = sample_k(policy, tokenizer, attention_mask=part.attention_mask, encoder_hidden=part.hidden,
                       k=args.k, top_k=50, top_p=0.95, max_new_tokens=12, seed=chunk)  # fmt: skip
        groups = [out.texts[j : j + args.k] for j in range(0, len(out.texts), args.k)]
        candidates.update(zip(rows.tolist(), groups, strict=True))
    lists = rank_candidates(
        make_preference("rouge"), articles, [candidates[i] for i in range(len(articles))], titles
    )
    stages["sample + rank"] = time.perf_counter() - start
    start = time.perf_counter()
    reward_tokenizer, reward_model = TokenRewardModel.from_spec(spec, head_hidden=256, freeze_backbone=True)
    accelerator = make_accelerator(Hardware(device=args.device))
    params = load_params(args.params)
    guidance_config = dataclasses.replace(
        params.guidance.summarization.trainer_config(0, 12, 128), epochs=2, batch_size=args.batch
    )
    report = GuidanceTrainer(reward_model, reward_tokenizer, guidance_config, accelerator).fit(lists)
    stages["fit guidance"] = time.perf_counter() - start
    start = time.perf_counter()
    rewards = reference_token_rewards(reward_model, labels, mask, sources)
    config = dataclasses.replace(
        params.policy.summarization.train_config("pgg", args.steps, 1e-4, 0, params.sampling.summarization),
        batch_size=args.batch,
        sampled_articles=None,
    )
    history = train_policy(policy, tokenizer, sources, labels, mask, config, rewards, accelerator=accelerator)
    stages["reward references + WMLE steps"] = time.perf_counter() - start
    start = time.perf_counter()
    predictions: dict[int, str] = {}
    for rows in length_batches(lengths, args.batch):
        part = sources.select(rows)
        texts = generate_greedy(policy, tokenizer, attention_mask=part.attention_mask,
                                encoder_hidden=part.hidden, max_new_tokens=12).texts  # fmt: skip
        predictions.update(zip(rows.tolist(), texts, strict=True))
    rouge = compute_rouge([predictions[i] for i in range(len(articles))], titles)
    stages["greedy evaluation"] = time.perf_counter() - start
    healthy = math.isfinite(report.val_loss) and all(math.isfinite(h["loss"]) for h in history)

    # --- throughput -------------------------------------------------------------------------------
    rows = torch.arange(min(args.batch, len(articles)))
    part = sources.select(rows)
    sample_k(
        policy,
        tokenizer,
        attention_mask=part.attention_mask,
        encoder_hidden=part.hidden,
        k=args.k,
        max_new_tokens=24,
        seed=0,
    )  # fmt: skip  (warm-up)
    sampled, sample_seconds = timed(
        lambda: sample_k(
            policy,
            tokenizer,
            attention_mask=part.attention_mask,
            encoder_hidden=part.hidden,
            k=args.k,
            top_k=0,
            max_new_tokens=24,
            seed=1,
        ),  # fmt: skip
        device,
    )
    sample_tokens = int(sampled.mask.sum())

    step_tokens = float(mask.sum(dim=1).mean()) * args.batch
    wmle = {"fp32": [], "bf16": []}
    for _ in range(2):  # interleaved rounds; the faster round of each counts
        for precision in wmle:
            hw = Hardware(device=args.device, bf16=precision == "bf16")
            history, seconds = timed(
                lambda hw=hw: train_policy(
                    policy,
                    tokenizer,
                    sources,
                    labels,
                    mask,
                    config,
                    rewards,
                    accelerator=make_accelerator(hw),
                ),
                device,
            )
            wmle[precision].append(seconds / args.steps)

    live_sources = dict(tokenize_sources(tokenizer, articles, 128))  # padded to the longest article

    def greedy_all(batches, live: bool):
        for rows in batches:
            if live:  # the encoder runs on the batch, padded to its longest source (T5, trainable encoder)
                kwargs = source_kwargs(live_sources, rows)
            else:  # cached encoder states: only cross-attention sees the source length
                part = sources.select(rows)
                kwargs = {"attention_mask": part.attention_mask, "encoder_hidden": part.hidden}
            generate_greedy(policy, tokenizer, **kwargs, max_new_tokens=12)

    in_order = list(torch.arange(len(articles)).split(args.batch))
    by_length = length_batches(lengths, args.batch)
    greedy = {(live, batches): [] for live in (True, False) for batches in ("order", "sorted")}
    for _ in range(2):
        for live, batches in greedy:
            chosen = in_order if batches == "order" else by_length
            greedy[live, batches].append(timed(lambda c=chosen, v=live: greedy_all(c, v), device)[1])
    greedy = {key: min(values) for key, values in greedy.items()}
    total = time.perf_counter() - started

    accuracy = (
        f"{report.val_pairwise_accuracy:.2f}"
        if math.isfinite(report.val_pairwise_accuracy)
        else "n/a (the untrained policy's samples all tie under ROUGE)"
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    loop_table = markdown_table(
        ["stage of one pgg iteration", "seconds"], [[k, f"{v:.2f}"] for k, v in stages.items()]
    )
    fp32, bf16 = min(wmle["fp32"]), min(wmle["bf16"])
    throughput = markdown_table(
        ["measurement", "seconds", "tokens/s", "vs baseline"],
        [
            [f"sampling: {len(rows)} articles × K={args.k}, ≤24 new tokens ({sample_tokens} generated)",
             f"{sample_seconds:.2f}", f"{sample_tokens / sample_seconds:.0f}", ""],
            [f"weighted-MLE step, fp32 (batch {args.batch}, {step_tokens:.0f} target tokens)",
             f"{fp32:.3f}", f"{step_tokens / fp32:.0f}", "1.00x"],
            ["weighted-MLE step, bf16 autocast (same batch)", f"{bf16:.3f}", f"{step_tokens / bf16:.0f}",
             f"{fp32 / bf16:.2f}x speed"],
            *[
                row
                for live, label in ((True, "live encoder"), (False, "cached encoder states"))
                for row in (
                    [f"greedy decoding of {len(articles)} sources ({label}), batches of {args.batch} in "
                     "corpus order", f"{greedy[live, 'order']:.2f}", "", "1.00x"],
                    ["same, batches sorted by source length", f"{greedy[live, 'sorted']:.2f}", "",
                     f"{greedy[live, 'order'] / greedy[live, 'sorted']:.2f}x speed"],
                )
            ],
        ],
    )  # fmt: skip
    body = (
        f"Device: **{name}**, policy `{args.model}` (frozen encoder, cached states), {len(articles)} "
        f"synthetic articles of 8-120 words. Loop {'healthy' if healthy else 'NOT HEALTHY (non-finite loss)'}: "
        f"guidance val pairwise accuracy {accuracy}, policy loss "
        f"{history[0]['loss']:.2f} → {history[-1]['loss']:.2f}, greedy ROUGE-L {100 * rouge['rougeL']:.1f}.\n\n"
        f"{loop_table}\n\n{throughput}\n\n"
        f"Timings are the faster of 2 interleaved rounds. Whole check: {total:.0f} s. "
        f"Load average during the run: {os.getloadavg()[0]:.1f}."
    )
    print(body)
    if not healthy:
        raise SystemExit("the loop produced a non-finite loss")
    if not args.no_write:
        command = "python -m bench.gpu_check" + (f" --model {args.model}" if args.model != "minilm" else "")
        write_section("gpu_check", f"Device check: tiny loop and throughput ({device.type})", body, command)


if __name__ == "__main__":
    main()
