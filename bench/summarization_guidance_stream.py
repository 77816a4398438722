"""Summarization guidance on fresh lists of unseen articles: does it beat the word-overlap heuristic?

    python -m bench.summarization_guidance_stream [--warmstart-steps 100] [--train-lists 768]
        [--held-lists 160] [--threads 1] [--rows frozen,all,top2,embedding,frozen256]
        [--lists 256,1024,4096]   (each row at each count: held-out accuracy against the number of lists)

The cheapest diagnostic of issue 16, item 1, before any policy step:

1. Split the BBC train split (params.yaml's hash split) in two by a seeded shuffle: the first half
   trains a short MLE warm start of the policy (MiniLM BERT2BERT, frozen encoder, cached states),
   the second half is never seen by it. Of that half, ``--held-lists`` articles give the held-out
   lists; the others give the training lists.
2. Sample K candidates per article (params.yaml's sampling: K = 3, top-k 50, top-p 0.95) in rounds
   of 256 articles, a fresh seed per round, so lists are fresh even when an article comes back.
   Every list is scored by both the ROUGE preference (mean of ROUGE-1/2/L F) and the embedding one.
3. Fit the causal MiniLM reward model ([article; summary]) with ``GuidanceTrainer`` on the first n
   training lists, with a frozen backbone (head lr 1e-3), the top 2 layers or all layers trainable
   (lr 5e-5, few epochs: each list used about once or twice), and score it on the held-out lists
   beside "share of the summary's words found in the article".

Everything is cached under ``--root`` (warm start, encoder states, lists, one JSON line per fit), so
a rerun only does what is missing; the BENCHMARKS section is rewritten after every fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import re
import time
from pathlib import Path

import torch

import flows  # noqa: F401  (project-local Prefect home, offline hub)
from bench.report import markdown_table, this_command, write_section
from bench.summarization_weights import token_classes
from components import data
from components.encoder_cache import EncodedSources, encode_sources
from components.guidance_trainer import GuidanceTrainer
from components.models import ModelSpec, load_model
from components.policy_losses import token_weights
from components.policy_trainer import train_policy
from components.preferences import EmbeddingSimilarityPreference, RankedList, RougePreference
from components.reference_rewards import reference_token_rewards
from components.reward_model import TokenRewardModel
from components.seq2seq_policy import encode_targets, freeze_encoder, sample_k, tokenize_sources
from flows.checkpoints import is_complete, load_policy, save_policy
from flows.config import DEFAULT_PARAMS, load_params

SECTION = "summarization_guidance_stream"
ROUND_ARTICLES = 256  # articles sampled per round; each round draws a fresh seed
# name -> (label, trainable: None frozen | "all" | n top layers, lr, epochs, preference, lists or None = all)
FITS = {
    "frozen": ("frozen backbone, head lr 1e-3", None, 1e-3, 10, "rouge", None),
    "all": ("all layers, lr 5e-5", "all", 5e-5, 2, "rouge", None),
    "top2": ("top 2 layers, lr 5e-5", 2, 5e-5, 2, "rouge", None),
    "embedding": ("frozen backbone, head lr 1e-3", None, 1e-3, 10, "embedding", None),
    "frozen256": ("frozen backbone, head lr 1e-3", None, 1e-3, 10, "rouge", 256),
    "all256": ("all layers, lr 5e-5", "all", 5e-5, 2, "rouge", 256),
    "embedding_all": ("all layers, lr 5e-5", "all", 5e-5, 2, "embedding", None),
    "embedding_top2": ("top 2 layers, lr 5e-5", 2, 5e-5, 2, "embedding", None),
}


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def overlap_accuracy(lists: list[RankedList]) -> tuple[float, float]:
    """(pairwise accuracy, mean Kendall tau-a over untied lists) of ordering each list by the share
    of the candidate's words found in its article; ties in the heuristic count half."""
    right = total = 0.0
    taus = []
    for ranked in lists:
        article = set(words(ranked.source))
        share = [sum(w in article for w in words(c)) / max(len(words(c)), 1) for c in ranked.candidates]
        agree = []
        for a, b in itertools.combinations(range(len(share)), 2):
            if ranked.scores[a] == ranked.scores[b]:
                continue
            product = (share[a] - share[b]) * (ranked.scores[a] - ranked.scores[b])
            agree.append(1.0 if product > 0 else 0.5 if product == 0 else 0.0)
        if agree:
            right, total = right + sum(agree), total + len(agree)
            taus.append(sum(2 * x - 1 for x in agree) / len(agree))
    if not total:  # every list tied: nothing to order
        return float("nan"), float("nan")
    return right / total, sum(taus) / len(taus)


def article_halves(config, seed: int):
    """(warm-start articles, held-out-from-warm-start articles) of the train split."""
    settings = config.data.summarization
    examples = data.load_bbc(config.data.root, settings.target)
    train = data.split_examples(
        examples, settings.validation_fraction, settings.test_fraction, settings.split_salt
    )["train"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    half = len(train) // 2
    return [train[i] for i in order[:half]], [train[i] for i in order[half:]]


def warm_start(config, articles, steps: int, folder: Path, seed: int) -> float:
    """Short MLE warm start on ``articles``; seconds (0 when cached)."""
    if is_complete(folder):
        return 0.0
    models, policy, sampling = (
        config.models.summarization, config.policy.summarization, config.sampling.summarization,
    )  # fmt: skip
    torch.manual_seed(seed)
    tokenizer, model = load_model(ModelSpec(models.policy, "seq2seq", models.decoder_layers))
    freeze_encoder(model)
    start = time.perf_counter()
    sources = encode_sources(
        model.get_encoder(), tokenizer, [a.source for a in articles], max_length=sampling.max_source_tokens
    )
    labels, mask = encode_targets(tokenizer, [a.target for a in articles], sampling.max_target_tokens, model)
    train_config = policy.train_config(
        "mle", steps, policy.warmstart_lr, seed, sampling
    )  # as the warm start stage
    history = train_policy(model, tokenizer, sources, labels, mask, train_config)
    seconds = time.perf_counter() - start
    tail = history[-10:]
    save_policy(model, tokenizer, folder, {"steps": steps, "seconds": seconds,
                                           "final_loss": sum(h["loss"] for h in tail) / len(tail)})  # fmt: skip
    return seconds


def sample_round(model, tokenizer, sources: EncodedSources, articles, sampling, seed: int) -> list[dict]:
    """K samples for each article (rows of ``sources`` in the same order), 32 articles per call."""
    out = []
    for start in range(0, len(articles), 32):
        rows = torch.arange(start, min(start + 32, len(articles)))
        part = sources.select(rows)
        generated = sample_k(
            model, tokenizer, attention_mask=part.attention_mask, encoder_hidden=part.hidden, k=sampling.k,
            top_k=sampling.top_k, top_p=sampling.top_p, temperature=sampling.temperature,
            max_new_tokens=sampling.max_target_tokens, seed=seed * 1000 + start,
        )  # fmt: skip
        for j, row in enumerate(rows.tolist()):
            article = articles[row]
            candidates = generated.texts[j * sampling.k : (j + 1) * sampling.k]
            out.append({"id": article.id, "source": article.source, "target": article.target,
                        "candidates": candidates})  # fmt: skip
    return out


def score_records(records: list[dict], embedding: EmbeddingSimilarityPreference) -> None:
    sources, candidates, refs = (
        [r["source"] for r in records], [r["candidates"] for r in records], [r["target"] for r in records],
    )  # fmt: skip
    for record, rouge, emb in zip(
        records,
        RougePreference().score(sources, candidates, refs),
        embedding.score(sources, candidates, refs),
        strict=True,
    ):
        record["rouge"], record["embedding"] = rouge, emb


def build_lists(config, root: Path, args) -> dict:
    """Warm start, then held-out and training lists, cached as JSONL; returns the timing facts."""
    warm_articles, unseen = article_halves(config, args.seed)
    held_articles, train_articles = unseen[: args.held_lists], unseen[args.held_lists :]
    facts_file = root / "facts.json"
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    warm = root / f"warmstart-{args.warmstart_steps}"
    seconds = warm_start(config, warm_articles, args.warmstart_steps, warm, args.seed)
    if seconds:
        facts["warmstart_seconds"] = seconds
    facts.update(warm_articles=len(warm_articles), unseen_articles=len(unseen))
    sampling = config.sampling.summarization
    tokenizer, model = load_policy(warm, frozen_encoder=True)
    embedding = None
    lists_dir = root / f"lists-{args.warmstart_steps}"
    lists_dir.mkdir(parents=True, exist_ok=True)
    plan = [("held", held_articles, args.seed + 500)]
    rounds = math.ceil(args.train_lists / ROUND_ARTICLES)
    generator = torch.Generator().manual_seed(args.seed + 1)
    for r in range(rounds):
        chosen = torch.randperm(len(train_articles), generator=generator)[:ROUND_ARTICLES].tolist()
        plan.append((f"train-{r}", [train_articles[i] for i in chosen], args.seed + 600 + r))
    for name, articles, seed in plan:
        path = lists_dir / f"{name}.jsonl"
        if path.exists():
            continue
        # Sources of this round only: the encoder is frozen, its states are the cached ones.
        sources = encode_sources(
            model.get_encoder(),
            tokenizer,
            [a.source for a in articles],
            max_length=sampling.max_source_tokens,
        )
        start = time.perf_counter()
        records = sample_round(model, tokenizer, sources, articles, sampling, seed)
        facts.setdefault("sampling", []).append(
            {"lists": len(records), "seconds": time.perf_counter() - start}
        )
        embedding = embedding or EmbeddingSimilarityPreference()
        score_records(records, embedding)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        tmp.replace(path)
        facts_file.write_text(json.dumps(facts, indent=2))
        print(f"sampled {name}: {len(records)} lists in {facts['sampling'][-1]['seconds']:.0f} s", flush=True)
    facts_file.write_text(json.dumps(facts, indent=2))
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    train = [r for i in range(rounds) for r in read(lists_dir / f"train-{i}.jsonl")][: args.train_lists]
    return {"facts": facts, "held": read(lists_dir / "held.jsonl"), "train": train}


def as_lists(records: list[dict], preference: str) -> list[RankedList]:
    return [RankedList(r["source"], r["candidates"], r[preference]) for r in records]


def held_references(config, warm_folder: Path, held_records) -> dict:
    """The held-out articles' references as pgg's WMLE reads them: policy labels, copied / novel / eos
    classes, and the articles as the causal reward model reads them."""
    sampling = config.sampling.summarization
    tokenizer, policy = load_policy(warm_folder, frozen_encoder=True)
    sources, targets = [r["source"] for r in held_records], [r["target"] for r in held_records]
    labels, mask = encode_targets(tokenizer, targets, sampling.max_target_tokens, policy)
    article = tokenize_sources(tokenizer, sources, sampling.max_source_tokens)
    classes = token_classes(labels, mask, article["input_ids"], article["attention_mask"])
    mle_weights = mask / mask.sum(dim=1, keepdim=True)
    return {
        "labels": labels,
        "mask": mask,
        "classes": classes,
        "sources": dict(article),  # the causal reward model reads the article's own token ids
        "max_source_tokens": sampling.max_source_tokens,
        "mle_novel_weight": 100 * float((mle_weights * classes["novel"]).sum() / mle_weights.sum()),
    }


def weight_shares(model, references: dict) -> dict:
    """Where w_t = r_t / sum r puts the weight of the held-out references: % on novel tokens (MLE: 1 /
    length), and the mean r_t on copied and on novel tokens."""
    classes, mask = references["classes"], references["mask"]
    rewards = reference_token_rewards(model, references["labels"], mask, references["sources"])
    weights = token_weights(rewards, mask, "reward")
    mean_r = lambda m: float((rewards * m).sum() / m.sum())  # noqa: E731
    return {
        "novel_weight": 100 * float((weights * classes["novel"]).sum() / weights.sum()),
        "r_copied": mean_r(classes["copied"]),
        "r_novel": mean_r(classes["novel"]),
    }


def fit_guidance(config, name: str, records: list[dict]):
    """Row ``name``'s reward model fitted on ``records``: (trainer, fit report, seconds). Seeded: a refit
    on the same lists gives the same model."""
    _, trainable, lr, epochs, preference, _ = FITS[name]
    guidance, sampling = config.guidance.summarization, config.sampling.summarization
    torch.manual_seed(0)
    tokenizer, model = TokenRewardModel.from_spec(
        ModelSpec("minilm", "causal_lm"), head_hidden=guidance.head_hidden, squash=guidance.squash,
        freeze_backbone=trainable is None, trainable_layers=trainable if isinstance(trainable, int) else None,
    )  # fmt: skip
    settings = guidance.trainer_config(1, sampling.max_target_tokens, sampling.max_source_tokens)
    trainer = GuidanceTrainer(model, tokenizer, dataclasses.replace(settings, lr=lr, epochs=epochs))
    start = time.perf_counter()
    report = trainer.fit(as_lists(records, preference)).as_dict()
    seconds = time.perf_counter() - start
    model.eval()
    return trainer, report, seconds


def fit_row(config, name: str, train_records, held_records, n: int, references: dict) -> dict:
    """Fit row ``name`` on the first ``n`` training lists and score it on the held-out lists."""
    label, preference = FITS[name][0], FITS[name][4]
    records = train_records[:n]
    trainer, report, seconds = fit_guidance(config, name, records)
    held = trainer.evaluate(as_lists(held_records, preference))
    model = trainer.model
    return {
        "name": name, "label": label, "preference": preference, "lists": len(records),
        "tied": report["n_tied_dropped"], "epochs_run": report["epochs_run"], "seconds": seconds,
        "held_accuracy": held["pairwise_accuracy"], "held_tau": held["kendall_tau"], "held_loss": held["loss"],
        "threads": torch.get_num_threads(), **weight_shares(model, references),
    }  # fmt: skip


def weight_cells(row: dict) -> list[str]:
    if "novel_weight" not in row:  # a row another invocation fitted before these columns
        return ["-", "-"]
    return [f"{row['novel_weight']:.1f}", f"{row['r_copied']:.2f} / {row['r_novel']:.2f}"]


def tied_share(records, preference: str) -> float:
    return sum(len(set(r[preference])) == 1 for r in records) / len(records)


def curve_table(rows: list[dict]) -> str:
    """Held-out pairwise accuracy (Kendall tau) against the number of training lists, one line per
    guidance; empty when every guidance was fitted at one count only."""
    counts = sorted({row["lists"] for row in rows})
    if len(counts) < 2:
        return ""
    lines: dict[str, dict[int, str]] = {}
    for row in rows:
        cell = f"{row['held_accuracy']:.3f} ({row['held_tau']:.2f})"
        lines.setdefault(f"{row['label']}, {row['preference']}", {})[row["lists"]] = cell
    table = [[label, *(cells.get(n, "-") for n in counts)] for label, cells in lines.items()]
    return (
        "\nHeld-out pairwise accuracy (Kendall tau) against the number of training lists (fully tied lists"
        " included in the count, dropped from the fit):\n\n"
        + markdown_table(["guidance", *(f"{n} lists" for n in counts)], table)
        + "\n"
    )


def write_report(args, built: dict, rows: list[dict], chance: float, references: dict) -> None:
    facts, held, train = built["facts"], built["held"], built["train"]
    config_tokens, mle_novel = references["max_source_tokens"], references["mle_novel_weight"]
    sampling = facts.get("sampling", [])
    per_list = sum(s["seconds"] for s in sampling) / max(sum(s["lists"] for s in sampling), 1)
    table = []
    for preference in ("rouge", "embedding"):
        untied = [r for r in held if len(set(r[preference])) > 1]
        accuracy, tau = overlap_accuracy(as_lists(untied, preference))
        table.append([f"share of summary words found in the article (not learned), {preference}", "-",
                      f"{accuracy:.3f}", f"{tau:.3f}", "-", "-", "-", "-"])  # fmt: skip
    for row in rows:
        table.append([
            f"{row['label']}, {row['preference']}, {row['epochs_run']} epochs", f"{row['lists']} ({row['tied']} tied)",
            f"{row['held_accuracy']:.3f}", f"{row['held_tau']:.3f}", f"{row['held_loss']:.4f}",
            f"{row['seconds']:.0f}", *weight_cells(row),
        ])  # fmt: skip
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = f"""
Question: does the learned token reward order *unseen* candidates better than the share of the
summary's words found in the article? Policy: MiniLM BERT2BERT warm-started for {args.warmstart_steps} MLE
steps ({facts.get("warmstart_seconds", float("nan")):.0f} s) on {facts["warm_articles"]} train articles; lists are sampled on the other
{facts["unseen_articles"]} train articles, which the warm start never saw: {len(held)} held-out lists on
{len(held)} articles, {len(train)} training lists on the rest (rounds of {ROUND_ARTICLES} articles, a fresh
sampling seed per round). K = 3, top-k 50, top-p 0.95, temperature 1. Sampling cost: {per_list:.2f} s per
list of 3 ({torch.get_num_threads()} thread), linear in the number of lists (one `sample_k` call per 32 articles).

Fully tied lists: ROUGE preference {tied_share(train, "rouge"):.1%} of training lists,
{tied_share(held, "rouge"):.1%} of held-out lists; embedding preference {tied_share(train, "embedding"):.1%} / {tied_share(held, "embedding"):.1%}
(the 300-step warm start of the quick default gave 29 % tied ROUGE lists). Reward model: causal MiniLM
reading [article; summary], listwise loss, avg aggregation, 20 % of the training lists for early
stopping; scored on the untied held-out lists (chance loss ln 3! = {chance:.4f}). Load average at the
end: {load} (2 cores). METEOR: not measured. No wordnet data is installed, and the PyPI index
here has no package that ships it (`nltkdata` 0.0.1 is a 788-byte placeholder; `wn` downloads its
data at run time), so `preference: meteor` still needs `python -m nltk.downloader wordnet` with network.

{markdown_table(["guidance", "training lists (fully tied, dropped)", "held-out pairwise acc.", "Kendall tau", "held-out loss", "fit s", "novel-token weight, %", "mean r_t copied / novel"], table)}

Last two columns: pgg's WMLE weights w_t = r_t / sum r on the {len(held)} held-out articles' references, as
`bench.summarization_weights` measures them: the share of the weight mass on *novel* reference tokens (not
among the article's first {config_tokens} tokens; MLE's 1 / length gives them {mle_novel:.1f} %), and the mean
reward on copied and on novel tokens. Does a guidance that orders candidates better still move weight
off the novel tokens, where the policy's errors are?
{curve_table(rows)}"""
    write_section(
        args.section,
        "Summarization guidance on fresh lists of unseen articles (before any policy step)"
        + (f", {args.warmstart_steps}-step warm start" if args.section != SECTION else "")
        + (", against the number of lists" if args.lists else ""),
        body + ("\n" + Path(args.note_file).read_text() if args.note_file else ""),
        # Every invocation that added a row, in order: rerun on one cache root, they give the table again.
        command=" && ".join(
            dict.fromkeys([*(row["command"] for row in rows if "command" in row), this_command()])
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmstart-steps", type=int, default=100)
    parser.add_argument("--train-lists", type=int, default=768)
    parser.add_argument("--held-lists", type=int, default=160)
    parser.add_argument("--rows", default="frozen,all,top2,embedding,frozen256")
    parser.add_argument("--root", default="runs/bench/summarization_guidance_stream")
    parser.add_argument("--note-file", default=None, help="markdown appended to the section (the reading)")
    parser.add_argument(
        "--lists",
        default=None,
        help="comma-separated list counts: every row is fitted at each (default: the row's own)",
    )
    parser.add_argument(
        "--section", default=SECTION, help="BENCHMARKS section: another keeps this one's table"
    )
    args = parser.parse_args()
    unknown = [name for name in args.rows.split(",") if name not in FITS]
    if unknown:
        parser.exit(2, f"error: unknown rows {unknown}; use some of {', '.join(FITS)}\n")
    if args.lists and not all(n.isdigit() and int(n) > 0 for n in args.lists.split(",")):
        parser.exit(2, f"error: --lists {args.lists!r} is not a comma-separated list of positive counts\n")
    torch.set_num_threads(args.threads)
    config = load_params(DEFAULT_PARAMS)
    root = Path(args.root) / f"seed-{args.seed}"
    root.mkdir(parents=True, exist_ok=True)
    built = build_lists(config, root, args)
    chance = math.log(math.factorial(config.sampling.summarization.k))
    fits_file = root / f"fits-{args.warmstart_steps}.jsonl"
    lines = fits_file.read_text().splitlines() if fits_file.exists() else []
    done = {(row["name"], row["lists"]): row for row in map(json.loads, lines)}  # a later line replaces
    references = held_references(config, root / f"warmstart-{args.warmstart_steps}", built["held"])
    counts = [int(n) for n in args.lists.split(",")] if args.lists else [None]
    for name, count in itertools.product(args.rows.split(","), counts):
        n = min(count or FITS[name][5] or len(built["train"]), len(built["train"]))
        if "novel_weight" in done.get((name, n), {}):  # rows from before the weight columns are refitted
            continue
        row = fit_row(config, name, built["train"], built["held"], n, references)
        row["command"] = this_command()
        print(row, flush=True)
        done[name, n] = row
        with fits_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        write_report(args, built, list(done.values()), chance, references)
    write_report(args, built, list(done.values()), chance, references)


if __name__ == "__main__":
    main()
