"""What a figure job is: the :class:`Job` context it runs in, the :class:`Output` it returns, and the
:class:`FigureJob` entry that lists it.

Every job takes a :class:`Job` and returns an :class:`Output`: the plotly figure, the plotted data as a DataFrame,
its configuration, and notes with the measured numbers (for ``figures/README.md``). The jobs live in
:mod:`~actlens.figures.paper_jobs`, :mod:`~actlens.figures.analysis_jobs` and :mod:`~actlens.figures.diagnostic_jobs`;
:mod:`~actlens.figures.registry` lists them in run order.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from transformer_lens import TransformerBridge

from actlens.experiments import sweeps


@dataclass
class Job:
    """Settings shared by the jobs of one ``actlens figures`` run."""

    model: TransformerBridge
    smoke: bool
    out: Path
    samples: int | None = None  # completions per (setting, prompt); None: the job's default
    max_new_tokens: int | None = None
    layer_step: int | None = None
    batch_size: int = 64
    progress: bool = True
    estimate: bool = False
    name: str = ""
    estimates: dict = field(default_factory=dict)
    pool: object = None  # an actlens.experiments.distributed.RayWorkers: the sweeps run on its workers (--backend ray)

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    def layer(self, fraction: float) -> int:
        """The layer at ``fraction`` of the depth (SmolLM2: 0.2 -> 6, 0.33 -> 10, 0.4 -> 12)."""
        return min(self.n_layers - 1, round(fraction * self.n_layers))

    def layers(self, *, every: bool = False) -> list[int]:
        """Layers to sweep: every ``--layer-step``-th (full default 2), or all (``every``; cheap figures)."""
        step = 1 if every else self.layer_step or (1 if self.smoke or self.n_layers <= 8 else 2)
        return list(range(0, self.n_layers, step))

    def seeds(self, smoke: int, full: int) -> list[int]:
        return list(range(self.samples or (smoke if self.smoke else full)))

    def sampling(self) -> sweeps.Sampling:
        return sweeps.Sampling(max_new_tokens=self.max_new_tokens or (8 if self.smoke else 40))

    def sweep(self, name: str, grid: sweeps.Grid) -> sweeps.SweepResult:
        """Run (or resume) a generation sweep stored at ``out/<name>.completions.jsonl``."""
        path = self.out / f"{name}.completions.jsonl"
        if self.estimate:
            return estimate(self, name, grid, path)
        return sweeps.sweep(self.pool or self.model, grid, sampling=self.sampling(), out=path,
                            batch_size=self.batch_size, progress=self.progress)


@dataclass
class Output:
    figure: go.Figure
    data: pd.DataFrame
    config: dict
    seeds: list[int]
    notes: list[str]
    files: list[Path] = field(default_factory=list)


def estimate(job: Job, name: str, grid: sweeps.Grid, path: Path) -> sweeps.SweepResult:
    """Run only the first batch of the sweep (kept in ``path``: the real run resumes after it) and extrapolate."""
    n_rows = len(grid.settings()) * len(grid.prompts) * len(grid.seeds)
    first = min(job.batch_size, n_rows)
    started = time.perf_counter()
    result = sweeps.sweep(job.pool or job.model, grid, sampling=job.sampling(), out=path, batch_size=first,
                          progress=False, limit=first)
    per_row = (time.perf_counter() - started) / max(result.computed, 1)
    remaining = n_rows - len(result.records)
    job.estimates[name] = dict(rows=n_rows, done=len(result.records), seconds_per_row=per_row,
                               remaining_s=per_row * remaining)
    return result


def name_of(job: Job) -> str:
    return job.name or str(getattr(job.model.cfg, "model_name", "model"))


@dataclass(frozen=True)
class FigureJob:
    title: str
    shows: str  # what the figure shows, for figures/README.md
    run: Callable[[Job], Output]
    generates: bool  # samples completions (the expensive, resumable kind)


__all__ = ["FigureJob", "Job", "Output", "estimate", "name_of"]
