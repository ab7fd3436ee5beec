"""Rows for :func:`actlens.mediation`: every layer's attention and MLP of SmolLM2 for 16 texts of 32 tokens.

Group ``mediation`` (opt-in: ``--rows mediation/batched``, which adds its baseline; minutes on a CPU). The baseline
row (``naive``) patches one component per forward, the loop a study written by hand runs; ``batched`` puts the
components on the batch dimension (``method="batched"``, the default). The check round requires identical frames on the CPU (the two
methods do the same arithmetic per row) and reports the largest difference of ``fraction`` elsewhere.
"""

from actlens.bench.extra import texts
from actlens.bench.rows import Case, Unavailable, Workload, row


def _make(method: str):
    def make(w: Workload, case: Case):
        try:
            from actlens.analysis.mediation import mediation
        except ImportError as err:
            raise Unavailable(f"actlens.analysis.mediation is not importable ({err})") from err
        items = texts(w, case)

        def run():
            return mediation(w.setup.model, w.vector, w.coeff, items, method=method, n_boot=100)

        return run

    return make


row("mediation", "naive", "mediation, one forward per component (the hand-written loop; baseline)",
    baseline=True, optional=True, opt_in=True)(_make("naive"))
row("mediation", "batched", "actlens.mediation, components on the batch dimension", optional=True,
    opt_in=True)(_make("batched"))


def agreement(naive, batched) -> float:
    """Largest |difference| of the ``fraction`` column between the two frames (0 when identical)."""
    if list(naive.component) != list(batched.component) or list(naive.measure) != list(batched.measure):
        raise RuntimeError("mediation rows gave different components or measures: they would not do the same work")
    return float((naive.fraction - batched.fraction).abs().max())


__all__ = ["agreement"]
