"""Rows for :func:`actlens.kl_curve`: 8 coefficients in one call against 8 separate ``kl_per_token`` calls.

Two groups, because the saving depends on the vector's layer L (layers below L run once):

* ``klcurve``: the benchmark's ActAdd vector (layer ``min(6, n_layers - 1)``);
* ``klcurve-late``: the same pair extracted at two thirds of the depth.

The baseline row (``separate``) calls ``kl_per_token(..., control=False)`` once per coefficient;
``batched`` calls ``kl_curve`` with all of them. The check round compares their numbers (relative
difference within :data:`actlens.bench.KL_TOLERANCE` for the device and dtype) and records the largest.
"""

from actlens.bench.extra import texts
from actlens.bench.rows import Case, Unavailable, Workload, row

COEFFS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, -1.0, -4.0)


def _vector(w: Workload, group: str):
    if group == "klcurve":
        return w.vector
    from actlens.vectors import actadd_vector

    layer = min(round(2 * int(w.setup.model.cfg.n_layers) / 3), int(w.setup.model.cfg.n_layers) - 1)
    return actadd_vector(w.setup.model, "Love", "Hate", layer)


def _make(mode: str):
    def make(w: Workload, case: Case):
        try:
            from actlens.analysis.kl import kl_per_token
            from actlens.analysis.klcurve import kl_curve
        except ImportError as err:
            raise Unavailable(f"actlens.analysis.klcurve is not importable ({err})") from err
        items = texts(w, case)
        vector = _vector(w, case.group)
        model = w.setup.model

        if mode == "separate":
            def run():
                return [float(kl_per_token(model, items, vector, c, control=False, batch_size=case.batch)
                              .summary().mean_kl.iloc[0]) for c in COEFFS]
        else:
            def run():
                return kl_curve(model, items, vector, COEFFS, batch_size=case.batch).mean_kl.tolist()

        return run

    return make


for _group, _where in (("klcurve", "the bench vector's layer"), ("klcurve-late", "layer 2/3 of depth")):
    row(_group, "separate", f"8 x kl_per_token(control=False), {_where} (baseline)", baseline=True,
        optional=True)(_make("separate"))
    row(_group, "batched", f"kl_curve, 8 coefficients in one call, {_where}", optional=True)(_make("batched"))


def agreement(separate: list[float], batched: list[float]) -> float:
    """Largest relative difference between the two rows' numbers (the bench checks it against its tolerance)."""
    return max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(separate, batched, strict=True))


__all__ = ["COEFFS", "agreement"]
