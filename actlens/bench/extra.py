"""Rows for the analysis modules: per-token KL (:mod:`actlens.analysis.kl`) and sweeps (:mod:`actlens.experiments.sweeps`).

The ``sweep`` group times one sampled grid (:func:`sweep_grid`) run batched against one setting
at a time (``mode="separate"``, the baseline), and, when asked for (``--rows 'sweep/*,ray-2workers'``),
on two Ray workers of one torch thread each (:mod:`actlens.experiments.distributed`; their start-up, loading
the model, is timed apart); the check round asserts that all give the same completions.

They run on text, not token ids, so each builds English-like prompts of about the case's
length (:func:`texts`) and sets ``tokens_per_call`` on its thunk to the tokens it really
processes. Both are optional: if their module cannot be imported the row is skipped with
the reason.
"""

import torch

from actlens.bench.rows import Case, Unavailable, Workload, row
from actlens.core import prompts

WORDS = ("the", "a", "house", "river", "light", "music", "after", "before", "friend", "city", "old", "new",
         "walked", "said", "quiet", "morning", "because", "small", "garden", "letter", "window", "far")


def texts(w: Workload, case: Case) -> list[str]:
    """``case.batch`` texts of random common words, each ``case.prompt_tokens`` tokens long with BOS (or a
    little shorter when a word boundary gets in the way)."""
    gen = torch.Generator().manual_seed(w.seed * 7_919 + case.batch)
    out = []
    for _ in range(case.batch):
        words = [WORDS[int(i)] for i in torch.randint(len(WORDS), (4 * case.prompt_tokens,), generator=gen)]
        ids = prompts.encode(w.setup.model, " ".join(words), prepend_bos=False)[:case.prompt_tokens - 1]
        out.append(w.setup.model.tokenizer.decode(ids))
    return out


def _n_tokens(w: Workload, items: list[str]) -> int:
    return sum(len(prompts.encode(w.setup.model, t)) for t in items)


def _kl_row(control: bool):
    def make(w: Workload, case: Case):
        try:
            from actlens.analysis.kl import kl_per_token
        except ImportError as err:
            raise Unavailable(f"actlens.analysis.kl is not importable ({err})") from err
        items = texts(w, case)

        def run():
            return kl_per_token(w.setup.model, items, w.vector, w.coeff, batch_size=case.batch, control=control)

        run.tokens_per_call = _n_tokens(w, items)  # tokens scored (each goes through 2 or 3 forward passes)
        return run

    return make


row("forward", "kl_per_token", "actlens.kl_per_token (3 forwards: base, steered, random control)",
    optional=True)(_kl_row(True))
row("forward", "kl_per_token-nocontrol", "actlens.kl_per_token, control=False (2 forwards: base, steered)",
    optional=True)(_kl_row(False))


@row("generate", "sweep", "actlens.experiments.sweeps.sweep, greedy, ActAdd on every row (batched rows)", optional=True)
def _sweep(w: Workload, case: Case):
    try:
        from actlens.experiments.sweeps import Grid, Sampling, VectorSpec, sweep
    except ImportError as err:
        raise Unavailable(f"actlens.experiments.sweeps is not importable ({err})") from err
    items = texts(w, case)
    vector = w.vector
    spec = VectorSpec("bench", build=lambda model, layer: vector, recipe="the benchmark's ActAdd vector")
    grid = Grid([spec], layers=[vector.layer], coeffs=[w.coeff], prompts=items, seeds=[0], controls=())
    sampling = Sampling(max_new_tokens=case.new_tokens, temperature=0.0, top_p=1.0, freq_penalty=0.0,
                        stop_at_eos=False)

    def run():
        result = sweep(w.setup.model, grid, sampling=sampling, metrics={"n_chars": len}, batch_size=case.batch,
                       progress=False)
        made = [r["n_tokens"] for r in result.records]
        if made != [case.new_tokens] * case.batch:
            raise RuntimeError(f"the sweep row made {made} tokens; expected {case.new_tokens} for each of "
                               f"{case.batch} rows")
        return torch.zeros(case.batch, case.new_tokens, dtype=torch.long)  # the shape of the work; texts are in result

    run.tokens_per_call = case.batch * case.new_tokens
    return run


def sweep_grid(model):
    """:func:`actlens.experiments.sweeps.bench_grid` with one seed: 17 settings x 4 prompts = 68 completions."""
    from dataclasses import replace

    from actlens.experiments.sweeps import bench_grid

    return replace(bench_grid(model), seeds=(0,))


def _sweep_mode(mode: str):
    def make(w: Workload, case: Case):
        try:
            from actlens.experiments.sweeps import Sampling, sweep
        except ImportError as err:
            raise Unavailable(f"actlens.experiments.sweeps is not importable ({err})") from err
        grid = sweep_grid(w.setup.model)
        sampling = Sampling(max_new_tokens=case.new_tokens, stop_at_eos=False)  # the paper's sampling settings

        def run():
            result = sweep(w.setup.model, grid, sampling=sampling, metrics={"n_chars": len}, mode=mode,
                           batch_size=case.batch, progress=False)
            return [r["completion"] for r in result.records]

        run.tokens_per_call = case.batch * case.new_tokens
        return run

    return make


row("sweep", "separate", "sweep, one setting at a time (each with its unsteered rows, as generate(paired=True))",
    baseline=True, optional=True)(_sweep_mode("separate"))
row("sweep", "batched", "sweep, batched (settings on the batch dimension, unsteered once)",
    optional=True)(_sweep_mode("batched"))


def worker_model(name: str, dtype: str):
    """What a Ray worker of the ``ray-2workers`` row loads: the bench's own build of ``name`` on CPU."""
    from actlens.bench.models import build

    return build(name, torch.device("cpu"), getattr(torch, dtype)).model


@row("sweep", "ray-2workers", "sweep, batched, on 2 Ray workers (1 torch thread each; start-up timed apart)",
     optional=True, opt_in=True)
def _sweep_ray(w: Workload, case: Case):
    import functools

    from actlens.experiments.sweeps import Sampling, sweep

    try:
        from actlens.experiments.distributed import RayWorkers, import_ray

        import_ray()
    except ImportError as err:
        raise Unavailable(str(err)) from err
    if w.setup.device.type != "cpu":
        raise Unavailable("the Ray row runs CPU workers; time GPUs with one worker per GPU on a cluster")
    grid = sweep_grid(w.setup.model)
    sampling = Sampling(max_new_tokens=case.new_tokens, stop_at_eos=False)
    source = functools.partial(worker_model, w.setup.name, str(w.setup.dtype).removeprefix("torch."))
    pool = RayWorkers(source, workers=2, threads=1)

    def run():
        result = sweep(pool, grid, sampling=sampling, metrics={"n_chars": len}, batch_size=case.batch,
                       progress=False)
        return [r["completion"] for r in result.records]

    run.tokens_per_call = case.batch * case.new_tokens
    run.startup_s = pool.startup_s  # the thunk holds the pool: its workers live as long as the row
    return run


# --- the same sweep on two plain processes: what two workers can gain on this machine, without Ray ---
_PROCESS: dict = {}  # in each worker process of the 2-processes row: its model and the bench grid


def _process_init(name: str, dtype: str) -> None:
    torch.set_num_threads(1)
    model = worker_model(name, dtype)
    _PROCESS.update(model=model, grid=sweep_grid(model))


def _process_ready(wait_s: float) -> int:
    import os
    import time

    time.sleep(wait_s)  # holds this worker so that the other start-up task goes to the second process
    return os.getpid()


def _process_rows(start: int, stop: int, new_tokens: int) -> list[str]:
    from actlens.experiments.sweeps import Sampling, grid_rows, run_rows

    model, grid = _PROCESS["model"], _PROCESS["grid"]
    records = run_rows(model, grid, grid_rows(grid)[start:stop], metrics={"n_chars": len},
                       sampling=Sampling(max_new_tokens=new_tokens, stop_at_eos=False))
    return [r["completion"] for r in records]


@row("sweep", "2-processes", "sweep rows split in two halves on 2 plain processes (no Ray; 1 torch thread each)",
     optional=True, opt_in=True)
def _sweep_processes(w: Workload, case: Case):
    """The ceiling the Ray row is measured against: the same halves, with no scheduler, store or actor in the way."""
    import math
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    from actlens.experiments.sweeps import grid_rows

    if w.setup.device.type != "cpu":
        raise Unavailable("the 2-processes row runs CPU workers")
    n = len(grid_rows(sweep_grid(w.setup.model)))
    started = time.perf_counter()
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_process_init,
                               initargs=(w.setup.name, str(w.setup.dtype).removeprefix("torch.")))
    pids = {f.result() for f in [pool.submit(_process_ready, 1.0) for _ in range(2)]}
    if len(pids) != 2:
        pool.shutdown()
        raise Unavailable(f"the process pool started {len(pids)} worker(s), not 2")
    half = math.ceil(n / 2)

    def run():
        parts = [pool.submit(_process_rows, 0, half, case.new_tokens),
                 pool.submit(_process_rows, half, n, case.new_tokens)]
        return parts[0].result() + parts[1].result()

    run.tokens_per_call = case.batch * case.new_tokens
    run.startup_s = time.perf_counter() - started - 1.0  # less the start-up task's hold
    run.pool = pool  # the thunk holds the pool: its processes live as long as the row
    return run
