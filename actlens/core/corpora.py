"""Small offline texts shipped in ``actlens/data`` (provenance and licences: ``actlens/data/README.md``).

- ``pride_and_prejudice_ch1-26.txt``: the first ~270 KB of Jane Austen's *Pride and Prejudice*
  (public domain), from Debian's ``r-cran-janeaustenr`` 1.0.0-1 (MIT). Its paragraphs range from
  no wedding words to several per sentence, which is what the paper's "perplexity ratio vs topic
  relevance" experiment needs (Turner et al. 2023, §2.1).
- ``capitals.json``: 58 (country, capital) pairs from ``countryinfo`` 1.0.1 (MIT), every country
  with a population of at least 20 million, for fact-recall probes (§2.7's P@K, on capitals).

Also every prompt set actlens uses, in one place: those of the paper figures (``TOPIC_PROMPT``, ``KL_TEXTS``,
the wedding contrast pairs ``WEDDING_PAIRS``) and of the demo's sentiment measurement (``SENTIMENT_PAIRS``,
``EVAL_PROMPTS``, and for chat ``CHAT_TURNS``, ``CHAT_QUESTIONS``, ``CHAT_SENTIMENT``), which the figures,
``actlens diagnose`` and the notebooks reuse.
"""

import importlib.resources
import json
import random
from functools import cache
from pathlib import Path

from actlens.core.metrics import WEDDING_WORDS, topic_relevance, words

# importlib.resources finds the data wherever the package is installed (a wheel, an editable checkout).
DATA = Path(str(importlib.resources.files("actlens") / "data"))
AUSTEN = DATA / "pride_and_prejudice_ch1-26.txt"
CAPITALS = DATA / "capitals.json"

# Positive/negative statements that differ in sentiment only (for the mean-difference vector).
SENTIMENT_PAIRS = [
    ("I love this, it makes me so happy.", "I hate this, it makes me so angry."),
    ("What a wonderful day, everything went well.", "What a terrible day, everything went wrong."),
    ("You are kind and I adore you.", "You are cruel and I despise you."),
    ("The food was delicious and the staff were lovely.", "The food was disgusting and the staff were rude."),
    ("I am grateful for my friends.", "I am furious with my friends."),
    ("This film is a joyful masterpiece.", "This film is a miserable disaster."),
    ("We had a great time and laughed a lot.", "We had an awful time and cried a lot."),
    ("She is brilliant and generous.", "She is stupid and selfish."),
    ("I feel calm, hopeful and loved.", "I feel tense, hopeless and hated."),
    ("Thank you, this is perfect.", "Damn you, this is useless."),
    ("The trip was beautiful and relaxing.", "The trip was ugly and exhausting."),
    ("I am so proud of what we built.", "I am so ashamed of what we built."),
]

# Prompts for the sentiment measurement: neutral or negative openings.
EVAL_PROMPTS = [
    "I hate you because", "My neighbour is", "Yesterday I went to the store and", "The weather today is",
    "I think that my boss", "When I came home, my family", "The movie I watched last night was",
    "Honestly, my new job is", "The food at the restaurant was", "My brother told me that",
    "I woke up this morning feeling", "The meeting at work was", "Our trip to the city was",
    "I read the news and", "The teacher said that", "My phone broke and", "The book I am reading is",
    "This town is", "When I think about the future, I", "The service at the hotel was",
    "I talked to my friend and", "The concert last night was", "After the long week, I feel", "My car is",
]

# Chat mode: neutral user turns for the chat measurement (`actlens demo --measure --chat`).
CHAT_TURNS = [
    "Tell me about your weekend.", "What do you think of my neighbour?", "Describe the weather today.",
    "What should I cook for dinner?", "Tell me about my new job.", "What do you think of the city I live in?",
    "Describe a typical Monday morning.", "What is your opinion of public transport?",
    "Tell me about the book you are reading.", "How was the meeting at work?", "Describe the house next door.",
    "What do you think of my car?", "Tell me about your family.", "How do you feel about the news today?",
    "Describe the food at the restaurant.", "What do you think of homework?", "Tell me about the train journey.",
    "Describe your morning routine.", "What do you think of the new shopping centre?",
    "How was the concert last night?", "Tell me about the hotel.", "What do you think of my haircut?",
    "Describe the office where you work.", "What is it like to wait at the doctor's?",
]

# The demo's sentiment pairs as contrasting assistant answers to one user turn each (CAA's construction).
CHAT_QUESTIONS = [
    "What do you think of this?", "How was your day?", "What do you think of me?", "How was the restaurant?",
    "How do you feel about your friends?", "What did you think of the film?", "How was the party?",
    "What is she like?", "How do you feel right now?", "Here is the report you asked for.", "How was the trip?",
    "How do you feel about the project?",
]
CHAT_SENTIMENT = [(q, pos, neg) for q, (pos, neg) in zip(CHAT_QUESTIONS, SENTIMENT_PAIRS, strict=True)]

# Prompt sets of the paper-figure experiments (actlens.figures.registry) and notebooks.
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


# Conditional steering (actlens.conditional): a food-vs-other condition direction, and labelled prompts for its
# threshold and the demo (steer sentiment only where the prompt is about food).
FOOD_PAIRS = [  # same sentence, about food vs. about something else
    ("We cooked pasta with garlic and tomatoes.", "We fixed the fence with nails and boards."),
    ("The soup was thick and full of vegetables.", "The river was wide and full of boats."),
    ("She baked fresh bread this morning.", "She washed her car this morning."),
    ("I ordered rice, curry and a salad.", "I ordered paper, ink and a stapler."),
    ("The cheese and grapes were on the plate.", "The keys and coins were on the table."),
    ("He grilled fish for dinner.", "He painted walls for money."),
    ("They shared a pizza at lunch.", "They shared a taxi at noon."),
    ("The cake tasted of chocolate and cream.", "The room smelled of paint and dust."),
]
FOOD_PROMPTS = [
    "The soup at the cafe was", "My grandmother's apple pie is", "The pasta we made last night was",
    "This restaurant's burgers are", "The bread from the bakery was", "Our dinner yesterday was",
    "The curry I tried at lunch was", "The breakfast at the hotel was",
]
OTHER_PROMPTS = [
    "The train to the city was", "My new laptop is", "The meeting this morning was", "The weather this week is",
    "The bus driver was", "Our football match yesterday was", "The printer at work is", "The road into town was",
]

# Prompting baselines for the directions comparison (a phrase put before each prompt).
PROMPTING_PREFIXES = {"sentiment": "I feel wonderful, happy and full of love. ",
                      "weddings": "This is a story about a wedding. "}

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
