"""Every figure of ``actlens figures``, in the order it runs them and ``figures/README.md`` numbers them.

The one list: the jobs are defined in :mod:`~actlens.figures.paper_jobs`, :mod:`~actlens.figures.analysis_jobs` and
:mod:`~actlens.figures.diagnostic_jobs` (and :mod:`~actlens.figures.direction_jobs`), and placed here explicitly (nothing registers itself on import).

>>> list(JOBS)[3:6], list(JOBS)[8:11]
(['capital_recall', 'norm_profile', 'cosine_layers'], ['propagation', 'layer_ablation', 'sinks'])
"""

from actlens.figures import analysis_jobs, diagnostic_jobs, direction_jobs, mediation_jobs, paper_jobs
from actlens.figures.jobs import FigureJob, Job, Output

_PAPER, _ANALYSIS, _DIAGNOSTIC = paper_jobs.JOBS, analysis_jobs.JOBS, diagnostic_jobs.JOBS
_MEDIATION = mediation_jobs.JOBS
_DIRECTIONS = direction_jobs.JOBS

JOBS: dict[str, FigureJob] = {
    # the paper's sampling figures 1-4
    **{k: _PAPER[k] for k in ("topic_by_layer", "ppl_by_relevance", "sentiment_by_coeff", "capital_recall")},
    # what explains a vector (figures 5-8, propagation)
    **_ANALYSIS,
    # the paper's layer ablation, after the analyses it builds on
    "layer_ablation": _PAPER["layer_ablation"],
    # diagnostics: sinks, sink-aware ActAdd, KL budgets, steerability
    **_DIAGNOSTIC,
    # ways to find a direction, compared at equal KL; conditional steering
    **_DIRECTIONS,
    # which components carry a vector's effect (activation patching)
    **_MEDIATION,
}
"""Figure id -> job, in the order ``actlens figures`` runs them."""

_DEFINED = len(_PAPER) + len(_ANALYSIS) + len(_DIAGNOSTIC) + len(_DIRECTIONS) + len(_MEDIATION)
if len(JOBS) != _DEFINED:  # a job defined but not placed above
    raise RuntimeError(f"actlens.figures.registry places {len(JOBS)} figure jobs but the job modules define "
                       f"{_DEFINED}; list the new one in JOBS")

__all__ = ["JOBS", "FigureJob", "Job", "Output"]
