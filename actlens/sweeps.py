"""Layer x coefficient x prompt x seed (x vector) sweeps of steered generation, with controls.

A :class:`Grid` lists the vectors (each a recipe that builds a :class:`~actlens.SteeringVector`
at any layer), layers, coefficients, prompts and seeds; :func:`sweep` samples one completion
per (setting, prompt, seed) and scores it with text metrics (:data:`actlens.metrics.TEXT_METRICS`:
VADER sentiment, wedding-topic hits and counts, distinct-n, repetition). The controls are
the unsteered model (run once and shared by every setting), a norm-matched random vector
(:func:`actlens.random_like`) at every steered setting, and the prompting baseline: the
vector's phrase prepended to the prompt (Turner et al. 2023, arXiv 2308.10248, App. B).

Settings share the batch dimension (:mod:`actlens.batched`): rows of one generate call may
carry different coefficients, layers and vectors, and sampling is keyed by (seed, prompt), so
a row's completion does not depend on its batch-mates and the unsteered and steered rows of
one (seed, prompt) share their random numbers. With ``out=`` every finished batch is appended
to a JSON-lines file at once; running the same sweep again skips the rows already there, so
an interrupted sweep resumes where it stopped and loses no finished row.
"""

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import pandas as pd
from transformer_lens import TransformerBridge

from actlens import _validation
from actlens import metrics as _metrics
from actlens._store import Store
from actlens.batched import Request, encode_rows, generate_rows
from actlens.model import check_layer, fingerprint
from actlens.positions import Placement, Scope
from actlens.sampling import SAMPLER, Sampling, key_seed
from actlens.types import ALIGNS, Align, Phase
from actlens.vectors import SteeringVector, actadd_vector, mean_diff_vector, random_like

Condition = Literal["unsteered", "steered", "random", "prompting"]
Control = Literal["unsteered", "random", "prompting"]
CONTROLS: tuple[str, ...] = get_args(Control)
Batching = Literal["batched", "separate"]
Backend = Literal["local", "ray"]


@dataclass(frozen=True)
class VectorSpec:
    """How to build a steering vector at any layer, how to apply it, and its prompting baseline.

    ``prefix`` is prepended to each prompt for the prompting control (``None``: no such control).
    ``recipe`` describes ``build`` for config hashes and manifests.
    """

    name: str
    build: Callable[[TransformerBridge, int], SteeringVector] = field(repr=False, compare=False)
    align: Align = "front"
    position: int | None = None
    prefix: str | None = None
    recipe: str = ""
    phase: Phase = "both"  # phase, span, include_bos: which tokens align="all" steers (actlens.steer)
    span: tuple[int, int | None] | None = None
    include_bos: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a VectorSpec needs a non-empty name, got {self.name!r}")
        _validation.choice("align", self.align, ALIGNS)
        Placement(self.align, 1, False, True, Scope(self.phase, self.span, self.include_bos))  # raises if they clash

    def scope_config(self) -> dict:
        """The scope when not the default (so configs, and their hashes, of unscoped sweeps stay as they were)."""
        if Scope(self.phase, self.span, self.include_bos).default:
            return {}
        return dict(phase=self.phase, span=self.span, include_bos=self.include_bos)


def pair_spec(plus: str, minus: str, *, name: str | None = None, align: Align = "front",
              position: int | None = None, prefix: str | None = "auto") -> VectorSpec:
    """ActAdd pair ``plus - minus`` (space-padded) at each layer; prompting prefix ``plus`` by default.

    >>> pair_spec("Love", "Hate").name, pair_spec(" weddings", " ").prefix
    ('Love-Hate', 'weddings ')
    """
    if prefix == "auto":
        prefix = f"{plus.strip()} " if plus.strip() else None
    return VectorSpec(name or f"{plus.strip()}-{minus.strip()}", lambda m, layer: actadd_vector(m, plus, minus, layer),
                      align=align, position=position, prefix=prefix, recipe=f"actadd {plus!r} - {minus!r}")


def mean_diff_spec(pairs: Sequence[tuple[str, str]], *, name: str, read_position: str = "last",
                   prefix: str | None = None, phase: Phase = "both", span: tuple[int, int | None] | None = None,
                   include_bos: bool = False) -> VectorSpec:
    """Mean difference over contrast pairs at each layer, added at every position (``align="all"``)
    of the tokens ``phase`` / ``span`` / ``include_bos`` choose (see :func:`actlens.steer`)."""
    pairs = [tuple(p) for p in pairs]
    return VectorSpec(name, lambda m, layer: mean_diff_vector(m, pairs, layer, read_position=read_position),
                      align="all", prefix=prefix, recipe=f"mean_diff {pairs!r} read {read_position}",
                      phase=phase, span=span, include_bos=include_bos)


def _tuple(name: str, values: object, kind: type | tuple[type, ...]) -> tuple:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | range):
        raise TypeError(f"{name} must be a list, got {type(values).__name__} {values!r}")
    out = tuple(values)
    if not out:
        raise ValueError(f"{name} is empty; a sweep needs at least one value in each of vectors, layers, coeffs, "
                         "prompts and seeds")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise TypeError(f"{name} must hold {getattr(kind, '__name__', kind)} values, got {v!r}")
    return out


@dataclass(frozen=True)
class Setting:
    """One cell of the grid: a condition with its vector, layer and coefficient (None for controls without)."""

    condition: str
    vector: str
    layer: int | None
    coeff: float | None


@dataclass(frozen=True)
class Grid:
    """The settings of a sweep. Coefficients must be finite; every list must be non-empty."""

    vectors: tuple[VectorSpec, ...]
    layers: tuple[int, ...]
    coeffs: tuple[float, ...]
    prompts: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    controls: tuple[str, ...] = CONTROLS
    control_seed: int = 0

    def __post_init__(self) -> None:
        vectors = _tuple("vectors", self.vectors, VectorSpec)
        names = [v.name for v in vectors]
        if len(set(names)) != len(names):
            raise ValueError(f"vector names must be unique, got {names}")
        coeffs = tuple(_validation.finite("coeffs[]", c) for c in _tuple("coeffs", self.coeffs, (int, float)))
        controls = tuple(self.controls)
        for c in controls:
            _validation.choice("controls[]", c, CONTROLS)
        for key, value in (("vectors", vectors), ("layers", _tuple("layers", self.layers, int)), ("coeffs", coeffs),
                           ("prompts", tuple(_validation.texts("prompts", list(self.prompts)))),
                           ("seeds", tuple(_validation.seed(s, name="seeds[]")
                                           for s in _tuple("seeds", self.seeds, int))),
                           ("controls", controls),
                           ("control_seed", _validation.seed(self.control_seed, name="control_seed"))):
            object.__setattr__(self, key, value)

    def settings(self) -> list[Setting]:
        """Unsteered first, then per vector: prompting, then steered and random per layer and coefficient."""
        out = [Setting("unsteered", "", None, None)] if "unsteered" in self.controls else []
        for spec in self.vectors:
            if "prompting" in self.controls and spec.prefix:
                out.append(Setting("prompting", spec.name, None, None))
            for layer in self.layers:
                for coeff in self.coeffs:
                    out.append(Setting("steered", spec.name, layer, coeff))
                    if "random" in self.controls:
                        out.append(Setting("random", spec.name, layer, coeff))
        return out

    def config(self) -> dict:
        """A JSON-able description (recipes, not functions) for hashes and manifests."""
        return dict(vectors=[dict(name=v.name, recipe=v.recipe, align=v.align, position=v.position, prefix=v.prefix)
                             | v.scope_config() for v in self.vectors],
                    layers=list(self.layers), coeffs=list(self.coeffs), prompts=list(self.prompts),
                    seeds=list(self.seeds), controls=list(self.controls), control_seed=self.control_seed)


KEY = ("condition", "vector", "layer", "coeff", "prompt", "seed")


@dataclass(frozen=True)
class SweepResult:
    """Completions with their metrics; :meth:`to_frame` gives the tidy long form."""

    records: tuple[dict, ...]
    metrics: tuple[str, ...]
    config: dict
    elapsed_s: float = 0.0
    computed: int = 0  # rows generated by this call (the rest came from ``out``)

    def completions(self) -> pd.DataFrame:
        """One row per (setting, prompt, seed): the key, the completion, ``n_tokens`` and every metric."""
        return pd.DataFrame(list(self.records), columns=[*KEY, "completion", "n_tokens", *self.metrics])

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per (condition, vector, layer, coeff, prompt, seed, metric) with its ``value``."""
        wide = self.completions()
        return wide.melt(id_vars=list(KEY), value_vars=list(self.metrics), var_name="metric", value_name="value")

    def summary(self, metric: str, *, level: float = 0.95) -> pd.DataFrame:
        """Mean of ``metric`` per setting with a bootstrap CI over prompts x seeds."""
        if metric not in self.metrics:
            raise KeyError(f"unknown metric {metric!r}; this sweep recorded {list(self.metrics)}")
        frame = self.completions().rename(columns={metric: "value"})
        return _metrics.summarise(frame, ["condition", "vector", "layer", "coeff"], level=level)


def _key(record: Mapping) -> tuple:
    layer, coeff = record["layer"], record["coeff"]
    return (record["condition"], record["vector"], None if layer is None else int(layer),
            None if coeff is None else float(coeff), record["prompt"], int(record["seed"]))


@dataclass
class _Vectors:
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
             metrics: Mapping[str, Callable[[str], float]], vector_cache: dict | None = None) -> list[dict]:
    """Sample and score ``rows`` of ``grid`` in one generate call: one record per row.

    ``vector_cache`` (a dict kept between calls) holds the vectors built so far.
    """
    vectors = _Vectors(model, grid, {} if vector_cache is None else vector_cache)
    requests = [vectors.request(s) for s, _, _ in rows]
    texts = [f"{_spec(grid, s).prefix}{p}" if s.condition == "prompting" else p for s, p, _ in rows]
    encoded = encode_rows(model, texts, requests, max_new_tokens=sampling.max_new_tokens)
    new = generate_rows(model, encoded, requests, [key_seed(seed, p) for _, p, seed in rows], sampling)
    records = []
    for (s, p, seed), tokens in zip(rows, new, strict=True):
        text = model.tokenizer.decode(tokens, skip_special_tokens=True)
        rec = _record(s, p, seed) | dict(completion=text, n_tokens=len(tokens))
        records.append(rec | {name: float(fn(text)) for name, fn in metrics.items()})
    return records


@dataclass
class _Local:
    """The local backend: this process, ``model`` already loaded."""

    model: TransformerBridge
    mode: str

    def config(self, grid: Grid, sampling: Sampling, names: Sequence[str]) -> dict:
        return sweep_config(self.model, grid, sampling, names)

    def run(self, grid: Grid, todo: list[Row], *, sampling: Sampling, metrics: Mapping, batch_size: int):
        cache: dict = {}
        vectors = _Vectors(self.model, grid, cache)
        for s in {s for s, _, _ in todo}:  # build vectors (and surface bad specs or prompts) before any decoding
            vectors.request(s)
        for chunk in _chunks(todo, batch_size, self.mode, grid):
            yield chunk, run_rows(self.model, grid, chunk, sampling=sampling, metrics=metrics, vector_cache=cache)


def sweep(
    model: TransformerBridge,
    grid: Grid,
    *,
    sampling: Sampling = Sampling(),
    metrics: Mapping[str, Callable[[str], float]] | None = None,
    out: str | Path | None = None,
    batch_size: int = 32,
    mode: Batching = "batched",
    progress: bool = True,
    limit: int | None = None,
    backend: Backend | None = None,
    workers: int | None = None,
) -> SweepResult:
    """Sample and score one completion per (setting, prompt, seed) of ``grid``.

    Args:
        model: a loaded model; with ``backend="ray"`` instead what each worker loads (a name or
            path, a zero-argument factory) or a started :class:`actlens.distributed.RayWorkers`.
        sampling: decoding settings (the paper's by default).
        metrics: name -> function of the completion text (default :data:`actlens.metrics.TEXT_METRICS`).
        out: a ``.jsonl`` file; finished rows are appended as they come and rows already there are
            skipped, so re-running an interrupted sweep resumes it. A file written by a different
            grid or sampling raises.
        batch_size: rows (settings x prompts x seeds) per generate call.
        mode: ``"batched"`` (settings share batches, unsteered run once) or ``"separate"``: one call
            per steered setting and seed with the prompts as rows, each also re-running the unsteered
            rows, as a loop of ``actlens.generate(..., paired=True)`` would (the speed baseline of
            :func:`compare_batched`; same numbers).
        progress: show a tqdm bar.
        limit: compute at most this many new rows (a partial run, e.g. to time a sweep); the result
            holds only the rows done so far.
        backend: ``"local"`` (this process; the default) or ``"ray"`` (the default for a pool): shards
            of rows computed by Ray actors, each holding one copy of the model (:mod:`actlens.distributed`);
            same rows, same numbers, and this process is the only writer of ``out``.
        workers: with ``backend="ray"``, how many actors (default: one per GPU, else one per CPU, at most 8).

    >>> from actlens.tiny import tiny_model
    >>> model = tiny_model()
    >>> grid = Grid([pair_spec("Love", "Hate")], layers=[1], coeffs=[2.0], prompts=["I think you"], seeds=[0, 1])
    >>> result = sweep(model, grid, sampling=Sampling(max_new_tokens=4), progress=False)
    >>> sorted(result.completions().condition.unique())
    ['prompting', 'random', 'steered', 'unsteered']
    >>> len(result.to_frame()) == 4 * 2 * len(result.metrics)
    True
    """
    _validation.choice("mode", mode, get_args(Batching))
    from actlens.distributed import RayWorkers  # imports Ray only when it starts workers

    if backend is None:
        backend = "ray" if isinstance(model, RayWorkers) else "local"
    _validation.choice("backend", backend, get_args(Backend))
    batch_size = _validation.positive_int("batch_size", batch_size)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an actlens.sweeps.Grid, got {type(grid).__name__}")
    if not isinstance(sampling, Sampling):
        raise TypeError(f"sampling must be an actlens.Sampling, got {type(sampling).__name__}")
    fns = dict(metrics or _metrics.TEXT_METRICS)
    if backend == "ray":
        if mode != "batched":
            raise ValueError(f"backend='ray' runs batched shards; mode={mode!r} is the local speed baseline only")
        runner = RayWorkers.of(model, workers)  # the caller's pool, or a new one closed at the end
        scope = contextlib.nullcontext() if runner is model else contextlib.closing(runner)
    else:
        if workers is not None:
            raise ValueError(f"workers={workers!r} applies to backend='ray'; pass backend='ray' or drop workers")
        if not isinstance(model, TransformerBridge):
            raise TypeError(f"backend='local' needs a loaded model (actlens.load_model(...)), got "
                            f"{type(model).__name__}; pass backend='ray' to load it in Ray workers")
        runner, scope = _Local(model, mode), contextlib.nullcontext()
    with scope:
        return _run(runner, backend, grid, sampling, fns, out, batch_size, progress, limit)


def _run(runner, backend: str, grid: Grid, sampling: Sampling, fns: dict, out, batch_size: int, progress: bool,
         limit: int | None) -> SweepResult:
    config = runner.config(grid, sampling, sorted(fns))
    store = Store(out, config, key=_key) if out is not None else None
    try:
        return _resume(runner, backend, grid, sampling, fns, config, store, batch_size, progress, limit)
    finally:
        if store is not None:
            store.close()


def _resume(runner, backend: str, grid: Grid, sampling: Sampling, fns: dict, config: dict, store: Store | None,
            batch_size: int, progress: bool, limit: int | None) -> SweepResult:
    done = store.records() if store is not None else {}
    everything = grid_rows(grid)
    todo = [row for row in everything if _key(_record(*row)) not in done]
    if limit is not None:
        todo = todo[:_validation.positive_int("limit", limit)]
    started = time.perf_counter()
    fresh: dict[tuple, dict] = {}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="sweep", unit="completion", disable=not progress or not todo)
    for sent, computed in runner.run(grid, todo, sampling=sampling, metrics=fns, batch_size=batch_size):
        if [_key(r) for r in computed] != [_key(_record(*row)) for row in sent]:  # e.g. from another worker version
            raise RuntimeError(f"the {backend} backend returned {len(computed)} records that do not match the "
                               f"{len(sent)} rows sent; nothing of them was stored")
        records = [r for r in computed if _key(r) not in done and _key(r) not in fresh]
        fresh.update((_key(r), r) for r in records)
        if store is not None and records:
            store.append(records)
        bar.update(len(sent))
    bar.close()
    done.update(fresh)
    order = {_key(_record(*row)): i for i, row in enumerate(everything)}
    records = sorted((r for r in done.values() if _key(r) in order), key=lambda r: order[_key(r)])
    return SweepResult(tuple(records), tuple(fns), config, time.perf_counter() - started, len(fresh))


def _spec(grid: Grid, setting: Setting) -> VectorSpec:
    return next(v for v in grid.vectors if v.name == setting.vector)


def _record(s: Setting, prompt: str, seed: int) -> dict:
    return dict(condition=s.condition, vector=s.vector, layer=s.layer, coeff=s.coeff, prompt=prompt, seed=seed)


def _chunks(todo: list, batch_size: int, mode: str, grid: Grid) -> list[list]:
    if mode == "batched":
        return [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    unsteered = Setting("unsteered", "", None, None)
    chunks = []
    for s in dict.fromkeys(s for s, _, _ in todo):
        for seed in grid.seeds:
            rows = [(s, p, seed) for p in grid.prompts]
            if s.condition in ("steered", "random"):  # what generate(paired=True) runs: unsteered again
                chunks.append([(unsteered, p, seed) for p in grid.prompts])
            chunks.append(rows)
    return chunks


@dataclass(frozen=True)
class BatchCheck:
    """Timing of a batched sweep against running each setting separately, and whether they agree."""

    batched_s: float
    separate_s: float
    speedup: float
    identical: bool
    max_abs_diff: float
    n_completions: int
    batch_size: int


def bench_grid(model: TransformerBridge) -> Grid:
    """A small Love-Hate grid (2 layers x 4 coefficients, 4 prompts x 2 seeds, unsteered + random)."""
    n = int(model.cfg.n_layers)
    return Grid([pair_spec("Love", "Hate")], layers=sorted({n // 4, n // 2}), coeffs=[1.0, 2.0, 4.0, 8.0],
                prompts=["I think that you", "The weather today is", "My neighbour said", "Yesterday I went"],
                seeds=[0, 1], controls=("unsteered", "random"))


def compare_batched(
    model: TransformerBridge, grid: Grid | None = None, *, sampling: Sampling = Sampling(max_new_tokens=20),
    batch_size: int = 64,
) -> BatchCheck:
    """Run ``grid`` batched and separately (see :func:`sweep`'s ``mode``); time both, compare numbers.

    ``grid`` defaults to :func:`bench_grid`. ``identical`` is True when every completion is the same
    and every metric agrees (``max_abs_diff`` is the largest metric difference).
    """
    grid = grid or bench_grid(model)
    t0 = time.perf_counter()
    a = sweep(model, grid, sampling=sampling, batch_size=batch_size, progress=False)
    t1 = time.perf_counter()
    b = sweep(model, grid, sampling=sampling, mode="separate", progress=False)
    t2 = time.perf_counter()
    fa, fb = a.completions(), b.completions()
    same_text = fa.completion.tolist() == fb.completion.tolist()
    diff = (fa[list(a.metrics)] - fb[list(b.metrics)]).abs().max().max() if len(fa) == len(fb) else math.inf
    diff = 0.0 if isinstance(diff, float) and math.isnan(diff) else float(diff)
    return BatchCheck(t1 - t0, t2 - t1, (t2 - t1) / max(t1 - t0, 1e-9), same_text and diff == 0.0, diff, len(fa),
                      batch_size)


__all__ = [
    "CONTROLS",
    "BatchCheck",
    "Grid",
    "Sampling",
    "Setting",
    "SweepResult",
    "VectorSpec",
    "bench_grid",
    "compare_batched",
    "mean_diff_spec",
    "pair_spec",
    "grid_rows",
    "run_rows",
    "sweep",
    "sweep_config",
]
