"""Metrics on text and numbers: no model in here.

Sentiment uses VADER (Hutto & Gilbert 2014), which ships its lexicon in the package.
"""

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np


@cache
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(texts: Sequence[str]) -> list[float]:
    """VADER compound score in [-1, 1] per text.

    >>> [round(s, 2) for s in sentiment(["I love this!", "I hate this."])]
    [0.67, -0.57]
    """
    return [float(_vader().polarity_scores(t)["compound"]) for t in texts]


def bootstrap_ci(
    values: Sequence[float], *, stat: Callable[[np.ndarray], float] = np.mean, n: int = 2000,
    level: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat`` over ``values``.

    >>> lo, hi = bootstrap_ci([0.0, 1.0] * 50)
    >>> lo < 0.5 < hi
    True
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, data.size, size=(n, data.size))
    stats = np.apply_along_axis(stat, 1, data[draws])
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
