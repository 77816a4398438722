"""Prompt-conditioned scoring speed: the prefix-LM task model's padded path (``packed=False``, the reference)
vs the packed path (the default), timed interleaved in one process on a few-shot train split.

    python -m bench.prompt_scoring [--threads 2] [--reps 7] [--dataset sst-2] [--seed 13]
    python -m bench.prompt_scoring --smoke     # tiny encoder, seconds: prints the section

Also reported: the FLOPs a prompt needs (counted from the model's shapes), the machine's fp32 matmul
GFLOP/s (a torch.mm of the feed-forward's shape, same threads) and so the prompts/s it would take to
run at that rate, the load average before and after, and the max abs difference of the probabilities.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from bench.report import add_smoke_flag, markdown_table, smoke_mode, write_section
from components.data import load_fsc
from components.task_models import PrefixLMTaskModel, build_task_model
from flows.config import DEFAULT_PARAMS, load_params

# Prompts of the length the search samples (RLPrompt: 5 policy tokens), 3 to 8 wordpieces here
PROMPTS = [
    "It was really", "the film is absolutely", "Overall my opinion", "this movie seems quite",
    "I think it was", "a review saying that the", "Honestly , it felt", "so in the end",
    "Absolutely", "The acting was", "All in all , a", "critics called it",
    "my verdict :", "In short it is", "What a truly", "the story feels",
]  # fmt: skip


def continuation_lengths(model: PrefixLMTaskModel, prompts: list[str]) -> list[int]:
    """Tokens of each continuation "prompt verbalizer [SEP]", for every prompt and class."""
    texts = [f"{p} {v}" for p in prompts for v in model.verbalizers]
    return [len(ids) + 1 for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def flops_per_prompt(model: PrefixLMTaskModel, inputs: list[list[int]], prompts: list[str]) -> float:
    """Multiply-adds x 2 of one prompt over the split, real tokens only: per layer and continuation token
    the Q/K/V and output projections and the feed-forward, plus attention over the input and itself."""
    config = model.encoder.config
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 2 * hidden * 4 * hidden + 2 * 2 * hidden * inner  # QKV + out, FFN up and down
    # attention: the scores q.k and the weighted sum of the values, over the input and the continuation
    total = sum(
        t * (per_token + 2 * 2 * hidden * (len(x) + t))
        for t in continuation_lengths(model, prompts)
        for x in inputs
    )
    return layers * total / len(prompts)


def matmul_gflops(rows: int, hidden: int, inner: int, reps: int = 5) -> float:
    """fp32 GFLOP/s of torch.mm [rows, hidden] @ [hidden, inner] (best of ``reps``)."""
    a, b = torch.randn(rows, hidden), torch.randn(hidden, inner)
    for _ in range(2):  # warm-up: thread pool, allocator
        a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(reps))
    return 2 * rows * hidden * inner / best / 1e9


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--dataset", default="sst-2")
    parser.add_argument("--seed", type=int, default=13, help="the 16-shot data seed")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="its data.root is read")
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    prompts = PROMPTS
    if args.smoke:
        args.model, args.reps, prompts = "tiny", 2, PROMPTS[:4]
        smoke_mode(True)
    torch.set_num_threads(args.threads)
    root = load_params(args.params).data.root
    texts = [row.text for row in load_fsc(root, args.dataset, args.seed, "train")]
    packed = build_task_model(args.model, args.dataset, kind="prefix_lm")
    padded = PrefixLMTaskModel(packed.tokenizer, packed.encoder, packed.verbalizers, packed=False)
    encoded = packed.encode_inputs(texts)
    config = packed.encoder.config
    load_before = os.getloadavg()
    # the feed-forward's matmul in one call: one row per continuation token of every input
    mm_rows = len(texts) * sum(continuation_lengths(packed, prompts))
    gflops_before = matmul_gflops(mm_rows, config.hidden_size, config.intermediate_size)
    probs = {"padded": padded.class_probs(prompts, encoded), "packed": packed.class_probs(prompts, encoded)}
    seconds: dict[str, list[float]] = {"padded": [], "packed": []}
    for rep in range(args.reps):  # interleaved, the order swapped every rep
        for name in ("padded", "packed") if rep % 2 == 0 else ("packed", "padded"):
            model = padded if name == "padded" else packed
            seconds[name].append(_seconds(lambda m=model: m.class_probs(prompts, encoded)))
    gflops_after = matmul_gflops(mm_rows, config.hidden_size, config.intermediate_size)
    load_after = os.getloadavg()
    diff = (probs["packed"] - probs["padded"]).abs().max().item()
    # the reference against itself, continuations run 8 at a time instead of 32: float rounding alone
    eights = PrefixLMTaskModel(
        packed.tokenizer, packed.encoder, packed.verbalizers, packed=False, max_continuations=8
    )
    jitter = (eights.class_probs(prompts, encoded) - probs["padded"]).abs().max().item()
    rate = {name: len(prompts) / statistics.median(s) for name, s in seconds.items()}
    ratios = [a / b for a, b in zip(seconds["padded"], seconds["packed"], strict=True)]
    flops = flops_per_prompt(packed, encoded.data, prompts)
    gflops = max(gflops_before, gflops_after)
    print(
        {
            "seconds": seconds,
            "rate": rate,
            "diff": diff,
            "jitter": jitter,
            "flops": flops,
            "gflops": (gflops_before, gflops_after),
        }
    )
    rows = [
        [name, f"{rate[name]:.2f}", f"{len(prompts) / min(seconds[name]):.2f}",
         f"{flops * rate[name] / 1e9:.1f}"]
        for name in ("padded", "packed")
    ]  # fmt: skip
    body = f"""
`PrefixLMTaskModel` ({args.model}, reading filled) scoring {len(prompts)} prompts x {
        len(packed.verbalizers)
    } classes
against the {len(texts)} rows of the {args.dataset} 16-shot train split (seed {
        args.seed
    }), one `class_probs` call
per rep, the input cache warm; {args.reps} reps per path, interleaved, the order swapped every rep.
The padded path (`packed=False`, the reference) runs every continuation padded to the longest, with a
block-diagonal mask over all of them concatenated to the cached keys; the packed path (the default,
`components.prefix_encoder.pool_shared_continuations`) runs the real tokens only and splits attention
between the cache and each continuation's own block.

{markdown_table(["path", "prompts/s (median)", "prompts/s (best)", "GFLOP/s of useful work"], rows)}

Speed-up (median of the per-rep ratios): **{statistics.median(ratios):.2f}x** (range {min(ratios):.2f}-{
        max(ratios):.2f}x); max abs difference of the class probabilities: {diff:.1e}
(the padded path against itself, run 8 continuations at a time instead of 32: {jitter:.1e}; temperature
0.01 turns a cosine's last-bit rounding, ~1e-7, into up to ~1e-5 of probability).

FLOPs per prompt (counted: per layer and real continuation token, Q/K/V/output projections and the
feed-forward, plus attention over the input and the continuation): {flops / 1e9:.2f} GFLOP
({len(texts)} inputs x {len(packed.verbalizers)} classes x ~{
        statistics.mean(continuation_lengths(packed, prompts)):.1f} tokens x {
        config.num_hidden_layers
    } layers).
fp32 torch.mm ({mm_rows} x {config.hidden_size} @ {config.hidden_size} x {
        config.intermediate_size
    }) on this machine: {gflops_before:.1f} GFLOP/s before, {gflops_after:.1f} after; at {
        gflops:.1f} GFLOP/s a prompt takes at least {1e3 * flops / (gflops * 1e9):.0f} ms, a floor of **{
        gflops * 1e9 / flops:.1f} prompts/s** for an
exact fp32 scorer ({gflops * 1e9 / flops / rate["padded"]:.1f}x the padded path).
The continuation tokens attend to each other in both directions (a prompt's states depend on the
verbalizer after it), so sharing the prompt's states across classes would change the scores: not done.

Load average before: {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}, after: {
        load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f} (1/5/15 min; {os.cpu_count()} CPUs), {
        args.threads
    } torch thread(s). Timings on a loaded machine are only
comparable side by side (the ratio), not as absolute rates.
"""
    write_section("prompt_scoring", "Prompt-conditioned scoring speed (prefix-LM task model)", body)


if __name__ == "__main__":
    main()
