"""How strong should a vector be? The coefficient that meets a KL budget, or a size in residual-norm units.

``calibrate(model, vector, target_kl=0.1)`` finds the coefficient at which the mean per-token
``KL(steered ‖ unsteered)`` on neutral text, as :func:`actlens.kl_curve` defines it, equals the
budget: a budget says how much the model's predictions may move on text that has nothing to do
with the steering, which is comparable across layers and models where a raw coefficient is not
(residual norms grow with depth and differ between models). ``calibrate(model, vector, units=0.5)``
instead returns the coefficient at which the vector's largest row is half a typical residual
norm at its layer (:func:`actlens.coeff_from_units`).

The search is monotone and batched: a geometric grid of coefficients spanning ``coeff_range``
(default: 1/256 to 16 typical residual norms) is one :func:`actlens.kl_curve` call; the first
bracket whose KL crosses the target is refined with a second grid, and the coefficient is
interpolated in log-log space between the bracketing points. The mean KL is assumed to grow with
the coefficient; the smallest coefficient that reaches the budget is returned. Default texts:
``actlens/data/calibration_texts.txt`` (12 neutral sentences).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pandas as pd
from transformer_lens import TransformerBridge

from actlens.analysis.klcurve import kl_curve
from actlens.analysis.norms import coeff_from_units, units_from_coeff
from actlens.core import validation as _validation
from actlens.core.types import Align
from actlens.vectors import SteeringVector, check_vector

DEFAULT_KL = 0.1
"""Default budget (nats per token) of ``actlens diagnose``: the weddings vector at the paper's c = 1 moves
SmolLM2's next-token distributions by ~0.07 nats on ordinary text (figures/kl_tokens)."""
GRID = 8  # coefficients per kl_curve call


@cache
def default_texts() -> tuple[str, ...]:
    """The shipped neutral calibration texts (``actlens/data/calibration_texts.txt``).

    >>> len(default_texts())
    12
    """
    text = resources.files("actlens").joinpath("data/calibration_texts.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@dataclass(frozen=True)
class Calibration:
    """The calibrated coefficient, what it means, and every (coefficient, mean KL) the search evaluated."""

    coeff: float
    units: float  # the coefficient in typical residual norms (largest row)
    target_kl: float | None
    mean_kl: float | None  # mean KL measured at ``coeff`` (None for a units calibration)
    curve: pd.DataFrame  # coeff, mean_kl, units, round
    layer: int
    align: str

    def to_frame(self) -> pd.DataFrame:
        """The search's curve: one row per evaluated coefficient (``coeff``, ``mean_kl``, ``units``, ``round``)."""
        return self.curve.copy()


def _geom(lo: float, hi: float, n: int) -> list[float]:
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def calibrate(
    model: TransformerBridge,
    vector: SteeringVector,
    *,
    target_kl: float | None = None,
    units: float | None = None,
    texts: Sequence[str] | None = None,
    align: Align = "front",
    position: int | None = None,
    coeff_range: tuple[float, float] | None = None,
    batch_size: int = 8,
) -> Calibration:
    """The coefficient meeting ``target_kl`` (nats per token on ``texts``) or of size ``units``.

    Args:
        target_kl: the KL budget; or
        units: the size of the vector's largest row in typical residual norms at its layer.
        texts: where the KL is measured (default: :func:`default_texts`).
        align: how the vector is applied, as in :func:`actlens.steer`.
        position: which row of the vector ``align="all"`` uses, as in :func:`actlens.steer`.
        coeff_range: ``(low, high)`` positive coefficients to search (default 1/256 to 16 units).

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> model = tiny_model()
    >>> v = actadd_vector(model, "Love", "Hate", layer=1)
    >>> cal = calibrate(model, v, target_kl=0.001)
    >>> abs(cal.mean_kl - 0.001) < 1e-4, cal.coeff > 0   # measured at the returned coefficient
    (True, True)
    """
    vector = check_vector(model, vector)
    if (target_kl is None) == (units is None):
        raise ValueError("pass exactly one of target_kl= (a KL budget in nats per token, e.g. 0.1) or units= "
                         f"(a size in typical residual norms, e.g. 0.5); got target_kl={target_kl!r}, units={units!r}")
    if units is not None:
        units = _validation.finite("units", units)
        coeff = coeff_from_units(model, vector, units)
        curve = pd.DataFrame(dict(coeff=[coeff], mean_kl=[math.nan], units=[units], round=[0]))
        return Calibration(coeff, units, None, None, curve, vector.layer, align)
    target = _validation.finite("target_kl", target_kl)
    if target <= 0:
        raise ValueError(f"target_kl must be > 0 nats per token, got {target}; e.g. 0.1")
    texts = list(default_texts()) if texts is None else _validation.texts("texts", texts)
    if coeff_range is None:
        lo, hi = coeff_from_units(model, vector, 1 / 256), coeff_from_units(model, vector, 16.0)
    else:
        if not (isinstance(coeff_range, tuple | list) and len(coeff_range) == 2):
            raise TypeError(f"coeff_range must be a (low, high) pair of positive numbers, got {coeff_range!r}")
        lo, hi = (_validation.finite("coeff_range[]", c) for c in coeff_range)
        if not 0 < lo < hi:
            raise ValueError(f"coeff_range must satisfy 0 < low < high, got ({lo}, {hi})")
    seen: list[tuple[float, float, int]] = []

    def evaluate(coeffs: list[float], rnd: int) -> list[tuple[float, float]]:
        result = kl_curve(model, texts, vector, coeffs, align=align, position=position, batch_size=batch_size)
        pts = list(zip(coeffs, result.mean_kl.tolist(), strict=True))
        seen.extend((c, k, rnd) for c, k in pts)
        return pts

    pts = evaluate(_geom(lo, hi, GRID), 0)
    for rnd in (1, 2):
        cross = next((i for i, (_, k) in enumerate(pts) if k >= target), None)
        if cross is None:
            best = max(seen, key=lambda s: s[1])
            raise ValueError(
                f"no coefficient in [{lo:.4g}, {hi:.4g}] reaches target_kl={target:g}: the largest mean KL seen is "
                f"{best[1]:.4g} nats at coeff {best[0]:.4g}; pass a wider coeff_range=(low, high) or a lower target_kl")
        if cross == 0:
            raise ValueError(
                f"even the smallest coefficient searched, {pts[0][0]:.4g}, gives mean KL {pts[0][1]:.4g} >= target_kl="
                f"{target:g}; pass a coeff_range starting lower, or a higher target_kl")
        (c0, k0), (c1, k1) = pts[cross - 1], pts[cross]
        if rnd == 2 or abs(k1 - target) <= 0.02 * target:
            break
        pts = [(c0, k0), *evaluate(_geom(c0, c1, GRID)[1:-1], rnd), (c1, k1)]
    coeff = _interpolate(c0, k0, c1, k1, target)
    achieved = evaluate([coeff], 3)[0][1]  # measured, not assumed
    curve = pd.DataFrame(sorted(seen), columns=["coeff", "mean_kl", "round"])
    curve["units"] = [units_from_coeff(model, vector, c) for c in curve.coeff]
    return Calibration(coeff, units_from_coeff(model, vector, coeff), target, achieved, curve, vector.layer, align)


def _interpolate(c0: float, k0: float, c1: float, k1: float, target: float) -> float:
    """Log-log interpolation between two bracketing points (linear where a KL is 0)."""
    if k0 > 0 and k1 > k0:
        t = (math.log(target) - math.log(k0)) / (math.log(k1) - math.log(k0))
        return math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0)))
    return c0 + (target - k0) / (k1 - k0) * (c1 - c0) if k1 > k0 else c1


__all__ = ["DEFAULT_KL", "Calibration", "calibrate", "default_texts"]
