import random

import pytest

from components.statistics import paired_bootstrap


def test_a_clear_gain_excludes_zero_and_noise_does_not():
    rng = random.Random(0)
    base = [rng.uniform(0, 40) for _ in range(400)]  # large shared article-to-article spread
    better = [x + 1.0 + rng.gauss(0, 2) for x in base]
    same = [x + rng.gauss(0, 2) for x in base]
    gain = paired_bootstrap(better, base, resamples=2000)
    assert gain.excludes_zero and gain.low < 1.0 < gain.high
    assert gain.mean == pytest.approx(sum(b - a for a, b in zip(base, better, strict=True)) / 400)
    null = paired_bootstrap(same, base, resamples=2000)
    assert null.low < 0 < null.high and not null.excludes_zero


def test_interval_is_seeded_and_narrows_with_more_items():
    rng = random.Random(1)
    a = [rng.gauss(0.5, 3) for _ in range(1000)]
    b = [0.0] * 1000
    first, again = paired_bootstrap(a, b, seed=3), paired_bootstrap(a, b, seed=3)
    assert (first.low, first.high) == (again.low, again.high)
    small = paired_bootstrap(a[:100], b[:100], seed=3)
    assert small.high - small.low > 2 * (first.high - first.low)  # ~ 1 / sqrt(n)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no scores"):
        paired_bootstrap([], [])
