"""The lead-k baseline: the first k words of the article stand in for its summary."""

from __future__ import annotations


def lead_summary(article: str, k: int = 6) -> str:
    if k < 1:
        raise ValueError(f"lead baseline needs k >= 1 words; got {k}")
    return " ".join(article.split()[:k])


def lead_summaries(articles: list[str], k: int = 6) -> list[str]:
    return [lead_summary(a, k) for a in articles]
