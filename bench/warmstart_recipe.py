"""Scratch experiment: which supervised warm start gives a usable headline policy fastest on a small CPU?

Frozen MiniLM encoder (states cached once), MiniLM-initialised BERT decoder with fresh cross-attention,
teacher-forced MLE on BBC titles. Greedy ROUGE-L on 100 held-out articles (the validation split of
components.data) at checkpoints, against the lead-k baseline on the same articles.

  python bench/warmstart_recipe.py run --decoder-layers 2 --source-tokens 128 --lr 5e-4 --budget-s 300
  python bench/warmstart_recipe.py report     # writes the BENCHMARKS.md section from all runs so far
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from components.data import load_bbc, split_examples  # noqa: E402
from components.encoder_cache import EncodedSources, encode_sources  # noqa: E402
from components.lead_baseline import lead_summaries  # noqa: E402
from components.models import ModelSpec, load_model  # noqa: E402
from components.policy_losses import mle_loss  # noqa: E402
from components.rouge import compute_rouge  # noqa: E402
from components.seq2seq_policy import (  # noqa: E402
    encode_targets,
    freeze_encoder,
    generate_greedy,
    sample_k,
    sequence_log_probs,
)

DATA_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
WORK = Path(os.environ.get("WARMSTART_DIR", "/tmp/warmstart"))
RESULTS = WORK / "results.jsonl"
EVAL_ARTICLES = 100


def examples():
    splits = split_examples(load_bbc(DATA_ROOT, "title"), validation_fraction=0.05, test_fraction=0.05)
    return splits["train"], splits["validation"][:EVAL_ARTICLES]


def cached_sources(tokenizer, model, texts: list[str], source_tokens: int) -> tuple[EncodedSources, float]:
    path = WORK / f"sources_{source_tokens}.pt"
    if path.exists():
        meta = json.loads((WORK / f"sources_{source_tokens}.json").read_text())
        return EncodedSources.load(path), meta["seconds"]
    start = time.perf_counter()
    enc = encode_sources(model.get_encoder(), tokenizer, texts, max_length=source_tokens, batch_size=32)
    seconds = time.perf_counter() - start
    enc.save(path)
    (WORK / f"sources_{source_tokens}.json").write_text(json.dumps({"seconds": seconds, "n": len(texts)}))
    return enc, seconds


def evaluate_greedy(
    model, tokenizer, enc: EncodedSources, references: list[str], max_new_tokens: int, batch=100
):
    start = time.perf_counter()
    texts = []
    for i in range(0, len(enc), batch):
        src = enc.select(range(i, min(i + batch, len(enc))))
        out = generate_greedy(
            model,
            tokenizer,
            encoder_hidden=src.hidden,
            attention_mask=src.attention_mask,
            max_new_tokens=max_new_tokens,
        )
        texts += out.texts
    seconds = time.perf_counter() - start
    return compute_rouge(texts, references), texts, seconds


def run(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    WORK.mkdir(parents=True, exist_ok=True)
    train, held_out = examples()
    tokenizer, model = load_model(ModelSpec("minilm", "seq2seq", decoder_layers=args.decoder_layers))
    freeze_encoder(model)
    if args.freeze_embeddings:  # the decoder's word embeddings are tied to its output layer
        model.decoder.get_input_embeddings().weight.requires_grad_(False)
    enc, encode_seconds = cached_sources(
        tokenizer, model, [e.source for e in train + held_out], args.source_tokens
    )
    train_enc = enc.select(range(len(train)), trim=False)
    eval_enc = enc.select(range(len(train), len(enc)), trim=False)
    references = [e.target for e in held_out]
    labels, mask = encode_targets(tokenizer, [e.target for e in train], args.target_tokens, model)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    warmup = 20
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train), generator=generator)
    cursor, step, train_seconds, cpu_seconds = 0, 0, 0.0, 0.0
    checkpoints = []
    eval_at = sorted(set(args.eval_at))
    model.train()
    while train_seconds < args.budget_s and step < args.max_steps:
        tick, cpu_tick = time.perf_counter(), time.process_time()
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(train), generator=generator), 0
        idx = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        src = train_enc.select(idx)
        length = int(mask[idx].sum(dim=1).max())
        lp = sequence_log_probs(
            model,
            labels[idx, :length],
            mask[idx, :length],
            encoder_hidden=src.hidden,
            attention_mask=src.attention_mask,
        )
        loss = mle_loss(lp.logp, lp.mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / warmup)
        optimizer.step()
        step += 1
        train_seconds += time.perf_counter() - tick
        cpu_seconds += time.process_time() - cpu_tick
        if args.probe:
            if step == 2:  # the first steps pay one-off allocation costs
                train_seconds = cpu_seconds = 0.0
            continue
        if step in eval_at or train_seconds >= args.budget_s or step >= args.max_steps:
            scores, texts, eval_seconds = evaluate_greedy(
                model, tokenizer, eval_enc, references, args.target_tokens
            )
            checkpoints.append(
                dict(
                    step=step,
                    train_s=round(train_seconds, 1),
                    cpu_s=round(cpu_seconds, 1),
                    loss=round(loss.item(), 3),
                    rougeL=round(100 * scores["rougeL"], 1),
                    rouge1=round(100 * scores["rouge1"], 1),
                    rouge2=round(100 * scores["rouge2"], 1),
                    eval_s=round(eval_seconds, 1),
                    examples=texts[:3],
                )
            )
            print(json.dumps(checkpoints[-1]), flush=True)
            model.train()

    if args.probe:  # timing only: steps 3..max_steps
        timed = step - 2
        probe = dict(
            tag=args.tag,
            decoder_layers=args.decoder_layers,
            source_tokens=args.source_tokens,
            freeze_embeddings=args.freeze_embeddings,
            threads=args.threads,
            steps=timed,
            s_per_step=round(train_seconds / timed, 3),
            cpu_s_per_step=round(cpu_seconds / timed, 3),
            trainable_params=sum(p.numel() for p in params),
            load_avg=os.getloadavg()[0],
        )
        with (WORK / "probe.jsonl").open("a") as f:
            f.write(json.dumps(probe) + "\n")
        print(json.dumps(probe), flush=True)
        return
    result = dict(
        tag=args.tag,
        decoder_layers=args.decoder_layers,
        source_tokens=args.source_tokens,
        target_tokens=args.target_tokens,
        batch_size=args.batch_size,
        lr=args.lr,
        freeze_embeddings=args.freeze_embeddings,
        trainable_params=sum(p.numel() for p in params),
        encode_s=round(encode_seconds, 1),
        encode_n=len(enc),
        s_per_step=round(train_seconds / step, 3),
        cpu_s_per_step=round(cpu_seconds / step, 3),
        threads=args.threads,
        load_avg=os.getloadavg()[0],
        checkpoints=checkpoints,
        references=references[:3],
        lead=[
            dict(
                k=k,
                rougeL=round(
                    100
                    * compute_rouge(lead_summaries([e.source for e in held_out], k), references)["rougeL"],
                    1,
                ),
            )
            for k in (6, 8)
        ],
    )
    if args.measure_sampling:
        result["timing"] = measure_generation(model, tokenizer, train_enc, args.target_tokens)
    with RESULTS.open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "checkpoints"}), flush=True)


def measure_generation(model, tokenizer, enc: EncodedSources, max_new_tokens: int) -> dict:
    """Wall time of K=3 samples for 256 articles, and of greedy decoding for 200 articles."""
    start = time.perf_counter()
    for i in range(0, 256, 64):
        src = enc.select(range(i, i + 64))
        sample_k(
            model,
            tokenizer,
            encoder_hidden=src.hidden,
            attention_mask=src.attention_mask,
            k=3,
            top_k=50,
            top_p=0.95,
            max_new_tokens=max_new_tokens,
            seed=i,
        )
    sample_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, 200, 100):
        src = enc.select(range(i, i + 100))
        generate_greedy(
            model,
            tokenizer,
            encoder_hidden=src.hidden,
            attention_mask=src.attention_mask,
            max_new_tokens=max_new_tokens,
        )
    return dict(sample_k3_256_s=round(sample_seconds, 1), greedy_200_s=round(time.perf_counter() - start, 1))


def report(_args) -> None:
    from bench.report import markdown_table, write_section

    runs = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    rows = [
        [
            r["tag"],
            r["decoder_layers"],
            r["source_tokens"],
            r["lr"],
            r.get("threads", 2),
            c["step"],
            c["train_s"],
            c.get("cpu_s", "-"),
            c["rougeL"],
            c["rouge1"],
            c["rouge2"],
            c["eval_s"],
        ]
        for r in runs
        for c in r["checkpoints"]
    ]
    lead = runs[-1]["lead"]
    body = (
        "Frozen MiniLM encoder (cached states, 128 source tokens), MiniLM-initialised BERT decoder with new "
        f"cross-attention, MLE on BBC titles (<= {runs[-1]['target_tokens']} target tokens), batch "
        f"{runs[-1]['batch_size']}, AdamW, 20 warm-up steps then constant lr, grad clip 1. Greedy ROUGE F1 x100 on "
        f"{EVAL_ARTICLES} held-out articles (validation split of components.data). Baseline on the same articles: "
        + ", ".join(f"lead-{x['k']} ROUGE-L {x['rougeL']}" for x in lead)
        + ".\n\n**Load caveat:** the 2-core machine was shared with other jobs (load average 4-6) during these "
        "runs, so wall times are 3-4x inflated; `cpu s` (process CPU time, 1 torch thread) is the steadier "
        "cost measure.\n\n"
        + markdown_table(
            [
                "run",
                "dec layers",
                "src tokens",
                "lr",
                "threads",
                "step",
                "wall s",
                "cpu s",
                "R-L",
                "R-1",
                "R-2",
                "eval s (100 greedy)",
            ],
            rows,
        )
    )
    probe_path = WORK / "probe.jsonl"
    if probe_path.exists():
        probes = [json.loads(line) for line in probe_path.read_text().splitlines() if line.strip()]
        body += "\n\nCost per training step (10 timed steps, 1 thread, same load):\n\n" + markdown_table(
            ["config", "trainable params", "cpu s/step", "wall s/step (loaded)"],
            [
                [p["tag"], f"{p['trainable_params'] / 1e6:.1f}M", p["cpu_s_per_step"], p["s_per_step"]]
                for p in probes
            ],
        )
    encodes = {r["source_tokens"]: (r["encode_s"], r["encode_n"]) for r in runs}
    body += (
        "\n\nEncoder cache build (once, shared by all runs, under the same load): "
        + ", ".join(f"{s} source tokens {t} s for {n} articles" for s, (t, n) in sorted(encodes.items()))
        + "."
    )
    timing_path = WORK / "gen_timing.json"
    if timing_path.exists():
        t = json.loads(timing_path.read_text())
        body += (
            f"\n\nGeneration, 2 threads, load average {t['load_avg']:.1f}, {t['note']}: K=3 samples x 256 "
            f"articles (top-k 50, top-p 0.95) {t['sample_k3_256_s']} s; greedy on 200 articles {t['greedy_200_s']} s."
        )
    body += (
        "\n\nReading: lr 1e-3 learns about twice as fast per step as 5e-4 (ROUGE-L 18.9 vs 11.0 at step 300). "
        "A 3-layer decoder costs the same CPU per step as 2 layers; 6 layers cost ~40% more; freezing the tied "
        "word embeddings/output layer saves ~30% (ROUGE effect not measured). Not measured here: 256 source tokens, "
        "more than 300 steps."
    )
    write_section(
        "warmstart_recipe",
        "Summarization warm start on a 2-core CPU",
        body,
        command="python bench/warmstart_recipe.py run ... (one per run); python bench/warmstart_recipe.py report",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tag", default="run")
    r.add_argument("--decoder-layers", type=int, default=2)
    r.add_argument("--source-tokens", type=int, default=128)
    r.add_argument("--target-tokens", type=int, default=24)
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--lr", type=float, default=5e-4)
    r.add_argument("--budget-s", type=float, default=300)
    r.add_argument("--max-steps", type=int, default=100_000)
    r.add_argument("--eval-at", type=int, nargs="*", default=[100, 200, 300, 400, 600, 800])
    r.add_argument("--freeze-embeddings", action="store_true")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--probe", action="store_true", help="time steps only, no evaluation")
    r.add_argument("--measure-sampling", action="store_true")
    r.set_defaults(func=run)
    sub.add_parser("report").set_defaults(func=report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
