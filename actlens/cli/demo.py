"""``actlens steer`` / ``actlens demo``, and the measurement that picked the demo's settings.

The embedded SmolLM2-135M is a hard steering subject (shared research note: its first
positions carry residual norms 5-8x the typical norm, so a front-aligned ActAdd vector is
dominated by them). The demo's settings are therefore not the paper's but the candidate
that measurably moved sentiment in ``actlens demo --measure`` (VADER over 24 prompts x 3
seeds, against unsteered completions and a norm-matched random vector; see README).
"""

import argparse
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from actlens.core import metrics
from actlens.core import validation as _validation
from actlens.core.corpora import CHAT_QUESTIONS, CHAT_SENTIMENT, CHAT_TURNS, EVAL_PROMPTS, SENTIMENT_PAIRS  # noqa: F401 (re-exported)
from actlens.models.model import load_model
from actlens.steering import generation
from actlens.vectors import SteeringVector, actadd_vector, mean_diff_vector, random_like


@dataclass(frozen=True)
class Recipe:
    """One steering recipe of the demo: which vector, where, how strong, and the prompt it is shown on."""

    kind: str  # "actadd" (one pair) or "mean_diff" (SENTIMENT_PAIRS, last-token reads)
    layer: int
    coeff: float
    align: str
    position: int | None = None
    plus: str = "Love"
    minus: str = "Hate"
    max_new_tokens: int = 40
    prompt: str = "I hate you because"

    @property
    def label(self) -> str:
        what = f"{self.plus}-{self.minus}" if self.kind == "actadd" else "mean-diff"
        pos = f" pos {self.position}" if self.position is not None else ""
        return f"{what} L{self.layer} c{self.coeff:g} {self.align}{pos}"


# The prompt sets live with the others in actlens.core.corpora; these names stay importable from here.

# Chosen by `actlens demo --measure` (README: "Does the demo steer?"), per embedded model.
DEMO = Recipe(kind="mean_diff", layer=12, coeff=4.0, align="all")
# Gemma 3 270M: the largest measured shift, as for SmolLM2 (mean difference, layer 6 of 18, c=4; README). The
# paper's own front-aligned recipe (ICLR: Love - Hate, l=6, c=3) also steers it, by about half as much.
DEMOS = {"smollm2-135m": DEMO, "gemma-3-270m": Recipe(kind="mean_diff", layer=6, coeff=4.0, align="all")}

CANDIDATES = [
    Recipe(kind="actadd", layer=6, coeff=5.0, align="front"),  # the paper's toxicity settings (H5 harness)
    Recipe(kind="actadd", layer=6, coeff=1.0, align="front"),
    Recipe(kind="actadd", layer=15, coeff=3.0, align="front"),
    Recipe(kind="actadd", layer=12, coeff=0.5, align="all", position=1),
    Recipe(kind="mean_diff", layer=8, coeff=4.0, align="all"),
    Recipe(kind="mean_diff", layer=12, coeff=4.0, align="all"),
]
# Gemma 3 270M (18 layers): the paper's front-aligned recipes (LW1/H5 l=6 c=5; ICLR l=6 c=3), the
# research note's best small-sample layers (2, 4), and mean-difference vectors at a third and half depth.
CANDIDATES_BY_MODEL = {
    "smollm2-135m": CANDIDATES,
    "gemma-3-270m": [
        Recipe(kind="actadd", layer=6, coeff=5.0, align="front"),
        Recipe(kind="actadd", layer=6, coeff=3.0, align="front"),
        Recipe(kind="actadd", layer=2, coeff=1.0, align="front"),
        Recipe(kind="actadd", layer=4, coeff=1.0, align="front"),
        Recipe(kind="mean_diff", layer=6, coeff=4.0, align="all"),
        Recipe(kind="mean_diff", layer=9, coeff=4.0, align="all"),
    ],
}


def settings_for(model_name: str) -> tuple[Recipe, list[Recipe]]:
    """The demo setting and measured candidates of an embedded model (others: SmolLM2's).

    >>> settings_for("Gemma-3-270M")[0].label
    'mean-diff L6 c4 all'
    """
    from actlens.models import embedded

    known = embedded.lookup(model_name)
    key = known.name if known is not None and known.name in DEMOS else "smollm2-135m"
    return DEMOS[key], CANDIDATES_BY_MODEL[key]


def make_vector(model, s: Recipe) -> SteeringVector:
    if s.kind == "actadd":
        return actadd_vector(model, s.plus, s.minus, s.layer)
    return mean_diff_vector(model, SENTIMENT_PAIRS, s.layer)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``actlens steer`` and ``actlens demo``."""
    if getattr(args, "measure", False):
        return _print_measurement(args)
    default, _ = settings_for(args.model)
    kind = args.kind or (default.kind if args.command == "demo" else "actadd")
    same = kind == default.kind
    layer = default.layer if args.layer is None else args.layer
    coeff = default.coeff if args.coeff is None else args.coeff
    align = args.align or (default.align if same else "front" if kind == "actadd" else "all")
    position = 1 if align == "all" and kind == "actadd" else None
    s = Recipe(kind=kind, layer=layer, coeff=coeff, align=align, position=position,
                 plus=args.plus, minus=args.minus, max_new_tokens=args.max_new_tokens)
    if kind == "actadd":  # an empty or same-text pair is refused before the model loads
        _validation.actadd_pair(s.plus, s.minus)
    chat = getattr(args, "chat", False)
    prompts = args.prompt or [CHAT_TURNS[0] if chat else default.prompt]
    model = load_model(args.model)
    vector = make_vector(model, s)
    if args.save:
        print(f"saved {vector!r} to {vector.save(args.save)}")
    phase = getattr(args, "phase", "both")
    mode = ("; chat template" if chat else "") + (f"; phase {phase}" if phase != "both" else "")
    print(f"# {args.model}: {s.label}{mode}; sampling T=1, top_p=0.3, freq_penalty=1\n")
    for seed in range(args.seed, args.seed + args.n):
        out = generation.generate(model, prompts, vector=vector, coeff=s.coeff, align=s.align, position=s.position,
                                  max_new_tokens=s.max_new_tokens, seed=seed, paired=True, chat=chat,
                                  phase=phase)
        print(f"## seed {seed}\n{out}")
    return 0


def measure(model, candidates=CANDIDATES, prompts=EVAL_PROMPTS, seeds=(0, 1, 2), max_new_tokens: int = 40,
            progress: Callable[[list[dict]], None] | None = None):
    """VADER sentiment of unsteered, steered and random-control completions, per candidate.

    Returns a tidy DataFrame: one row per (condition, prompt, seed) with the completion and
    its compound score; conditions are "unsteered" and "<label>" / "<label> [random]".
    ``progress`` gets the rows so far after each condition (the CLI writes them to ``--measure-out``,
    so a long run that is stopped keeps the conditions it finished).
    """
    import pandas as pd

    rows = []

    def add(condition: str, settings: Recipe | None, vector: SteeringVector | None):
        for seed in seeds:
            kw = dict(max_new_tokens=max_new_tokens, seed=seed)
            if vector is not None:
                kw |= dict(vector=vector, coeff=settings.coeff, align=settings.align, position=settings.position)
            out = generation.generate(model, list(prompts), **kw)
            for p, text, score in zip(prompts, out.completions, metrics.sentiment(out.completions), strict=True):
                rows.append(dict(condition=condition, prompt=p, seed=seed, completion=text, sentiment=score,
                                 settings=asdict(settings) if settings else None))
        if progress is not None:
            progress(rows)

    add("unsteered", None, None)
    for s in candidates:
        v = make_vector(model, s)
        add(s.label, s, v)
        add(f"{s.label} [random]", s, random_like(v, seed=0))
    return pd.DataFrame(rows)


def summarise(frame):
    """Mean sentiment with 95% bootstrap CIs, the paired shift against unsteered, and mean words per completion."""
    import pandas as pd

    base = frame[frame.condition == "unsteered"].set_index(["prompt", "seed"]).sentiment
    out = []
    for condition, group in frame.groupby("condition", sort=False):
        scores = group.sentiment.to_numpy()
        shift = (group.set_index(["prompt", "seed"]).sentiment - base).to_numpy()
        lo, hi = metrics.bootstrap_ci(scores)
        slo, shi = metrics.bootstrap_ci(shift)
        out.append(dict(condition=condition, n=len(scores), mean=scores.mean(), ci_low=lo, ci_high=hi,
                        shift=shift.mean(), shift_low=slo, shift_high=shi,
                        words=float(group.completion.str.split().str.len().mean())))
    return pd.DataFrame(out)


def measure_chat(model, turns=CHAT_TURNS, seeds=(0, 1, 2), max_new_tokens: int = 40,
                 phases=("both", "generation", "prompt"), settings: Recipe = DEMO,
                 progress: Callable[[list[dict]], None] | None = None):
    """The demo's settings in chat mode: raw-text and chat-formatted vectors, per phase, with random controls.

    Same rows as :func:`measure` (``summarise`` reads it); prompts are user turns rendered with the
    chat template and completions are the assistant's replies.
    """
    import pandas as pd

    from actlens.vectors.chat import chat_mean_diff_vector

    rows = []
    s = settings

    def add(condition: str, vector: SteeringVector | None, phase: str | None):
        for seed in seeds:
            kw = dict(max_new_tokens=max_new_tokens, seed=seed, chat=True)
            if vector is not None:
                kw |= dict(vector=vector, coeff=s.coeff, align=s.align, phase=phase)
            out = generation.generate(model, list(turns), **kw)
            for p, text, score in zip(turns, out.completions, metrics.sentiment(out.completions), strict=True):
                rows.append(dict(condition=condition, prompt=p, seed=seed, completion=text, sentiment=score,
                                 settings=None if vector is None else asdict(s) | dict(
                                     phase=phase, vector=vector.kind, chat_template=vector.chat_template,
                                     norm=float(vector.norms()[0]))))
        if progress is not None:
            progress(rows)

    add("unsteered", None, None)
    vectors = {"raw-text mean-diff": mean_diff_vector(model, SENTIMENT_PAIRS, s.layer),
               "chat mean-diff": chat_mean_diff_vector(model, CHAT_SENTIMENT, s.layer)}
    for name, v in vectors.items():
        for phase in phases:
            add(f"{name} L{s.layer} c{s.coeff:g}, phase {phase}", v, phase)
            add(f"{name} L{s.layer} c{s.coeff:g}, phase {phase} [random]", random_like(v, seed=0), phase)
    return pd.DataFrame(rows)


def _print_measurement(args) -> int:
    import pandas as pd

    model = load_model(args.model)
    seeds = tuple(range(args.seed, args.seed + 3))

    def save(rows: list[dict]) -> None:  # after every condition, atomically: a stopped run keeps what it finished
        if args.measure_out:
            tmp = Path(f"{args.measure_out}.partial")
            pd.DataFrame(rows).to_json(tmp, orient="records", indent=1)
            os.replace(tmp, args.measure_out)

    if getattr(args, "chat", False):
        frame = measure_chat(model, seeds=seeds, max_new_tokens=args.max_new_tokens, progress=save)
    else:
        frame = measure(model, settings_for(args.model)[1], EVAL_PROMPTS, seeds=seeds,
                        max_new_tokens=args.max_new_tokens, progress=save)
    table = summarise(frame)
    print(markdown(table))
    if args.measure_out:
        print(f"\nwrote {len(frame)} completions to {args.measure_out}")
    return 0


def markdown(table) -> str:
    """A DataFrame as a GitHub markdown table (floats with 3 decimals)."""
    cells = [[f"{v:+.3f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    return "\n".join([head, rule, *("| " + " | ".join(r) + " |" for r in cells)])
