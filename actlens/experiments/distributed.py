"""Sweeps on Ray: shards of rows computed by actors that each hold one copy of the model.

``actlens.sweep(model, grid, backend="ray", workers=N)`` starts N Ray actors (one GPU each
when the cluster has GPUs, otherwise an even share of the CPUs as torch threads); each
loads the model once from what it is given, a name or path for :func:`actlens.load_model`
or a zero-argument factory, and computes shards of rows in batches with
:func:`actlens.experiments.rows.run_rows`. Sampling is keyed per row, so a row's completion does not
depend on its shard or batch: the result equals the local sweep's. This process stays the
only writer of the store: it appends each shard's rows as the shard returns and never sends
out rows already there.

A worker that dies (its process killed, its node lost) has its shards sent to the others
and, while the restart budget lasts, a replacement started; a worker that cannot load the
model stops the pool with its error, once. Ray comes from the ``ray`` extra
(``pip install "actlens[ray]"``); it is imported only here.
"""

import inspect
import math
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from transformer_lens import TransformerBridge

from actlens.core import validation as _validation
from actlens.core.sampling import Sampling
from actlens.experiments import rows as engine
from actlens.experiments.grid import Grid
from actlens.experiments.store import differences
from actlens.models.model import load_model

INSTALL = 'pip install "actlens[ray]"'
IN_FLIGHT = 2  # shards queued per worker: the next one is ready when the current one returns
Source = str | os.PathLike | Callable[[], TransformerBridge]


def import_ray():
    """The ``ray`` module, or an ImportError with the install command."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(f"backend='ray' needs Ray, which is not installed here; run `{INSTALL}`") from err
    return ray


def connect(address: str | None = None, *, timeout: float = 30.0):
    """Connect this process to Ray and return the ``ray`` module.

    ``address`` (or ``$RAY_ADDRESS``) is a running cluster's ``host:port`` (what ``ray start
    --head`` prints), ``ray://host:port`` or ``"auto"``; without one a private local instance
    starts. A cluster that does not answer within ``timeout`` seconds raises ConnectionError
    (``ray.init`` itself keeps retrying for minutes). Already connected: reused.
    """
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", "local", current) and not address.startswith("ray://"):
            raise ValueError(f"this process is already connected to Ray at {current}, not {address}; call "
                             "ray.shutdown() first to switch clusters")
        return ray
    if address not in (None, "local"):
        _reachable(address, timeout)
    if address in (None, "local"):
        # Ray starts workers at niceness 15 (to shield its own daemons); ours are the job's compute and
        # would lose every CPU contest with ordinary processes, so the local instance runs them at 0.
        ray.init(address="local", include_dashboard=False, logging_level="warning",
                 _system_config={"worker_niceness": 0})
    else:
        ray.init(address=address, include_dashboard=False, logging_level="warning")
    return ray


# Connects in a child process, which can be killed when the address does not answer: a TCP
# handshake alone proves little (a proxy or another service may accept it), and an in-process
# ray.init would retry for minutes.
_PROBE = "import sys, ray; ray.init(address=sys.argv[1], logging_level='error', log_to_driver=False); ray.shutdown()"


def _reachable(address: str, timeout: float) -> None:
    hint = ("start one with `ray start --head` and pass the address it prints (or set RAY_ADDRESS), or pass no "
            "address (and unset RAY_ADDRESS) to run on a local instance")
    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"Ray address must be host:port (e.g. 10.0.0.5:6379, as `ray start --head` prints), "
                             f"ray://host:port or 'auto', got {address!r}")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except OSError as err:
            raise ConnectionError(f"cannot reach a Ray cluster at {address!r} ({err}); {hint}") from err
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                               timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise ConnectionError(f"cannot reach a Ray cluster at {address!r}: no answer within {timeout:g} s; "
                              f"{hint}") from err
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ConnectionError(f"cannot connect to a Ray cluster at {address!r}: {last}; {hint}")


def _check_source(model: object) -> None:
    if isinstance(model, torch.nn.Module):
        raise TypeError(
            f"backend='ray' loads the model in every worker, so pass what to load, not a loaded model (got "
            f"{type(model).__name__}): a name or path for actlens.load_model, e.g. 'smollm2-135m', or a "
            "zero-argument factory, e.g. functools.partial(actlens.load_model, 'smollm2-135m', "
            "dtype=torch.bfloat16). A live model would be copied through Ray's object store to each worker and "
            "lose its device placement")
    if isinstance(model, str | os.PathLike):
        return
    if not callable(model):
        raise TypeError(f"backend='ray' needs a model name or path, or a zero-argument factory; got "
                        f"{type(model).__name__} {model!r}")
    try:
        inspect.signature(model).bind()
    except TypeError as err:
        raise TypeError(f"the model factory must take no arguments ({err}); wrap it, e.g. "
                        "functools.partial(actlens.load_model, 'smollm2-135m')") from err
    except ValueError:  # no signature to inspect (some builtins): find out when a worker calls it
        pass


def _load(source: Source, gpu: bool) -> TransformerBridge:
    if isinstance(source, str | os.PathLike):
        return load_model(source, device="cuda" if gpu else None)
    model = source()
    if not isinstance(model, TransformerBridge):
        raise TypeError(f"the model factory returned {type(model).__name__}; it must return a TransformerBridge "
                        "(what actlens.load_model returns)")
    return load_model(model)


class _Actor:
    """One Ray worker: the model, loaded once, and the vectors of the sweep it is working on."""

    def __init__(self, source: Source, threads: int, gpu: bool):
        self.where = f"{socket.gethostname()} pid {os.getpid()}"
        self.error: str | None = None
        self.vectors: dict = {}
        try:
            torch.set_num_threads(threads)
            self.model = _load(source, gpu)
        except Exception as err:  # reported once by the driver; raising here would make Ray log and retry it
            self.error = f"{type(err).__name__}: {err}"

    def ready(self) -> tuple[str | None, str]:
        return self.error, self.where

    def config(self, grid, sampling, names) -> dict:
        return engine.sweep_config(self.model, grid, sampling, names)

    def run(self, job: int, spec: tuple, rows: list, batch_size: int) -> list[dict]:
        grid, sampling, metrics = spec
        if job not in self.vectors:  # keep one sweep's vectors, not every sweep's
            self.vectors = {job: {}}
        out = []
        for i in range(0, len(rows), batch_size):
            out += engine.run_rows(self.model, grid, rows[i:i + batch_size], sampling=sampling, metrics=metrics,
                                   vector_cache=self.vectors[job])
        return out


@dataclass
class _Slot:
    handle: object
    ready: object  # the ObjectRef of its ready() call
    where: str = "starting"
    alive: bool = False


@dataclass
class RayWorkers:
    """Ray actors that each load ``model`` once; pass the pool to ``actlens.sweep(..., backend="ray")``.

    ``actlens.sweep`` starts (and closes) a pool by itself; start one yourself to keep the workers
    and their models across several sweeps (the pool is a context manager). ``workers`` defaults
    to one per GPU, else one per free CPU (at most 8). ``threads`` is torch threads per CPU worker
    (default: the free CPUs shared evenly); ``shard_size`` is rows per shard (default:
    ``batch_size``, or fewer so that every worker gets a shard); ``restarts`` how many more dead
    workers may be replaced (default: ``workers``; counts down). A name or path is loaded on the
    worker's GPU when it has one; a factory places the model itself (``device="cuda"``).
    Bad input raises before Ray starts:

    >>> from actlens.models.tiny import tiny_model
    >>> RayWorkers(tiny_model())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: backend='ray' loads the model in every worker, so pass what to load, not a loaded model ...
    >>> RayWorkers("smollm2-135m", workers=0)
    Traceback (most recent call last):
    ValueError: workers must be a positive int, got int 0; pass e.g. 8
    """

    model: Source
    workers: int | None = None
    address: str | None = None
    threads: int | None = None
    shard_size: int | None = None
    restarts: int | None = None
    connect_timeout: float = 30.0
    startup_timeout: float = 900.0
    startup_s: float = field(init=False, default=0.0)  # from asking for the actors until every model was loaded

    def __post_init__(self) -> None:
        _check_source(self.model)
        for name in ("workers", "threads", "shard_size"):
            if getattr(self, name) is not None:
                _validation.positive_int(name, getattr(self, name))
        if self.restarts is not None and (isinstance(self.restarts, bool) or not isinstance(self.restarts, int)
                                          or self.restarts < 0):
            raise ValueError(f"restarts must be an int >= 0, got {self.restarts!r}")
        self._ray = connect(self.address, timeout=self.connect_timeout)
        self.workers, resources, self.threads = _plan(self._ray, self.workers, self.threads)
        self._actor = self._ray.remote(**resources, max_restarts=0)(_Actor)
        self._gpu = bool(resources["num_gpus"])
        self.restarts = self.workers if self.restarts is None else self.restarts
        self._job = 0
        started = time.perf_counter()
        self._slots = [self._spawn() for _ in range(self.workers)]
        try:
            self._await_ready()
        except BaseException:
            self.close()
            raise
        self.startup_s = time.perf_counter() - started

    def resize(self, workers: int) -> None:
        """Stop or start workers until ``workers`` are alive (new ones load the model before this returns)."""
        _validation.positive_int("workers", workers)
        self._await_ready()
        live = self._live()
        for slot in live[workers:]:
            self._ray.kill(slot.handle)
            self._slots.remove(slot)
        self._slots += [self._spawn() for _ in range(workers - len(live))]
        self._await_ready()
        self.workers = workers

    @classmethod
    def of(cls, model: "Source | RayWorkers", workers: int | None) -> "RayWorkers":
        """``model`` itself if it is a pool, else a new pool of ``workers`` that load ``model``."""
        if isinstance(model, cls):
            if workers is not None and workers != model.workers:
                raise ValueError(f"workers={workers} but the RayWorkers pool passed as model has {model.workers}")
            return model
        if workers is not None:
            _validation.positive_int("workers", workers)
        _check_source(model)
        return cls(model, workers)

    # --- start-up ---
    def _spawn(self) -> _Slot:
        handle = self._actor.remote(self.model, self.threads, self._gpu)
        return _Slot(handle, handle.ready.remote())

    def _await_ready(self) -> None:
        pending = {s.ready: s for s in self._slots if not s.alive and s.ready is not None}
        deadline = time.monotonic() + self.startup_timeout
        while pending:
            done, _ = self._ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:
                raise TimeoutError(f"{len(pending)} of {self.workers} Ray workers did not load the model within "
                                   f"{self.startup_timeout:g} s (cluster resources: "
                                   f"{self._ray.cluster_resources()}); pass fewer workers or a larger startup_timeout")
            self._started(pending.pop(done[0]))

    def _started(self, slot: _Slot) -> None:
        """Mark ``slot`` alive, or raise its load error (once: every other worker is stopped with it)."""
        try:
            error, slot.where = self._ray.get(slot.ready)
        except self._ray.exceptions.RayActorError as err:
            error = f"the worker process died while loading the model ({err})"
        if error is not None:
            raise RuntimeError(f"a Ray worker ({slot.where}) could not load the model {self.model!r}: {error}")
        slot.alive = True

    # --- the runner protocol of actlens.experiments.sweeps ---
    def config(self, grid: Grid, sampling: Sampling, names: Sequence[str]) -> dict:
        """The sweep configuration every worker computes from its model; they must agree."""
        self._await_ready()  # replacements still loading
        live = self._live()
        if not live:
            raise RuntimeError("this RayWorkers pool has no workers (closed?); start a new one")
        configs = self._get([s.handle.config.remote(grid, sampling, list(names)) for s in live])
        for slot, config in zip(live, configs, strict=True):
            if config != configs[0]:
                what = "; ".join(differences(configs[0], config))
                raise RuntimeError(f"Ray workers {live[0].where} and {slot.where} loaded different models ({what}); "
                                   "a factory must build the same weights every time (seed random initialisation)")
        return configs[0]

    def run(self, grid: Grid, todo: list, *, sampling: Sampling, metrics: Mapping,
            batch_size: int) -> Iterator[tuple[list, list[dict]]]:
        """Yield (a shard's rows, their records) as shards return; dead workers' shards are resent."""
        if not todo:
            return
        live = max(1, len(self._live()))  # config() made sure there is one
        size = self.shard_size or max(1, min(batch_size, math.ceil(len(todo) / live)))
        shards = deque(todo[i:i + size] for i in range(0, len(todo), size))
        self._job += 1
        spec = self._ray.put((grid, sampling, dict(metrics)))
        inflight: dict = {}  # ObjectRef -> (slot, shard)
        try:
            while shards or inflight:
                self._submit(shards, inflight, spec, batch_size)
                starting = {s.ready: s for s in self._slots if not s.alive and s.ready is not None}
                if not inflight and not starting:
                    raise RuntimeError("every Ray worker died and the restart budget is spent; the finished rows "
                                       "are in the store (out=): run the sweep again to resume")
                done, _ = self._ray.wait([*inflight, *starting], num_returns=1)
                if done[0] in starting:
                    self._started(starting[done[0]])
                    continue
                slot, shard = inflight.pop(done[0])
                try:
                    records = self._ray.get(done[0])
                except self._ray.exceptions.RayActorError:
                    self._lost(slot, shards, inflight)
                    shards.appendleft(shard)
                    continue
                except self._ray.exceptions.RayTaskError as err:
                    raise _cause(err) from err
                yield shard, records
        finally:
            for ref in inflight:
                try:
                    self._ray.cancel(ref)
                except Exception:  # best effort: the pool may be closing anyway
                    pass

    def _submit(self, shards: deque, inflight: dict, spec, batch_size: int) -> None:
        load = {id(s): 0 for s in self._live()}
        for slot, _ in inflight.values():
            load[id(slot)] += 1
        while shards and load and min(load.values()) < IN_FLIGHT:
            slot = next(s for s in self._live() if load[id(s)] == min(load.values()))
            shard = shards.popleft()
            inflight[slot.handle.run.remote(self._job, spec, shard, batch_size)] = (slot, shard)
            load[id(slot)] += 1

    def _lost(self, slot: _Slot, shards: deque, inflight: dict) -> None:
        """A worker died: resend its queued shards, start a replacement while the budget lasts."""
        self._slots.remove(slot)
        for ref, (owner, shard) in list(inflight.items()):
            if owner is slot:
                del inflight[ref]
                shards.appendleft(shard)
        if self.restarts > 0:
            self.restarts -= 1
            self._slots.append(self._spawn())

    def _live(self) -> list[_Slot]:
        return [s for s in self._slots if s.alive]

    def _get(self, refs: list):
        try:
            return self._ray.get(refs)
        except self._ray.exceptions.RayTaskError as err:
            raise _cause(err) from err

    def close(self) -> None:
        """Stop every worker (the Ray instance stays up for other pools)."""
        for slot in getattr(self, "_slots", []):
            try:
                self._ray.kill(slot.handle)
            except Exception:  # already dead
                pass
            slot.alive = False
        self._slots = []

    def __enter__(self) -> "RayWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cause(err: Exception) -> Exception:
    """The user's exception inside a Ray task error (a bad layer, a bad vector spec), so it reads as locally."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, Exception) else err


def _plan(ray, workers: int | None, threads: int | None) -> tuple[int, dict, int]:
    """(workers, actor resources, torch threads): one GPU per worker, else CPUs shared evenly."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    gpus = sum(int(r.get("GPU", 0)) for r in nodes)
    if gpus:
        workers = workers or gpus
        if workers > gpus:
            raise ValueError(f"workers={workers}, but the Ray cluster has {gpus} GPU(s) and each worker takes one; "
                             f"pass workers <= {gpus}")
        return workers, dict(num_gpus=1, num_cpus=1), threads or 1
    cpus = [int(r.get("CPU", 0)) for r in nodes]
    free = int(ray.available_resources().get("CPU", 0))  # not what other pools or jobs hold
    workers = workers or max(1, min(free, 8))
    if threads is None:
        threads = max(1, free // workers)
        while threads > 1 and sum(c // threads for c in cpus) < workers:
            threads -= 1
    if sum(c // threads for c in cpus) < workers:
        raise ValueError(f"{workers} Ray workers with {threads} CPU(s) each do not fit the cluster's CPUs per node "
                         f"({cpus}); pass fewer workers or threads, or start Ray with more CPUs "
                         "(ray start --num-cpus N)")
    return workers, dict(num_gpus=0, num_cpus=threads), threads


__all__ = ["INSTALL", "RayWorkers", "connect", "import_ray"]
