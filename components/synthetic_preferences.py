"""A small TRL-format preference set with known token credit: a good word raises the score, a bad
word lowers it, every other word is filler that changes nothing.

Each pair shares a prompt and a filler sentence; chosen and rejected differ in one slot, holding
(good, filler), (filler, bad) or (good, bad). Chosen and rejected have the same length, so length
cannot explain the preference. A fitted token reward model should give r(good) > r(filler) > r(bad).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

GOOD_WORDS = ("excellent", "wonderful", "great")
BAD_WORDS = ("terrible", "awful", "boring")
FILLER_WORDS = (
    "the", "movie", "was", "a", "story", "about", "people", "in", "city", "with", "music", "and",
    "some", "long", "scenes", "actor", "plot", "film", "night", "very", "quite", "really",
)  # fmt: skip
PROMPTS = ("Review:", "Opinion:", "Write a review:")
SLOT_PAIRS = (("good", "filler"), ("filler", "bad"), ("good", "bad"))


def _word(kind: str, rng: random.Random) -> str:
    return rng.choice({"good": GOOD_WORDS, "bad": BAD_WORDS, "filler": FILLER_WORDS}[kind])


def synthetic_pairs(n: int, seed: int = 0, length: int = 8) -> list[dict]:
    """``n`` records ``{"prompt", "chosen", "rejected"}``."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        words = [rng.choice(FILLER_WORDS) for _ in range(length)]
        slot = rng.randrange(length)
        better, worse = SLOT_PAIRS[i % len(SLOT_PAIRS)]
        chosen, rejected = list(words), list(words)
        chosen[slot], rejected[slot] = _word(better, rng), _word(worse, rng)
        if chosen == rejected:  # filler vs filler cannot happen, but keep the pair valid regardless
            continue
        records.append(
            {"prompt": rng.choice(PROMPTS), "chosen": " ".join(chosen), "rejected": " ".join(rejected)}
        )
    return records


def write_synthetic_pairs(path: str | Path, n: int, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in synthetic_pairs(n, seed)))
    return path


def word_credit(token_rewards: list[list[tuple[str, float]]]) -> dict[str, float]:
    """Mean token reward of good, bad and filler words over (token, reward) lists."""
    groups: dict[str, list[float]] = {"good": [], "filler": [], "bad": []}
    for pairs in token_rewards:
        for token, reward in pairs:
            word = token.lstrip("Ġ▁#").lower()
            kind = "good" if word in GOOD_WORDS else "bad" if word in BAD_WORDS else "filler"
            if kind != "filler" or word in FILLER_WORDS:
                groups[kind].append(reward)
    return {k: sum(v) / len(v) if v else float("nan") for k, v in groups.items()}
