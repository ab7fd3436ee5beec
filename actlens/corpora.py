"""Small offline texts shipped in ``actlens/data`` (provenance and licences: ``actlens/data/README.md``).

- ``pride_and_prejudice_ch1-26.txt``: the first ~270 KB of Jane Austen's *Pride and Prejudice*
  (public domain), from Debian's ``r-cran-janeaustenr`` 1.0.0-1 (MIT). Its paragraphs range from
  no wedding words to several per sentence, which is what the paper's "perplexity ratio vs topic
  relevance" experiment needs (Turner et al. 2023, §2.1).
- ``capitals.json``: 58 (country, capital) pairs from ``countryinfo`` 1.0.1 (MIT), every country
  with a population of at least 20 million, for fact-recall probes (§2.7's P@K, on capitals).

Also the prompt sets of the paper figures (:mod:`actlens.figure_jobs`), which notebooks reuse:
``TOPIC_PROMPT``, ``KL_TEXTS`` and the wedding contrast pairs ``WEDDING_PAIRS``.
"""

import json
import random
from functools import cache
from pathlib import Path

from actlens.metrics import WEDDING_WORDS, topic_relevance, words

DATA = Path(__file__).parent / "data"
AUSTEN = DATA / "pride_and_prejudice_ch1-26.txt"
CAPITALS = DATA / "capitals.json"

# Prompt sets of the paper-figure experiments (actlens.figure_jobs) and notebooks.
TOPIC_PROMPT = "I went up to my friend and said"  # the paper's layer sweep (§2.3)
KL_TEXTS = ("I'm excited because I'm going to a party with all of my friends tonight.",  # LW1's KL prompt, extended
            "The train was late again this morning, so I read the newspaper on the platform.",
            "She opened the window, looked at the garden, and decided to bake some bread.")
WEDDING_PAIRS = [  # topical mean-difference set: same sentence, wedding vs. other event
    ("We are planning our wedding for next June.", "We are planning our holiday for next June."),
    ("The bride walked down the aisle smiling.", "The runner walked down the track smiling."),
    ("They got married in a small church.", "They got lunch in a small cafe."),
    ("He proposed and she said yes to the marriage.", "He phoned and she said yes to the meeting."),
    ("The wedding cake had five tiers.", "The birthday cake had five candles."),
    ("Their honeymoon was in Italy.", "Their business trip was in Italy."),
    ("The groom wore a black suit to the ceremony.", "The driver wore a black suit to the office."),
    ("I was invited to my cousin's wedding.", "I was invited to my cousin's graduation."),
]


@cache
def austen_paragraphs(min_words: int = 20) -> tuple[str, ...]:
    """Paragraphs of the Austen sample with at least ``min_words`` words, in book order.

    >>> paragraphs = austen_paragraphs()
    >>> len(paragraphs) > 500, paragraphs[0].startswith("It is a truth universally acknowledged")
    (True, True)
    """
    text = AUSTEN.read_text(encoding="utf-8")
    return tuple(p.strip() for p in text.split("\n\n") if len(words(p)) >= min_words)


def relevance_sample(n: int, *, seed: int = 0, topic=WEDDING_WORDS, min_words: int = 20) -> list[tuple[str, float]]:
    """``n`` paragraphs with their topic relevance: half the most relevant, half without topic words.

    As in the ActAdd authors' OpenWebText experiment (§2.1: "half from the most relevant
    documents, half from zero-keyword ones", seed 0); returned sorted by relevance.

    >>> sample = relevance_sample(6)
    >>> [r > 0 for _, r in sample]
    [False, False, False, True, True, True]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2 (half relevant, half not), got {n!r}")
    scored = [(p, topic_relevance(p, topic)) for p in austen_paragraphs(min_words)]
    relevant = sorted((x for x in scored if x[1] > 0), key=lambda x: -x[1])
    zero = [x for x in scored if x[1] == 0]
    half = n // 2
    if len(relevant) < n - half or len(zero) < half:
        raise ValueError(f"the Austen sample has {len(relevant)} relevant and {len(zero)} other paragraphs; "
                         f"ask for at most {2 * min(len(relevant), len(zero))}")
    picked = random.Random(seed).sample(zero, half) + relevant[:n - half]
    return sorted(picked, key=lambda x: x[1])


@cache
def capital_pairs() -> tuple[tuple[str, str], ...]:
    """(country, capital) pairs, most populous country first.

    >>> capital_pairs()[:2]
    (('China', 'Beijing'), ('India', 'New Delhi'))
    """
    data = json.loads(CAPITALS.read_text(encoding="utf-8"))
    return tuple((str(c), str(k)) for c, k in data["pairs"])
