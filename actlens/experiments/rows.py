"""The row engine both sweep backends share: build a row's vector, sample its completion, score it.

A row is one (setting, prompt, seed) of a :class:`~actlens.experiments.grid.Grid`. :func:`run_rows` samples a list
of rows in one generate call; :mod:`actlens.experiments.sweeps` (in this process) and
:mod:`actlens.experiments.distributed` (on Ray workers) both call it, so a row's record does not depend on where it
ran. :func:`sweep_config` is what a sweep's store is keyed by.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from transformer_lens import TransformerBridge

from actlens.core.sampling import SAMPLER, Sampling, key_seed
from actlens.experiments.grid import Grid, Setting
from actlens.models.model import check_layer, fingerprint
from actlens.steering.batched import Request, encode_rows, generate_rows
from actlens.vectors import SteeringVector, random_like
from actlens.vectors.specs import VectorSpec


def key(record: Mapping) -> tuple:
    layer, coeff = record["layer"], record["coeff"]
    return (record["condition"], record["vector"], None if layer is None else int(layer),
            None if coeff is None else float(coeff), record["prompt"], int(record["seed"]))


@dataclass
class RowVectors:
    """Vectors built on first use, per (spec, layer); random controls per the same key."""

    model: TransformerBridge
    grid: Grid
    cache: dict = field(default_factory=dict)

    def request(self, setting: Setting) -> Request | None:
        if setting.condition in ("unsteered", "prompting"):
            return None
        spec = next(v for v in self.grid.vectors if v.name == setting.vector)
        key = (spec.name, setting.layer, setting.condition)
        if key not in self.cache:
            base = self.cache.get((spec.name, setting.layer, "steered"))
            if base is None:
                base = self.cache[(spec.name, setting.layer, "steered")] = _built(spec, self.model, setting.layer)
            if setting.condition == "random":
                self.cache[key] = random_like(base, seed=self.grid.control_seed)
        return Request(self.cache[key], setting.coeff, spec.align, spec.position, spec.phase, spec.span,
                       spec.include_bos)


def _built(spec: VectorSpec, model: TransformerBridge, layer: int) -> SteeringVector:
    vector = spec.build(model, layer)
    if not isinstance(vector, SteeringVector) or vector.layer != layer:
        raise TypeError(f"VectorSpec {spec.name!r} must build a SteeringVector at layer {layer}, got {vector!r}")
    return vector


def sweep_config(model: TransformerBridge, grid: Grid, sampling: Sampling, metric_names: Sequence[str]) -> dict:
    """What a sweep's store is keyed by (grid, sampling, metrics, model); checks the grid's layers exist."""
    for layer in grid.layers:
        check_layer(model, layer)
    return dict(kind="generation_sweep", grid=grid.config(), sampling=vars(sampling).copy() | {"sampler": SAMPLER},
                metrics=sorted(metric_names), model=fingerprint(model))


Row = tuple[Setting, str, int]  # (setting, prompt, seed): one completion


def grid_rows(grid: Grid) -> list[Row]:
    """Every completion of ``grid`` in the order of :meth:`SweepResult.completions`."""
    return [(s, p, seed) for s in grid.settings() for p in grid.prompts for seed in grid.seeds]


def run_rows(model: TransformerBridge, grid: Grid, rows: Sequence[Row], *, sampling: Sampling,
             metrics: Mapping[str, Callable[[str], float]], vector_cache: dict | None = None,
             compile: bool | str = False) -> list[dict]:
    """Sample and score ``rows`` of ``grid`` in one generate call: one record per row.

    ``vector_cache`` (a dict kept between calls) holds the vectors built so far.
    """
    vectors = RowVectors(model, grid, {} if vector_cache is None else vector_cache)
    requests = [vectors.request(s) for s, _, _ in rows]
    texts = [f"{spec_of(grid, s).prefix}{p}" if s.condition == "prompting" else p for s, p, _ in rows]
    encoded = encode_rows(model, texts, requests, max_new_tokens=sampling.max_new_tokens)
    new = generate_rows(model, encoded, requests, [key_seed(seed, p) for _, p, seed in rows], sampling, compile)
    records = []
    for (s, p, seed), tokens in zip(rows, new, strict=True):
        text = model.tokenizer.decode(tokens, skip_special_tokens=True)
        rec = record(s, p, seed) | dict(completion=text, n_tokens=len(tokens))
        records.append(rec | {name: float(fn(text)) for name, fn in metrics.items()})
    return records


def spec_of(grid: Grid, setting: Setting) -> VectorSpec:
    return next(v for v in grid.vectors if v.name == setting.vector)


def record(s: Setting, prompt: str, seed: int) -> dict:
    return dict(condition=s.condition, vector=s.vector, layer=s.layer, coeff=s.coeff, prompt=prompt, seed=seed)


__all__ = ["Row", "RowVectors", "grid_rows", "key", "run_rows", "sweep_config"]
