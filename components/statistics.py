"""Paired bootstrap confidence interval of a mean difference between two systems.

Both systems are scored on the same items (test articles, possibly from several seeds pooled): the
per-item differences ``a_i - b_i`` are resampled with replacement, and the interval is the
percentile interval of the resampled means. Pairing removes the article-to-article spread that both
systems share, which is most of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PairedInterval:
    mean: float  # mean of a_i - b_i over the items
    low: float  # percentile interval of the bootstrap means
    high: float
    n: int  # paired items
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}] ({self.confidence:.0%}, n = {self.n})"


def paired_bootstrap(
    a: list[float], b: list[float], resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> PairedInterval:
    """Interval of mean(a - b) for paired scores ``a[i]``, ``b[i]`` of the same item i."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths; got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_bootstrap got no scores")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"confidence must be in (0, 1) and resamples >= 1; got {confidence}, {resamples}")
    diff = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    means = torch.empty(resamples, dtype=torch.float64)
    for start in range(0, resamples, 1000):  # chunks bound the memory of n x resamples indices
        count = min(1000, resamples - start)
        picks = torch.randint(len(diff), (count, len(diff)), generator=generator)
        means[start : start + count] = diff[picks].mean(dim=1)
    tail = (1 - confidence) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return PairedInterval(float(diff.mean()), low, high, len(diff), confidence)
