"""Cost of scoring B×K candidates with the token reward model, against a plain backbone forward.

The reward model runs the backbone once on all B×K sequences, then an MLP head (2048 hidden)
per token, masking and aggregation. The baseline is the same backbone's own forward on the
same token tensors. Variants are timed interleaved (A, B, A, B, ...); ratios use the minimum\n(least disturbed by other jobs), medians are shown as well.

  python -m bench.guidance_scoring --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.report import markdown_table, write_section  # noqa: E402
from components.aggregation import aggregate  # noqa: E402
from components.models import ModelSpec, load_model  # noqa: E402
from components.ranking_losses import plackett_luce_loss  # noqa: E402
from components.reward_model import TokenRewardModel  # noqa: E402


def random_tokens(n: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids from the word-piece range of the MiniLM vocab; lengths from length/2 to length, right-padded."""
    ids = torch.randint(1996, 29000, (n, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (n,), generator=generator)
    mask = (torch.arange(length) < lengths[:, None]).long()
    return ids * mask, mask


def timings(fns: dict, repeats: int) -> dict:
    """{name: (min, median)} seconds; min is the least disturbed by other jobs on a shared box."""
    for fn in fns.values():  # warm-up
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (min(ts), statistics.median(ts)) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="inputs B")
    parser.add_argument("--k", type=int, default=3, help="candidates per input K")
    parser.add_argument("--tokens", type=int, default=32, help="candidate length T (max)")
    parser.add_argument("--source-tokens", type=int, default=128, help="source length for the seq2seq rows")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    b, k, n = args.batch, args.k, args.batch * args.k
    ids, mask = random_tokens(n, args.tokens, g)
    preference = torch.rand(b, k, generator=g)

    # Encoder backbone (MiniLM BertModel), frozen as the flows use it.
    _, encoder = load_model(ModelSpec("minilm", "encoder"))
    reward = TokenRewardModel(encoder, kind="encoder", head_hidden=2048, freeze_backbone=True).eval()
    optimizer = torch.optim.Adam(reward.head.parameters(), lr=1e-4)

    def head_step():
        reward.train()
        scores = aggregate(reward(ids, mask).view(b, k, -1), mask.view(b, k, -1), "avg")
        loss = plackett_luce_loss(scores, preference)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        enc_times = timings(
            {
                "backbone": lambda: encoder(input_ids=ids, attention_mask=mask).last_hidden_state,
                "reward": lambda: reward(ids, mask),
            },
            args.repeats,
        )
    enc_times["step"] = timings({"step": head_step}, args.repeats)["step"]

    # Seq2seq backbone (MiniLM BERT2BERT): the reward model encodes each source once and shares
    # it among its K candidates; the plain forward gets the source repeated K times.
    _, seq2seq = load_model(ModelSpec("minilm", "seq2seq"))
    reward_s2s = TokenRewardModel(seq2seq, kind="seq2seq", head_hidden=2048, freeze_backbone=True).eval()
    src, src_mask = random_tokens(b, args.source_tokens, g)
    start = torch.full((n, 1), seq2seq.config.decoder_start_token_id)
    decoder_ids = torch.cat([start, ids], 1)
    decoder_mask = torch.cat([torch.ones_like(start), mask], 1)

    def plain_seq2seq():
        return seq2seq(
            input_ids=src.repeat_interleave(k, 0),
            attention_mask=src_mask.repeat_interleave(k, 0),
            decoder_input_ids=decoder_ids,
            decoder_attention_mask=decoder_mask,
        ).logits

    def plain_seq2seq_shared():
        states = seq2seq.get_encoder()(input_ids=src, attention_mask=src_mask).last_hidden_state
        return seq2seq(
            encoder_outputs=(states.repeat_interleave(k, 0),),
            attention_mask=src_mask.repeat_interleave(k, 0),
            decoder_input_ids=decoder_ids,
            decoder_attention_mask=decoder_mask,
        ).logits

    def reward_seq2seq():
        states = reward_s2s.encode_source(src, src_mask).repeat_interleave(k, 0)
        return reward_s2s(
            ids, mask, source_attention_mask=src_mask.repeat_interleave(k, 0), encoder_hidden_states=states
        )

    with torch.no_grad():
        s2s_times = timings(
            {"backbone": plain_seq2seq, "shared": plain_seq2seq_shared, "reward": reward_seq2seq},
            args.repeats,
        )

    shape = f"B={b}, K={k}, T≤{args.tokens}"

    def row(label, times, baseline, bold=False):
        ratio = f"{times[0] / baseline[0]:.2f}x"
        return [label, f"{1000 * times[0]:.1f}", f"{1000 * times[1]:.1f}", f"**{ratio}**" if bold else ratio]

    rows = [
        row(
            f"MiniLM encoder: plain forward on {n} sequences ({shape})",
            enc_times["backbone"],
            enc_times["backbone"],
        ),
        row(
            "MiniLM encoder: reward model forward (same tokens, one batched call)",
            enc_times["reward"],
            enc_times["backbone"],
            bold=True,
        ),
        row(
            "MiniLM encoder: head-only training step (forward, avg + Plackett-Luce, backward, Adam; with grad)",
            enc_times["step"],
            enc_times["backbone"],
        ),
        row(
            f"MiniLM BERT2BERT: plain forward, source ({args.source_tokens} tokens) repeated K times",
            s2s_times["backbone"],
            s2s_times["backbone"],
        ),
        row(
            "MiniLM BERT2BERT: plain forward, each source encoded once and shared (`encoder_outputs=`)",
            s2s_times["shared"],
            s2s_times["backbone"],
        ),
        row(
            "MiniLM BERT2BERT: reward model, each source encoded once and shared by its K candidates",
            s2s_times["reward"],
            s2s_times["backbone"],
            bold=True,
        ),
    ]
    load = os.getloadavg()[0]
    body = (
        markdown_table(
            [
                f"scoring B×K candidates ({args.repeats} runs, no grad unless noted)",
                "min ms",
                "median ms",
                "vs plain (min)",
            ],
            rows,
        )
        + "\n\nThe head is Linear(384, 2048) → ReLU → Linear(2048, 1) per token; random word-piece ids, "
        "lengths T/2..T, right-padded. The seq2seq plain forward includes the LM head (vocab 30522), "
        "which the reward model never computes.\n\n"
        f"Load average during the run: {load:.1f} ({os.cpu_count()}-core machine shared with other jobs)."
    )
    print(body)
    if not args.no_write:
        command = "python -m bench.guidance_scoring" + (f" --threads {args.threads}" if args.threads else "")
        write_section(
            "guidance_scoring", "Guidance scoring: reward model vs plain backbone forward", body, command
        )


if __name__ == "__main__":
    main()
