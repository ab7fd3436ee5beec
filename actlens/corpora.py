"""Small offline texts shipped in ``actlens/data`` (provenance and licences: ``actlens/data/README.md``).

- ``pride_and_prejudice_ch1-26.txt``: the first ~270 KB of Jane Austen's *Pride and Prejudice*
  (public domain), from Debian's ``r-cran-janeaustenr`` 1.0.0-1 (MIT). Its paragraphs range from
  no wedding words to several per sentence, which is what the paper's "perplexity ratio vs topic
  relevance" experiment needs (Turner et al. 2023, §2.1).
- ``capitals.json``: 58 (country, capital) pairs from ``countryinfo`` 1.0.1 (MIT), every country
  with a population of at least 20 million, for fact-recall probes (§2.7's P@K, on capitals).
"""

import json
import random
from functools import cache
from pathlib import Path

from actlens.metrics import WEDDING_WORDS, topic_relevance, words

DATA = Path(__file__).parent / "data"
AUSTEN = DATA / "pride_and_prejudice_ch1-26.txt"
CAPITALS = DATA / "capitals.json"


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
