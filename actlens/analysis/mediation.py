"""Which components carry a steering vector's effect: activation patching between the steered and unsteered runs.

For a vector added at ``site`` of layer ``L`` and every *downstream component* c (the attention and MLP outputs,
``hook_attn_out`` / ``hook_mlp_out``, of each layer the addition reaches; optionally each attention head's
``hook_z``; and ``direct``, the vector's own path along the residual stream to the final norm), on the same texts:

- **necessity** of c: the steered run with c's output restored to its value in the unsteered run (``direct``:
  the added values subtracted again from ``blocks.{n-1}.hook_resid_post``). ``fraction`` is the effect that
  remains, as a share of the total effect: near 0 means the effect needs c, near 1 that it does without it.
- **sufficiency** of c: the unsteered run with only c's output replaced by its value in the steered run (``direct``:
  the added values added to ``blocks.{n-1}.hook_resid_post`` only). The vector then reaches the logits only
  through c (and whatever reads c downstream); ``fraction`` is the share of the total effect this recovers.

The effect of a run on a text is its metric averaged over the counted positions (real tokens after BOS; with
positional alignment, those after the injected window): ``metric="kl"`` is ``KL(P_run || P_unsteered)`` of the
next-token distributions, ``metric="logit_diff"`` is ``(logit[t+] - logit[t-])`` of ``targets = (t+, t-)`` minus
its unsteered value. The total effect is the steered run's. Restoring every downstream component together with
``direct`` gives the unsteered residual again (to float rounding; tested), so nothing is left out.

Batched: each forward holds the texts repeated for a group of components, and the patch hooks replace one
component's output per block of rows, so a group costs one forward (``batch_rows`` bounds its rows). It starts
at the group's lowest layer (:mod:`actlens.models.resume`): below it the patched run equals the steered (or
unsteered) run, whose layer inputs the two reference forwards keep, so those layers are not run again (where the
model allows it exactly; otherwise full forwards). ``method="naive"`` runs one full forward per component, the
loop this replaces (same numbers; tested).
"""

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import positions
from actlens.core import validation as _validation
from actlens.core.types import Align, ShortPrompt
from actlens.models.model import check_site, hook_name, n_layers, padding, write_hook_name
from actlens.models.readout import final_hidden, unembedding
from actlens.models.resume import layer_inputs, resumable, resumed
from actlens.steering import chunked
from actlens.steering.intervene import addition, steer
from actlens.vectors import SteeringVector, check_vector

Metric = Literal["kl", "logit_diff"]
Components = Literal["layers", "heads"]
Method = Literal["batched", "naive"]
BLOCK = 64  # positions unembedded at a time: a [BLOCK, vocab] tensor, never [batch, pos, vocab]
KEPT_BUDGET = 1 << 30  # bytes of layer inputs the two reference forwards may keep for resumed patched runs


@dataclass(frozen=True)
class Component:
    """One place whose output is patched: ``attn`` / ``mlp`` of a layer, ``head`` ``h`` of a layer, or ``direct``."""

    kind: str
    layer: int
    head: int | None = None

    @property
    def name(self) -> str:
        if self.kind == "direct":
            return "direct"
        return f"{self.kind}.{self.layer}" + ("" if self.head is None else f".{self.head}")

    @property
    def hook(self) -> str:
        return {"attn": hook_name(self.layer, "attn_out"), "mlp": hook_name(self.layer, "mlp_out"),
                "head": hook_name(self.layer, "z"), "direct": hook_name(self.layer, "resid_post")}[self.kind]


def downstream(model: TransformerBridge, vector: SteeringVector, components: Components | Sequence[str] = "layers"
               ) -> list[Component]:
    """The components a vector's addition reaches, in forward order (``direct`` last).

    ``components``: ``"layers"`` (each layer's attention and MLP), ``"heads"`` (those and every head), or a list
    of names: ``"attn.L"``, ``"mlp.L"``, ``"head.L.H"``, ``"direct"``.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> [c.name for c in downstream(model, actadd_vector(model, "Love", "Hate", 2))]
    ['attn.2', 'mlp.2', 'attn.3', 'mlp.3', 'direct']
    """
    n, heads = n_layers(model), int(model.cfg.n_heads)
    layer, site = vector.layer, vector.site
    reached: list[Component] = []
    for j in range(layer, n):
        if j > layer or site == "resid_pre":
            reached.append(Component("attn", j))
            if components == "heads":
                reached.extend(Component("head", j, h) for h in range(heads))
        if j > layer or site in ("resid_pre", "resid_mid", "attn_out"):
            reached.append(Component("mlp", j))
    last = Component("direct", n - 1)
    if isinstance(components, str):
        _validation.choice("components", components, ("layers", "heads"))
        return [*reached, last]
    names = list(components)
    if not names:
        raise ValueError("components is empty; pass 'layers', 'heads' or a list such as ['attn.3', 'mlp.3']")
    known = {c.name: c for c in [*reached, last]}
    known.update({f"head.{j}.{h}": Component("head", j, h) for c in reached if c.kind == "attn"
                  for j in [c.layer] for h in range(heads)})
    out = []
    for name in names:
        if name not in known:
            parts = str(name).split(".")
            if len(parts) == 3 and parts[0] == "head" and parts[2].lstrip("-").isdigit() and \
                    not 0 <= int(parts[2]) < heads:
                raise ValueError(f"components: head index {parts[2]} in {name!r} is out of range; this model has "
                                 f"{heads} heads per layer (0..{heads - 1})")
            raise ValueError(f"components: {name!r} is not downstream of this vector ({vector.hook_name}); "
                             f"downstream components are {list(known)[:6]}... ('attn.L', 'mlp.L', 'head.L.H', "
                             "'direct')")
        out.append(known[name])
    return out


def _capture_hooks(comps: list[Component], found: dict[str, Tensor]) -> list:
    def keep(name):
        def hook(x: Tensor, *, hook) -> None:
            found[name] = x.detach().clone()

        return hook

    return [(name, keep(name)) for name in sorted({c.hook for c in comps})]


def _patch_hooks(comps: list[Component], source: dict[str, Tensor], delta: Tensor | None, n: int, sign: float
                 ) -> list:
    """Hooks that, in a batch of ``len(comps)`` blocks of ``n`` rows, put component g's source into block g.

    ``source[hook]`` is ``[n, ...]`` (that hook's output in the other run); ``direct`` adds ``sign * delta``.
    """
    by_hook: dict[str, list[tuple[int, Component]]] = {}
    for g, c in enumerate(comps):
        by_hook.setdefault(c.hook, []).append((g, c))

    def make(name, entries):
        def hook(x: Tensor, *, hook) -> Tensor:
            out = x.clone()
            for g, c in entries:
                rows = slice(g * n, (g + 1) * n)
                if c.kind == "direct":
                    out[rows] = out[rows] + sign * delta.to(out.dtype)
                elif c.kind == "head":
                    out[rows, :, c.head] = source[name][:, :, c.head].to(out.dtype)
                else:
                    out[rows] = source[name].to(out.dtype)
            return out

        return hook

    return [(name, make(name, entries)) for name, entries in by_hook.items()]


def _targets(model: TransformerBridge, targets: object) -> tuple[int, int]:
    if not (isinstance(targets, tuple | list) and len(targets) == 2 and all(isinstance(t, str) for t in targets)):
        raise ValueError(f"metric='logit_diff' needs targets=(plus, minus), two strings such as (' love', ' hate'); "
                         f"got {targets!r}")
    ids = []
    for t in targets:
        found = model.tokenizer.encode(t, add_special_tokens=False)
        if len(found) != 1:
            raise ValueError(f"targets: {t!r} is {len(found)} tokens ({found}) for this tokenizer; each target must be "
                             "one token (try it with or without a leading space)")
        ids.append(int(found[0]))
    return ids[0], ids[1]


class _Scorer:
    """Per-text effects of runs, against the unsteered run's distributions at the counted positions."""

    def __init__(self, head, clean: Tensor, counted: Tensor, metric: str, target: tuple[int, int] | None):
        self.head, self.counted, self.metric, self.target = head, counted, metric, target
        self.clean = self._stat(clean, reference=True)

    def _stat(self, hidden: Tensor, reference: bool = False) -> Tensor:
        """KL: clean log-probs at counted positions (reference) / per-position KL; logit_diff: per-position diff."""
        with torch.inference_mode():
            return self._stat_blocks(hidden, reference)

    def _stat_blocks(self, hidden: Tensor, reference: bool) -> Tensor:
        picked = hidden[self.counted.to(hidden.device)]
        outs = []
        for i in range(0, picked.shape[0], BLOCK):
            logits = self.head(picked[i:i + BLOCK]).float()
            if self.metric == "logit_diff":
                outs.append(logits[:, self.target[0]] - logits[:, self.target[1]])
            elif reference:
                outs.append(torch.log_softmax(logits, -1))
            else:
                logp = torch.log_softmax(logits, -1)
                ref = self.clean[i:i + BLOCK]
                outs.append((logp.exp() * (logp - ref)).sum(-1))
        return torch.cat(outs)

    def effect(self, hidden: Tensor) -> Tensor:
        """``[n_texts]`` mean effect over each text's counted positions."""
        per_pos = self._stat(hidden)
        if self.metric == "logit_diff":
            per_pos = per_pos - self.clean
        counts = self.counted.sum(1)
        text_of = torch.repeat_interleave(torch.arange(len(counts)), counts)
        with torch.inference_mode(False):
            total = torch.zeros(len(counts)).index_add_(0, text_of, per_pos.cpu().float().clone())
            return total / counts.clamp(min=1)


def mediation(
    model: TransformerBridge,
    vector: SteeringVector,
    coeff: float,
    texts: str | Sequence[str],
    *,
    metric: Metric = "kl",
    targets: tuple[str, str] | None = None,
    components: Components | Sequence[str] = "layers",
    align: Align = "front",
    position: int | None = None,
    short_prompt: ShortPrompt = "error",
    n_boot: int = 1000,
    seed: int = 0,
    batch_rows: int = 256,
    method: Method = "batched",
) -> pd.DataFrame:
    """Necessity and sufficiency of each downstream component for the steering effect (see the module docstring).

    Returns a tidy frame, one row per component and measure: ``component`` (``attn.L``, ``mlp.L``, ``head.L.H``,
    ``direct``), ``kind``, ``layer``, ``head``, ``measure`` (``necessity`` / ``sufficiency``), ``effect`` (mean
    over texts of the patched run's effect), ``total`` (mean total effect), ``fraction`` (= effect / total),
    ``ci_low`` / ``ci_high`` (bootstrap 95 % interval of ``fraction``, texts resampled ``n_boot`` times),
    ``metric``, ``n_texts``.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=2)
    >>> f = mediation(model, v, 4.0, ["I think that you are", "The weather today is"], n_boot=50)
    >>> f.component.unique().tolist(), sorted(f.measure.unique())
    (['attn.2', 'mlp.2', 'attn.3', 'mlp.3', 'direct'], ['necessity', 'sufficiency'])
    """
    vector = check_vector(model, vector)
    check_site(model, vector.site, name="vector.site")
    coeff = _validation.finite("coeff", coeff)
    _validation.choice("metric", metric, ("kl", "logit_diff"))
    _validation.choice("method", method, ("batched", "naive"))
    n_boot = _validation.positive_int("n_boot", n_boot)
    batch_rows = _validation.positive_int("batch_rows", batch_rows)
    target = _targets(model, targets) if metric == "logit_diff" else None
    if metric == "kl" and targets is not None:
        raise ValueError("targets is for metric='logit_diff'; metric='kl' compares whole distributions")
    if "head" in str(components) and not isinstance(components, str):
        check_site(model, "z", name="components")
    elif components == "heads":
        check_site(model, "z", name="components")
    comps = downstream(model, vector, components)
    add = addition(model, vector, coeff, align, position)
    texts, batch = chunked.encode_texts(model, texts, add, short_prompt)
    layout = positions.of_batch(batch.starts, batch.lengths, batch.tokens.shape[1])
    real = positions.real(layout, skip_bos=True)
    counted = real & ~positions.injected(add.placement, layout) if align != "all" else real
    if not bool(counted.any(1).all()):
        raise ValueError("texts: some text has no position after the injected window to measure; use longer texts")
    n = len(texts)
    steering = dict(align=align, position=position)

    # layers whose inputs the patched runs can start from (each group starts at its first component's layer)
    group = 1 if method == "naive" else max(1, batch_rows // n)
    first_layers = sorted({comps[g].layer for g in range(0, len(comps), group)})
    kept_bytes = 2 * len(first_layers) * batch.tokens.numel() * int(model.cfg.d_model) * 4
    resume = method == "batched" and kept_bytes <= KEPT_BUDGET and all(resumable(model, j) for j in first_layers)
    kept_layers = first_layers if resume else []

    def run(tokens, mask, starts, lengths, hooks, steered, begin=None):
        """Final hidden states; ``begin=(layer, input)`` starts the forward at that layer from that input."""
        with torch.inference_mode(), padding(model, starts, lengths):
            with steer(model, vector, coeff, **steering) if steered else contextlib.nullcontext(), \
                    model.hooks(fwd_hooks=hooks):
                if begin is None:
                    return final_hidden(model, tokens, mask)[0]
                out = resumed(model, *begin, tokens, mask)
                if out is None:
                    raise RuntimeError("the resumed forward did not reach the unembedding (it did when checked)")
                return out

    base = (batch.tokens, batch.attention_mask, list(batch.starts), list(batch.lengths))
    clean_cache: dict[str, Tensor] = {}
    steered_cache: dict[str, Tensor] = {}
    clean_in: dict[int, Tensor] = {}
    steered_in: dict[int, Tensor] = {}
    write = write_hook_name(vector.layer, vector.site)
    added: dict[str, Tensor] = {}
    with layer_inputs(model, kept_layers, clean_in):
        clean_hidden = run(*base, [*_capture_hooks(comps, clean_cache), (write, _keep(added, "clean"))], False)
    with layer_inputs(model, kept_layers, steered_in):
        steered_hidden = run(*base, [*_capture_hooks(comps, steered_cache), (write, _keep(added, "steered"))], True)
    delta = added["steered"] - added["clean"]  # exactly what the steering hook added, per row and position
    head = unembedding(model) or torch.nn.Identity()  # final_hidden's own choice: logits where no exact split
    scorer = _Scorer(head, clean_hidden, counted, metric, target)
    total = scorer.effect(steered_hidden)

    effects = {"necessity": [], "sufficiency": []}
    for measure, steered, source, sign, kept in (("necessity", True, clean_cache, -1.0, steered_in),
                                                 ("sufficiency", False, steered_cache, 1.0, clean_in)):
        for g in range(0, len(comps), group):
            part = comps[g:g + group]
            reps = len(part)
            tokens, mask = batch.tokens.repeat(reps, 1), batch.attention_mask.repeat(reps, 1)
            begin = (part[0].layer, kept[part[0].layer].repeat(reps, 1, 1)) if resume else None
            hidden = run(tokens, mask, list(batch.starts) * reps, list(batch.lengths) * reps,
                         _patch_hooks(part, source, delta, n, sign), steered, begin)
            for r in range(reps):
                effects[measure].append(scorer.effect(hidden[r * n:(r + 1) * n]))
    return _frame(comps, effects, total, metric, n_boot, seed)


def _keep(found: dict, key: str):
    def hook(x: Tensor, *, hook) -> None:
        found[key] = x.detach().clone()

    return hook


def _frame(comps: list[Component], effects: dict[str, list[Tensor]], total: Tensor, metric: str, n_boot: int,
           seed: int) -> pd.DataFrame:
    n = len(total)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    tot = total.double().numpy()
    rows = []
    for measure, per_comp in effects.items():
        eff = torch.stack(per_comp).double().numpy()  # [component, text]
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = eff[:, idx].mean(-1) / tot[idx].mean(-1)  # [component, n_boot]
        lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=1) if n > 1 else (np.full(len(comps), math.nan),) * 2
        for i, c in enumerate(comps):
            mean_eff, mean_tot = float(eff[i].mean()), float(tot.mean())
            rows.append(dict(component=c.name, kind=c.kind, layer=c.layer, head=c.head, measure=measure,
                             effect=mean_eff, total=mean_tot,
                             fraction=mean_eff / mean_tot if mean_tot else math.nan,
                             ci_low=float(lo[i]), ci_high=float(hi[i]), metric=metric, n_texts=n))
    return pd.DataFrame(rows)


__all__ = ["Component", "downstream", "mediation"]
