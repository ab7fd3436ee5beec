"""Model-based evaluation of steering: perplexity ratio, mean KL, and fact recall (P@K).

- :func:`score_texts`: for each text and condition (unsteered, steered, a control), the mean
  next-token negative log-likelihood of the text's own tokens, the perplexity ratio against the
  unsteered model, and the mean ``KL(P_condition ‖ P_unsteered)`` in nats. As the ActAdd authors
  did (Turner et al. 2023, arXiv 2308.10248: ``mask_len``, "we exclude positions 0 and 1"), the
  predictions *at* the positions a vector was added to are left out, for every condition alike,
  so all conditions score the same tokens. A prompting condition prepends its phrase (as tokens,
  after BOS) and scores the same tokens of the original text.
- :func:`perplexity_ratio`: that, for one vector with its random and prompting controls.
- :func:`fact_ranks` / :func:`p_at_k`: rank of a fact's answer among next tokens, and the share
  of facts whose answer is in the top K (the paper's LAMA P@K, §2.7, on country capitals).

Steered rows go through :mod:`actlens.steering.batched`, the same engine the sweeps use.
"""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.analysis.kl import kl_divergence
from actlens.core import prompts
from actlens.core import validation as _validation
from actlens.core.types import Align
from actlens.steering.batched import Request, forward_rows, min_length, scored_positions
from actlens.vectors import SteeringVector, random_like

DEFAULT_KS: tuple[int, ...] = tuple(sorted({math.ceil(k) for k in np.logspace(0, 2, 20)}))
"""The authors' K values: unique(ceil(logspace(0, 2, 20))), i.e. 1..100 (``lama_demo.py``)."""

Treatment = tuple[str, Request | None, str | None]
"""A scored condition: (name, steering request or None, prompting prefix or None)."""


def score_texts(
    model: TransformerBridge,
    texts: str | Sequence[str],
    conditions: Sequence[Treatment],
    *,
    batch_size: int = 8,
    max_tokens: int = 96,
) -> pd.DataFrame:
    """NLL, perplexity ratio and mean KL of each text under each condition, against unsteered.

    Returns one row per (condition, text): ``condition, text, n_scored, nll_base, nll, ppl_ratio, kl``
    (``ppl_ratio = exp(nll - nll_base)``). Texts are cut to ``max_tokens`` tokens (BOS included).

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=1)
    >>> f = score_texts(model, ["I think that you are nice"], [("steered", Request(v, 4.0), None)])
    >>> int(f.n_scored[0]), bool(f.kl[0] > 0)   # 26 positions - 1 last - 5 injected
    (20, True)
    """
    texts = _validation.texts("texts", [texts] if isinstance(texts, str) else texts)
    batch_size = _validation.positive_int("batch_size", batch_size)
    max_tokens = _validation.positive_int("max_tokens", max_tokens)
    names = [c[0] for c in conditions]
    if not conditions or len(set(names)) != len(names):
        raise ValueError(f"need at least one condition, with unique names; got {names}")
    ids = [prompts.encode(model, t)[:max_tokens] for t in texts]
    need = max(min_length(model, req) for _, req, _ in conditions)
    for i, row in enumerate(ids):
        if len(row) < need + 1:
            raise ValueError(f"text {i} ({texts[i][:40]!r}) has {len(row)} tokens with BOS; the steering needs "
                             f"{need} positions plus one token to score. Use longer texts")
    scored = scored_positions(model, ids, [req for _, req, _ in conditions])
    prefixes = {name: prompts.encode(model, prefix, prepend_bos=False) if prefix else []
                for name, _, prefix in conditions}
    results = []
    for lo in range(0, len(ids), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(ids))))
        base = _gathered(model, [ids[i] for i in idx], [None] * len(idx), [scored[i] for i in idx], 0)
        for name, request, _ in conditions:
            pre = prefixes[name]
            rows = [[r[0], *pre, *r[1:]] for r in (ids[i] for i in idx)] if pre else [ids[i] for i in idx]
            cond = _gathered(model, rows, [request] * len(idx), [scored[i] for i in idx], len(pre))
            for j, i in enumerate(idx):
                targets = torch.tensor([ids[i][p + 1] for p in scored[i]])
                nll_b = -base[j].log_softmax(-1)[torch.arange(len(targets)), targets].mean()
                nll_c = -cond[j].log_softmax(-1)[torch.arange(len(targets)), targets].mean()
                results.append(dict(condition=name, text=i, n_scored=len(targets), nll_base=float(nll_b),
                                    nll=float(nll_c), ppl_ratio=float(torch.exp(nll_c - nll_b)),
                                    kl=float(kl_divergence(cond[j], base[j]).mean())))
    return pd.DataFrame(results, columns=["condition", "text", "n_scored", "nll_base", "nll", "ppl_ratio", "kl"])


def _gathered(model, rows, requests, positions, shift) -> list[Tensor]:
    """Float32 logits at each row's scored prediction positions (shifted by a prefix length)."""
    logits, batch = forward_rows(model, rows, requests)
    return [logits[r, [batch.starts[r] + shift + p for p in pos]].float() for r, pos in enumerate(positions)]


def perplexity_ratio(
    model: TransformerBridge,
    texts: str | Sequence[str],
    vector: SteeringVector,
    coeff: float,
    *,
    align: Align = "front",
    position: int | None = None,
    controls: Sequence[str] = ("random", "prompting"),
    prefix: str | None = None,
    control_seed: int = 0,
    batch_size: int = 8,
    max_tokens: int = 96,
) -> pd.DataFrame:
    """Steered / unsteered perplexity per text, with a norm-matched random control and a prompting baseline.

    ``prefix`` is the prompting baseline's phrase (default: the vector's positive prompt plus a space).
    See :func:`score_texts` for the columns.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> f = perplexity_ratio(model, ["The weather today is"], actadd_vector(model, "Love", "Hate", 1), 2.0)
    >>> f.condition.tolist()
    ['steered', 'random', 'prompting']
    """
    for c in controls:
        _validation.choice("controls[]", c, ("random", "prompting"))
    conditions: list[Treatment] = [("steered", Request(vector, coeff, align, position), None)]
    if "random" in controls:
        control = random_like(vector, seed=_validation.seed(control_seed, name="control_seed"))
        conditions.append(("random", Request(control, coeff, align, position), None))
    if "prompting" in controls:
        phrase = prefix if prefix is not None else (f"{vector.plus[0].strip()} " if vector.plus else "")
        if phrase.strip():
            conditions.append(("prompting", None, phrase))
    return score_texts(model, texts, conditions, batch_size=batch_size, max_tokens=max_tokens)


def answer_token(model: TransformerBridge, answer: str) -> int:
    """First token of ``" " + answer`` (how the answer follows "... is")."""
    ids = prompts.encode(model, " " + answer.strip(), prepend_bos=False)
    if not ids:
        raise ValueError(f"answer {answer!r} has no tokens")
    return int(ids[0])


def fact_ranks(
    model: TransformerBridge,
    facts: Sequence[tuple[str, str]],
    *,
    template: str = "The capital of {} is",
    request: Request | None = None,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Rank (0 = top) of each fact's answer token among the next-token logits, steered by ``request``.

    Returns one row per fact: ``subject, answer, answer_token, rank, logprob``.

    >>> from actlens.models.tiny import tiny_model
    >>> f = fact_ranks(tiny_model(), [("France", "Paris"), ("Japan", "Tokyo")])
    >>> f.columns.tolist(), bool((f["rank"] >= 0).all())
    (['subject', 'answer', 'answer_token', 'rank', 'logprob'], True)
    """
    facts = [tuple(f) for f in facts]
    if not facts or any(len(f) != 2 or not all(isinstance(x, str) and x for x in f) for f in facts):
        raise ValueError(f"facts must be a non-empty list of (subject, answer) strings, got {facts[:3]!r}")
    batch_size = _validation.positive_int("batch_size", batch_size)
    if "{}" not in template:
        raise ValueError(f"template must contain '{{}}' where the subject goes, got {template!r}")
    rows = []
    for lo in range(0, len(facts), batch_size):
        chunk = facts[lo:lo + batch_size]
        ids = [prompts.encode(model, template.format(s)) for s, _ in chunk]
        logits, _ = forward_rows(model, ids, [request] * len(ids))
        last = torch.log_softmax(logits[:, -1].float(), -1)
        for (subject, answer), lp in zip(chunk, last, strict=True):
            tok = answer_token(model, answer)
            rows.append(dict(subject=subject, answer=answer, answer_token=tok,
                             rank=int((lp > lp[tok]).sum()), logprob=float(lp[tok])))
    return pd.DataFrame(rows, columns=["subject", "answer", "answer_token", "rank", "logprob"])


def p_at_k(ranks: pd.DataFrame, ks: Sequence[int] = DEFAULT_KS, *, by: Sequence[str] = ()) -> pd.DataFrame:
    """Share of facts whose answer ranks in the top K, per K (and per ``by`` group).

    >>> p_at_k(pd.DataFrame({"rank": [0, 3, 50]}), [1, 5, 100]).p_at_k.round(3).tolist()
    [0.333, 0.667, 1.0]
    """
    ks = [_validation.positive_int("k", k) for k in ks]
    groups = ranks.groupby(list(by), sort=False) if by else [((), ranks)]
    out = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        for k in ks:
            out.append({**dict(zip(by, key, strict=True)), "k": k, "p_at_k": float((group["rank"] < k).mean()),
                        "n": len(group)})
    return pd.DataFrame(out, columns=[*by, "k", "p_at_k", "n"])


__all__ = ["DEFAULT_KS", "answer_token", "fact_ranks", "p_at_k", "perplexity_ratio", "score_texts"]
