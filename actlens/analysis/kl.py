"""Per-token KL divergence of steered from unsteered next-token distributions, with a control.

For every position of every text, ``KL(P_steered ‖ P_unsteered)`` of the next-token
distribution, in nats, computed in float32 from ``log_softmax``. As the ActAdd authors
did (Turner et al. 2023, arXiv 2308.10248; their ``mask_len``, "we exclude positions 0
and 1"), the predictions *at* the positions the vector was added to are left out of every
summary, as are BOS and left padding. A Gaussian vector with the same per-position norms
(:func:`actlens.random_like`, the paper's random-vector control) is applied with the same
coefficient and reported side by side: a targeted vector should change the distribution
differently from (in the paper: less than) a random one of equal size. The unsteered pass
runs once and serves both comparisons.

With ``align="all"`` every position after BOS is an injection position; masking them would
leave nothing, so then only BOS and pads are masked (``masked_injection=False`` records it).

The pure pieces (:func:`kl_divergence`, :func:`entropy`, :func:`top1_flip`) take logits
and can be used on their own.
"""

import html as _html
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import positions, prompts
from actlens.core import validation as _validation
from actlens.core.types import Align, Phase, ShortPrompt
from actlens.steering import chunked
from actlens.steering.intervene import addition
from actlens.vectors import SteeringVector, check_vector, random_like


# --- pure math ------------------------------------------------------------------------------
def kl_divergence(p_logits: Float[Tensor, "*batch d_vocab"], q_logits: Float[Tensor, "*batch d_vocab"]
                  ) -> Float[Tensor, "*batch"]:
    """``KL(P ‖ Q)`` in nats along the last axis, from logits, in float32.

    Float rounding can make a tiny true KL come out at about -1e-7; it is clamped at 0.

    >>> p = torch.tensor([[2.0, 0.0, -1.0]])
    >>> float(kl_divergence(p, p)), float(kl_divergence(p, torch.zeros(1, 3))) > 0
    (0.0, True)
    """
    return _kl(_log_probs(p_logits), _log_probs(q_logits))


def entropy(logits: Float[Tensor, "*batch d_vocab"]) -> Float[Tensor, "*batch"]:
    """Shannon entropy in nats of ``softmax(logits)`` along the last axis, in float32.

    >>> round(float(entropy(torch.zeros(4))), 4)   # uniform over 4: log 4
    1.3863
    """
    return _entropy(_log_probs(logits))


def _log_probs(logits: Tensor) -> Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return torch.einsum("...v,...v->...", a, b)  # a batched dot product: no [*, vocab] temporary


def _kl_entropy(lp: Tensor, lq: Tensor | None) -> tuple[Tensor, Tensor]:
    """``KL(P ‖ Q)`` (zeros when ``lq`` is None) and ``H(P)`` from log-probabilities, sharing one ``exp``.

    A token impossible under P (``lp = -inf``) would make ``0 * -inf = NaN``; the convention
    ``0 log 0 = 0`` is applied elementwise (``-inf`` clamped to the lowest finite value for the
    entropy, terms with ``p = 0`` zeroed for the KL), with no data-dependent branch, so nothing
    waits on the device. Finite inputs give the same bits as the plain sums; NaN inputs stay NaN.
    """
    prob = lp.exp()
    ent = -_dot(prob, lp.clamp_min(torch.finfo(lp.dtype).min))
    kl = _dot(prob, (lp - lq).masked_fill_(prob == 0, 0.0)) if lq is not None else torch.zeros_like(ent)
    return kl.clamp_min(0.0), ent


def _kl(lp: Tensor, lq: Tensor) -> Tensor:
    return _kl_entropy(lp, lq)[0]


def _entropy(lp: Tensor) -> Tensor:
    return _kl_entropy(lp, None)[1]


def top1_flip(p_logits: Float[Tensor, "*batch d_vocab"], q_logits: Float[Tensor, "*batch d_vocab"]
              ) -> Bool[Tensor, "*batch"]:
    """True where the most likely next token differs.

    >>> top1_flip(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])).tolist()
    [True]
    """
    return p_logits.argmax(-1) != q_logits.argmax(-1)


def log_probs(logits: Float[Tensor, "*batch d_vocab"]) -> Float[Tensor, "*batch d_vocab"]:
    """``log_softmax`` in float32, as every KL here computes it (reuse it for many comparisons)."""
    return _log_probs(logits)


def kl_from_log_probs(lp: Float[Tensor, "*batch d_vocab"], lq: Float[Tensor, "*batch d_vocab"]) -> Float[Tensor, "*batch"]:
    """``KL(P ‖ Q)`` from :func:`log_probs` outputs: ``kl_divergence(p, q) == kl_from_log_probs(log_probs(p), log_probs(q))``.

    >>> p, q = torch.tensor([[2.0, 0.0]]), torch.zeros(1, 2)
    >>> bool(kl_from_log_probs(log_probs(p), log_probs(q)) == kl_divergence(p, q))
    True
    """
    return _kl(lp, lq)


def masked_mean(values: Float[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"]) -> float:
    """Mean of ``values`` where ``mask`` is True (NaN when nothing is selected)."""
    n = int(mask.sum())
    return float(values.float()[mask].sum() / n) if n else float("nan")


# --- the analysis ---------------------------------------------------------------------------
@dataclass(frozen=True)
class KLResult:
    """Per-token effects of a steered and a control run against one unsteered run.

    The ``*_control`` tensors and ``control_norms`` are None when the control was switched
    off (``kl_per_token(..., control=False)``). Tensors are ``[text, pos]`` in one left-padded
    layout (``starts[i]`` is text i's BOS); values at pads are 0. ``counted`` marks the
    positions summaries use: real tokens, not BOS, not an injection position (unless
    ``masked_injection`` is False). Value at position ``p`` is about the distribution
    *predicting* token ``p + 1``.
    """

    texts: tuple[str, ...]
    tokens: Int[Tensor, "text pos"]
    token_strings: tuple[tuple[str, ...], ...]
    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    injected: Bool[Tensor, "text pos"]
    counted: Bool[Tensor, "text pos"]
    kl_steered: Float[Tensor, "text pos"]
    kl_control: Float[Tensor, "text pos"] | None
    entropy_base: Float[Tensor, "text pos"]
    entropy_steered: Float[Tensor, "text pos"]
    entropy_control: Float[Tensor, "text pos"] | None
    flip_steered: Bool[Tensor, "text pos"]
    flip_control: Bool[Tensor, "text pos"] | None
    vector_norms: Float[Tensor, " k"]
    control_norms: Float[Tensor, " k"] | None
    layer: int
    coeff: float
    align: str
    control_seed: int | None
    masked_injection: bool
    vector_label: str
    model_name: str

    def runs(self) -> list[tuple[str, Tensor, Tensor, Tensor]]:
        """``(name, kl, entropy, flip)`` for ``steered`` and, when it ran, ``control``."""
        out = [("steered", self.kl_steered, self.entropy_steered, self.flip_steered)]
        if self.kl_control is not None:
            out.append(("control", self.kl_control, self.entropy_control, self.flip_control))
        return out

    def summary(self) -> pd.DataFrame:
        """Means over counted positions, one row per run (``steered``, ``control``)."""
        rows = []
        for run, kl, ent, flip in self.runs():
            sel = kl[self.counted]
            rows.append(dict(
                run=run, mean_kl=masked_mean(kl, self.counted),
                median_kl=float(sel.median()) if sel.numel() else float("nan"),
                mean_entropy_change=masked_mean(ent - self.entropy_base, self.counted),
                flip_rate=masked_mean(flip.float(), self.counted), n_positions=int(self.counted.sum()),
                layer=self.layer, coeff=self.coeff, align=self.align,
            ))
        return pd.DataFrame.from_records(rows)

    def to_frame(self) -> pd.DataFrame:
        """One row per real token (pads left out); ``position`` counts from BOS = 0."""
        records = []
        for i, (start, length) in enumerate(zip(self.starts, self.lengths, strict=True)):
            for p in range(start, start + length):
                rec = dict(text=i, position=p - start, token=self.token_strings[i][p - start],
                           injected=bool(self.injected[i, p]), counted=bool(self.counted[i, p]),
                           entropy_base=float(self.entropy_base[i, p]))
                for run, kl, ent, flip in self.runs():
                    rec |= {f"kl_{run}": float(kl[i, p]),
                            f"entropy_change_{run}": float(ent[i, p] - rec["entropy_base"]),
                            f"flip_{run}": bool(flip[i, p])}
                records.append(rec)
        return pd.DataFrame.from_records(records)

    def html(self, *, max_texts: int = 20) -> str:
        """Token-coloured HTML (steered and control rows per text; one colour scale for both).

        Shading is the KL of the distribution predicting the *next* token; grey tokens are
        masked (BOS or injection positions). Hover a token for its numbers.
        """
        shown = range(min(len(self.texts), max_texts))
        both = torch.cat([kl[self.counted] for _, kl, _, _ in self.runs()])
        top = float(both.max()) if both.numel() else 0.0
        top = top if top > 0 else 1.0

        def span(i: int, p: int, kl: Tensor, ent: Tensor) -> str:
            tok = self.token_strings[i][p - self.starts[i]].replace("\n", "↵") or "∅"
            text = _html.escape(tok)
            if not bool(self.counted[i, p]):
                why = "injection position" if bool(self.injected[i, p]) else "BOS"
                return (f'<span title="masked ({why}); KL {float(kl[i, p]):.3g} nats" style="background:#ddd;'
                        f'color:#777;border-bottom:1px dashed #999;white-space:pre">{text}</span>')
            value = float(kl[i, p])
            alpha = min(value / top, 1.0)
            title = (f"KL {value:.4g} nats; entropy {float(self.entropy_base[i, p]):.3g} → "
                     f"{float(ent[i, p]):.3g}")
            return (f'<span title="{_html.escape(title)}" style="background:rgba(215,48,39,{alpha:.3f});'
                    f'white-space:pre">{text}</span>')

        parts = [
            '<div style="font-family:monospace;line-height:1.8">',
            f"<p>KL(steered ‖ unsteered) per token, layer {self.layer}, coeff {self.coeff:g}, align "
            f"{_html.escape(self.align)}; darkest = {top:.3g} nats. Grey: masked. "
            + (f"Control: norm-matched Gaussian (seed {self.control_seed}).</p>" if self.kl_control is not None
             else "No control run.</p>"),
        ]
        for i in shown:
            cells = range(self.starts[i], self.starts[i] + self.lengths[i])
            for run, kl, ent, _ in self.runs():
                tokens = "".join(span(i, p, kl, ent) for p in cells)
                parts.append(f'<div><b style="display:inline-block;width:5em">{run}</b>{tokens}</div>')
            parts.append("<hr>")
        parts.append("</div>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.html()


BLOCK = 128  # positions per unembedding block on the CPU: ~25 MB of float32 logits for a 49k vocabulary
DEVICE_BLOCK_BYTES = 256 * 2**20  # float32 logits per block on an accelerator


def block_rows(device: torch.device, vocab: int) -> int:
    """Positions unembedded at a time: :data:`BLOCK` on the CPU (its measured best); on an accelerator as many as
    :data:`DEVICE_BLOCK_BYTES` of float32 logits hold, at least :data:`BLOCK`.

    Why larger there: a 128-row GEMM against a 128k-token unembedding leaves most of a GPU idle (the first H200
    profile found a slow fallback kernel for it), and every block launches the same ~20 kernels. Not yet measured
    on a GPU. Each row's numbers do not depend on the block it is in.

    >>> block_rows(torch.device("cpu"), 49152), block_rows(torch.device("meta"), 128256)
    (128, 523)
    """
    return BLOCK if device.type == "cpu" else max(BLOCK, DEVICE_BLOCK_BYTES // (4 * vocab))


HIDDEN_BUDGET = 256 * 2**20  # bytes of steered final residuals held at once (many vectors: in groups)


def run_masked(
    model: TransformerBridge,
    texts: object,
    vectors: Sequence[SteeringVector],
    coeff: float,
    *,
    align: Align,
    position: int | None,
    batch_size: int,
    short_prompt: ShortPrompt = "error",
    scope: dict | None = None,
):
    """Shared driver: one unsteered pass per chunk, then one steered pass per vector.

    Returns ``(texts, batch, injected, counted, masked_injection, entropy_base, outputs)``;
    ``outputs[j]`` holds, for vector j, per-token ``kl``, ``entropy`` and ``flip`` tensors
    ``[text, pos]`` (0 / False at pads).
    All vectors must cover the same positions (same k, bos_row).

    Each forward stops at the final residual (:func:`actlens.models.readout.final_hidden`); the
    unembedding and the statistics then run on :func:`block_rows` real positions at a time, so no
    ``[batch, pos, vocab]`` tensor is ever made, and the unsteered log-probabilities of a block
    are computed once for a whole group of vectors.
    """
    adds = [addition(model, v, coeff, align, position, scope) for v in vectors]
    texts, batch = chunked.encode_texts(model, texts, adds[0], short_prompt)
    injected = positions.injected(adds[0].placement, batch.layout)
    real = positions.real(batch.layout, skip_bos=True)
    masked_injection = align != "all"
    counted = real & ~injected if masked_injection else real
    shape = tuple(batch.tokens.shape)
    # Statistics stay on the device of the final residual and are copied to the CPU once at the end: nothing in
    # the loop waits on the device (no .item(), no boolean indexing, no per-block copies).
    def zeros(device, dtype=torch.float32):
        return torch.zeros(shape, device=device, dtype=dtype)

    base_entropy, outputs = None, []
    width = shape[1]
    with torch.inference_mode():
        for chunk in chunked.chunks(batch, batch_size):
            base, head = chunked.hidden(model, chunk)  # once per chunk, shared by every vector
            local, target = chunked.real_index(chunk, width, base.device)
            if base_entropy is None:
                base_entropy = zeros(base.device)
                outputs = [dict(kl=zeros(base.device), entropy=zeros(base.device),
                                flip=zeros(base.device, torch.bool)) for _ in vectors]
            base = base.flatten(0, 1).index_select(0, local)
            group = max(1, HIDDEN_BUDGET // max(base.numel() * base.element_size(), 1))
            for g in range(0, len(vectors), group):
                runs = [chunked.hidden(model, chunk, vec, coeff, align, position, scope)[0].flatten(0, 1)
                        .index_select(0, local) for vec in vectors[g:g + group]]
                ent, stats = _block_stats(head, base, runs, block_rows(base.device, model.cfg.d_vocab))
                if g == 0:
                    base_entropy.view(-1).index_copy_(0, target, ent)
                for out, (kl, entropy_, flip) in zip(outputs[g:g + group], stats, strict=True):
                    for name, values in (("kl", kl), ("entropy", entropy_), ("flip", flip)):
                        out[name].view(-1).index_copy_(0, target, values)
    base_entropy = chunked.to_host(base_entropy)
    outputs = [{name: chunked.to_host(t) for name, t in out.items()} for out in outputs]
    return texts, batch, injected, counted, masked_injection, base_entropy, outputs


def _block_stats(head, base: Float[Tensor, "n d"], runs: Sequence[Float[Tensor, "n d"]], rows: int):
    """Unsteered entropy, and per run ``(KL, entropy, top-1 flip)``, for n positions, ``rows`` at a time, on
    ``base``'s device."""
    n, device = base.shape[0], base.device
    base_entropy = torch.empty(n, device=device)
    stats = [(torch.empty(n, device=device), torch.empty(n, device=device), torch.empty(n, dtype=torch.bool,
                                                                                      device=device))
             for _ in runs]
    for a in range(0, n, rows):
        b = min(a + rows, n)
        lb = _log_probs(head(base[a:b]))
        base_entropy[a:b] = _entropy(lb)
        top = lb.argmax(-1)
        for run, (kl, ent, flip) in zip(runs, stats, strict=True):
            lq = _log_probs(head(run[a:b]))
            k, e = _kl_entropy(lq, lb)
            kl[a:b], ent[a:b], flip[a:b] = k, e, lq.argmax(-1) != top
    return base_entropy, stats


def kl_per_token(
    model: TransformerBridge,
    texts: str | Sequence[str],
    vector: SteeringVector,
    coeff: float,
    *,
    align: Align = "front",
    position: int | None = None,
    phase: Phase = "both",
    span: tuple[int, int | None] | None = None,
    include_bos: bool = False,
    control: bool = True,
    control_seed: int = 0,
    batch_size: int = 8,
    short_prompt: ShortPrompt = "error",
) -> KLResult:
    """``KL(steered ‖ unsteered)`` per token, injection positions masked, with a random control.

    Args:
        texts: the texts to score (each must be at least as long as the injection).
        vector: the steering vector (or ``(vector, coeff)`` pairs), as in :func:`actlens.steer`.
        coeff: its coefficient, as in :func:`actlens.steer`.
        align: how it is placed, as in :func:`actlens.steer`.
        position: which row ``align="all"`` uses, as in :func:`actlens.steer`.
        phase: which tokens ``align="all"`` steers, as in :func:`actlens.steer`.
            Scored text is all prompt, so ``phase="prompt"`` equals ``"both"`` here and
            ``"generation"`` (nothing steered) is an error.
        span: prompt positions ``align="all"`` steers, as in :func:`actlens.steer`.
        include_bos: also steer BOS, as in :func:`actlens.steer`.
        control: also run the norm-matched Gaussian control (one more forward per text); with
            False the ``*_control`` fields are None.
        control_seed: seed of that control (:func:`actlens.random_like`).
        batch_size: texts per forward.
        short_prompt: ``"error"`` for a text shorter than the vector, or ``"pad"`` to insert
            space tokens after BOS (they are injection positions, hence masked).

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=1)
    >>> r = kl_per_token(model, ["I think that you are", "The weather is"], v, 4.0)
    >>> bool((r.kl_steered >= 0).all()), int(r.counted[0].sum())   # 21 tokens - BOS - 4 injected
    (True, 16)
    """
    vector = check_vector(model, vector)
    coeff = _validation.finite("coeff", coeff)
    _validation.seed(control_seed, name="control_seed")
    _validation.positive_int("batch_size", batch_size)
    if not isinstance(control, bool):
        raise TypeError(f"control must be True or False, got {control!r}")
    if phase == "generation":
        raise ValueError("kl_per_token scores next-token distributions over given text, which is all prompt, so "
                         "phase='generation' would steer nothing; use phase='both' (here the same as 'prompt'), "
                         "and actlens.generate(..., phase='generation') for generated tokens")
    scope = dict(phase=phase, span=span, include_bos=include_bos)
    runs = [vector, random_like(vector, seed=control_seed)] if control else [vector]
    texts, batch, injected, counted, masked_injection, base_entropy, (st, *ct) = run_masked(
        model, texts, runs, coeff, align=align, position=position, batch_size=batch_size,
        short_prompt=short_prompt, scope=scope)
    ct = ct[0] if ct else dict.fromkeys(st)  # no control run: None for each of its fields
    token_strings = tuple(
        tuple(prompts.token_strings(model, batch.tokens[i, s:s + n].tolist()))
        for i, (s, n) in enumerate(zip(batch.starts, batch.lengths, strict=True))
    )
    label = f"{vector.kind} {vector.plus[0]!r} − {vector.minus[0]!r}" if len(vector.plus) == 1 else vector.kind
    return KLResult(
        texts=tuple(texts), tokens=batch.tokens, token_strings=token_strings, starts=tuple(batch.starts),
        lengths=tuple(batch.lengths), injected=injected, counted=counted,
        kl_steered=st["kl"], kl_control=ct["kl"], entropy_base=base_entropy,
        entropy_steered=st["entropy"], entropy_control=ct["entropy"], flip_steered=st["flip"], flip_control=ct["flip"],
        vector_norms=vector.norms(), control_norms=runs[1].norms() if control else None, layer=vector.layer,
        coeff=coeff, align=align, control_seed=control_seed if control else None, masked_injection=masked_injection,
        vector_label=label, model_name=vector.model.name,
    )


__all__ = ["KLResult", "block_rows", "entropy", "kl_divergence", "kl_from_log_probs", "kl_per_token", "log_probs",
           "masked_mean", "top1_flip"]
