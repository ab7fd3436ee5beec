"""Metrics on text and numbers: no model in here.

Sentiment uses VADER (Hutto & Gilbert 2014), which ships its lexicon in the package. Topic
words, relevance and success rate follow the ActAdd paper's weddings experiments (Turner et
al. 2023, arXiv 2308.10248, §2.1 and §2.3); degeneration is measured by distinct-n (Li et
al. 2016) and the within-text repetition rate of word n-grams. Model-based metrics
(perplexity ratio, KL, fact recall) live in :mod:`actlens.experiments.evaluate`.
"""

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


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
    values: Sequence[float] | np.ndarray, *, stat: Callable[[np.ndarray], float] = np.mean, n: int = 2000,
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
    stats = data[draws].mean(axis=1) if stat is np.mean else np.apply_along_axis(stat, 1, data[draws])
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


# --- topic words (ActAdd §2.1 and §2.3: the weddings experiments) -----------------------------
WEDDING_WORDS: frozenset[str] = frozenset(
    {"wedding", "weddings", "wed", "marry", "married", "marriage", "bride", "groom", "honeymoon"}
)
"""The paper's wedding-related words (Turner et al. 2023, §2.1/§2.3)."""

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters, with an inner apostrophe).

    >>> words("The Bride's groom, married!")
    ['the', "bride's", 'groom', 'married']
    """
    return _WORD.findall(text.lower())


def topic_count(text: str, topic: Collection[str] = WEDDING_WORDS) -> int:
    """How many words of ``text`` are topic words (exact, case-insensitive matches).

    >>> topic_count("We married after the wedding; the wedding was lovely.")
    3
    """
    return sum(w in topic for w in words(text))


def topic_relevance(text: str, topic: Collection[str] = WEDDING_WORDS) -> float:
    """Topic words per word: the paper's relevance of a document (§2.1); 0 for a text without words.

    >>> topic_relevance("a wedding and a bride")
    0.4
    """
    n = len(words(text))
    return topic_count(text, topic) / n if n else 0.0


def topic_rate(texts: Sequence[str], topic: Collection[str] = WEDDING_WORDS) -> float:
    """Share of texts with at least one topic word (the paper's layer-sweep success rate, §2.3).

    >>> topic_rate(["a wedding", "a dog", "married", "cats"])
    0.5
    """
    texts = list(texts)
    if not texts:
        raise ValueError("topic_rate needs at least one text")
    return sum(topic_count(t, topic) > 0 for t in texts) / len(texts)


# --- degeneration -----------------------------------------------------------------------------
def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(text: str, n: int = 2) -> float:
    """Unique word n-grams / all word n-grams of one text (Li et al. 2016); NaN without any n-gram.

    >>> distinct_n("the cat the cat", 2)
    0.6666666666666666
    >>> distinct_n("hi", 2)
    nan
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    grams = _ngrams(words(text), n)
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of word n-grams that already occurred earlier in the same text; 0 without any.

    >>> repetition_rate("a b c d a b c d", 4)   # 5 four-grams, the last one repeats the first
    0.2
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    grams = _ngrams(words(text), n)
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams) if grams else 0.0


TextMetric = Callable[[str], float]

TEXT_METRICS: dict[str, TextMetric] = {
    "sentiment": lambda t: sentiment([t])[0],
    "positive": lambda t: float(sentiment([t])[0] >= 0.05),  # VADER's threshold for "positive"
    "topic_hit": lambda t: float(topic_count(t) > 0),
    "topic_count": lambda t: float(topic_count(t)),
    "distinct_1": lambda t: distinct_n(t, 1),
    "distinct_2": lambda t: distinct_n(t, 2),
    "repetition_4": lambda t: repetition_rate(t, 4),
    "words": lambda t: float(len(words(t))),
}
"""Per-completion metrics a sweep records by default (``topic_*`` use :data:`WEDDING_WORDS`)."""


def text_metrics(text: str, metrics: Mapping[str, TextMetric] | None = None) -> dict[str, float]:
    """Every metric of ``metrics`` (default :data:`TEXT_METRICS`) on one text.

    >>> m = text_metrics("I love the wedding, I love it.")
    >>> m["topic_hit"], m["words"], m["sentiment"] > 0
    (1.0, 7.0, True)
    """
    return {name: float(fn(text)) for name, fn in (metrics or TEXT_METRICS).items()}


# --- summaries with bootstrap confidence intervals -------------------------------------------
def summarise(
    frame: "pd.DataFrame", by: Sequence[str], *, value: str = "value", level: float = 0.95, n: int = 2000,
    seed: int = 0,
) -> "pd.DataFrame":
    """Mean of ``value`` per group with a percentile-bootstrap CI; NaN values are dropped.

    Returns one row per group: the ``by`` columns, ``n`` (values used), ``mean``, ``ci_low``,
    ``ci_high`` (NaN for a group without values).

    >>> import pandas as pd
    >>> f = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4, "value": [0, 1, 0, 1, 1, 1, 1, 1.0]})
    >>> summarise(f, ["g"])[["g", "n", "mean"]].values.tolist()
    [['a', 4, 0.5], ['b', 4, 1.0]]
    """
    import pandas as pd

    missing = [c for c in [*by, value] if c not in frame.columns]
    if missing:
        raise KeyError(f"summarise: columns {missing} not in the frame, which has {list(frame.columns)}")
    rows = []
    for key, group in frame.groupby(list(by), sort=False, dropna=False):
        vals = group[value].to_numpy(dtype=float)
        vals = vals[~np.isnan(vals)]
        lo, hi = bootstrap_ci(vals, level=level, n=n, seed=seed) if vals.size else (math.nan, math.nan)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), "n": int(vals.size),
                     "mean": float(vals.mean()) if vals.size else math.nan, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "ci_low", "ci_high"])
