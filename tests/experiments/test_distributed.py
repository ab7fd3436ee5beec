"""The Ray backend of actlens.sweep on a local Ray instance: the local sweep's rows, faults, bad input.

One Ray instance and one pool of tiny-model workers serve the module. Starting a worker imports
torch and builds the model (5-20 s on a busy 2-core machine), so the tests that start Ray are
marked ``slow``. The factory builds the tiny
model from a config with a fixed seed, so every worker holds the same weights as the local model.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from actlens.experiments.distributed import INSTALL, RayWorkers
from actlens.experiments.sweeps import Grid, Sampling, pair_spec, sweep
from actlens.models.tiny import tiny_model

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module

FACTORY = functools.partial(tiny_model, "llama", seed=0)
GRID = Grid([pair_spec("Love", "Hate")], layers=[1, 2], coeffs=[1.0, 4.0], prompts=["I think you", "The weather"],
            seeds=[0, 1])
N_ROWS = 10 * 2 * 2  # (unsteered, prompting, 2 layers x 2 coeffs x steered/random) x prompts x seeds
SAMPLING = Sampling(max_new_tokens=6)
CHARS = {"chars": len}


@pytest.fixture(scope="module")
def local(tiny_models):
    """The local sweep every Ray sweep must equal: default text metrics, and a ``chars`` metric."""
    model = tiny_models["llama"]
    return (sweep(model, GRID, sampling=SAMPLING, progress=False),
            sweep(model, GRID, sampling=SAMPLING, metrics=CHARS, progress=False))


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="warning")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_instance):
    with RayWorkers(FACTORY, workers=3, threads=1) as workers:
        yield workers


def _stored(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[1:]]


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.completions(), b.completions())


# --- bad input, before any worker starts ----------------------------------------------------------
def test_bad_input_is_refused_before_ray_starts(tiny_models, monkeypatch):
    model = tiny_models["llama"]
    with pytest.raises(TypeError, match="not a loaded model.*functools.partial"):
        sweep(model, GRID, backend="ray", workers=2)
    with pytest.raises(ValueError, match="workers must be a positive int, got int 0"):
        sweep(FACTORY, GRID, backend="ray", workers=0)
    with pytest.raises(TypeError, match="must take no arguments"):
        sweep(lambda arch: tiny_model(arch), GRID, backend="ray")
    with pytest.raises(ValueError, match="mode='separate' is the local speed baseline"):
        sweep(FACTORY, GRID, backend="ray", mode="separate")
    with pytest.raises(ValueError, match="workers=2 applies to backend='ray'"):
        sweep(model, GRID, workers=2)
    with pytest.raises(TypeError, match="backend='local' needs a loaded model"):
        sweep("smollm2-135m", GRID)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=INSTALL.replace("[", r"\[").replace("]", r"\]")):
        sweep(FACTORY, GRID, backend="ray", workers=1)


def test_an_unreachable_address_fails_fast_with_a_clear_error(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(ConnectionError, match=f"cannot reach a Ray cluster at '127.0.0.1:{port}'.*ray start --head"):
        RayWorkers(FACTORY, address=f"127.0.0.1:{port}")
    assert time.perf_counter() - started < 5
    # Unroutable: the handshake times out, or (behind a proxy that accepts any connection) Ray never answers.
    monkeypatch.setenv("RAY_ADDRESS", "10.255.255.1:6379")
    started = time.perf_counter()
    with pytest.raises(ConnectionError, match="cannot reach a Ray cluster at '10.255.255.1:6379'"):
        RayWorkers(FACTORY, connect_timeout=4.0)
    assert time.perf_counter() - started < 15
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(ValueError, match="must be host:port"):
        RayWorkers(FACTORY, address="nonsense")


@pytest.mark.slow
# --- exactness -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("workers", "shard_size"), [(3, None), (2, 3), (1, 7)])
def test_ray_sweep_equals_the_local_sweep(pool, local, tmp_path, workers, shard_size):
    pool.resize(workers)
    pool.shard_size = shard_size
    out = tmp_path / "s.jsonl"
    result = sweep(pool, GRID, sampling=SAMPLING, out=out, batch_size=4, progress=False)
    _same(result, local[0])
    assert result.computed == N_ROWS and result.config == local[0].config
    assert len(_stored(out)) == N_ROWS  # the driver wrote every row once
    again = sweep(pool, GRID, sampling=SAMPLING, out=out, progress=False)  # everything is in the store
    assert again.computed == 0
    _same(again, local[0])


@pytest.mark.slow
def test_rows_in_the_store_are_never_sent_to_workers(pool, local, tmp_path, tiny_models):
    out, calls = tmp_path / "s.jsonl", tmp_path / "calls"
    first = sweep(tiny_models["llama"], GRID, sampling=SAMPLING, metrics=CHARS, out=out, limit=13, progress=False)
    assert first.computed == 13

    def chars(text: str) -> float:  # runs on the workers: one line per row they compute
        with open(calls, "a") as f:
            f.write("row\n")
        return len(text)

    pool.shard_size = 5
    rest = sweep(pool, GRID, sampling=SAMPLING, metrics={"chars": chars}, out=out, progress=False)
    assert rest.computed == N_ROWS - 13 and len(calls.read_text().splitlines()) == N_ROWS - 13
    _same(rest, local[1])
    assert len(_stored(out)) == N_ROWS


@pytest.mark.slow
def test_the_embedded_model_end_to_end(smol, pool, tmp_path):
    grid = Grid([pair_spec("Love", "Hate")], layers=[6], coeffs=[4.0], prompts=["I think you", "Yesterday"],
                seeds=[0, 1], controls=("unsteered", "random"))
    sampling = Sampling(max_new_tokens=10)
    local = sweep(smol, grid, sampling=sampling, progress=False)
    pool.resize(1)  # CPUs for the worker below
    with RayWorkers("smollm2-135m", workers=1, threads=1) as embedded:  # the worker loads it by name
        remote = sweep(embedded, grid, sampling=sampling, out=tmp_path / "s.jsonl", progress=False)
    _same(remote, local)
    assert remote.config == local.config and len(_stored(tmp_path / "s.jsonl")) == 12


# --- faults ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_reports_its_error_once(ray_instance, tmp_path):
    calls = tmp_path / "calls"

    def broken():
        with open(calls, "a") as f:
            f.write("load\n")
        raise FileNotFoundError("no weights at /nowhere")

    with pytest.raises(RuntimeError, match="could not load the model.*FileNotFoundError: no weights at /nowhere") as e:
        RayWorkers(broken, workers=2, threads=1)
    assert str(e.value).count("no weights") == 1
    time.sleep(1)
    assert 1 <= len(calls.read_text().splitlines()) <= 2  # each worker tried once: no retries


@pytest.mark.slow
def test_a_killed_driver_resumes_from_the_store(pool, ray_instance, local, tmp_path):
    out = tmp_path / "s.jsonl"
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import functools, time
        from actlens.experiments.sweeps import Grid, Sampling, pair_spec, sweep
        from actlens.models.tiny import tiny_model

        def chars(text):
            time.sleep(0.3)  # slow enough to be killed mid-run
            return len(text)

        grid = Grid([pair_spec("Love", "Hate")], layers=[1, 2], coeffs=[1.0, 4.0],
                    prompts=["I think you", "The weather"], seeds=[0, 1])
        sweep(functools.partial(tiny_model, "llama", seed=0), grid, sampling=Sampling(max_new_tokens=6),
              metrics={{"chars": chars}}, out={str(out)!r}, batch_size=2, backend="ray", workers=1, progress=False)
    """))
    env = os.environ | {"RAY_ADDRESS": ray_instance}  # the subprocess joins this test's Ray instance
    driver = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if out.exists() and len(out.read_text().splitlines()) > 3:
                break
            time.sleep(0.2)
        assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        driver.kill()
    kept = len(_stored(out))
    assert 2 <= kept < N_ROWS
    resumed = sweep(pool, GRID, sampling=SAMPLING, metrics=CHARS, out=out, progress=False)
    assert resumed.computed == N_ROWS - kept
    _same(resumed, local[1])
    assert len(_stored(out)) == N_ROWS


@pytest.mark.slow
def test_bench_row_and_figures_run_on_ray_workers(pool, tmp_path):
    from actlens.cli import main as cli

    pool.resize(1)  # CPUs for the two workers each command starts
    bench = tmp_path / "bench"
    assert cli(["bench", "--smoke", "--model", "tiny", "--rows", "sweep/ray-2workers", "--threads", "1",
                "--repeats", "1", "--warmup", "1", "--no-png", "--no-memory", "--out", str(bench)]) == 0
    rows = {r["id"]: r for r in json.loads((bench / "bench.json").read_text())["rows"]}
    assert rows["sweep/ray-2workers"]["same_completions_as_baseline"] is True  # checked against one setting at a time
    assert rows["sweep/ray-2workers"]["startup_s"] > 0
    local, remote = tmp_path / "local", tmp_path / "ray"
    for out, extra in ((local, []), (remote, ["--backend", "ray", "--workers", "2"])):
        assert cli(["figures", "--smoke", "--only", "topic_by_layer", "--out", str(out), "--no-progress",
                    *extra]) == 0
    files = sorted(p.name for p in local.glob("*.completions.jsonl"))
    assert files and files == sorted(p.name for p in remote.glob("*.completions.jsonl"))
    for name in files:  # the same lines (rows arrive in another order from shards)
        assert sorted((local / name).read_text().splitlines()) == sorted((remote / name).read_text().splitlines())
    assert (local / "topic_by_layer.csv").read_text() == (remote / "topic_by_layer.csv").read_text()
    assert json.loads((remote / "manifest.json").read_text())["sweep_backend"] == "ray"


@pytest.mark.slow
def test_a_worker_killed_mid_shard_has_its_shard_retried(pool, local, tmp_path):
    pool.resize(2)
    pool.shard_size, restarts = 4, pool.restarts
    out, marker = tmp_path / "s.jsonl", tmp_path / "killed"

    def chars(text: str) -> float:  # the first row computed anywhere kills its worker process
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return len(text)

    result = sweep(pool, GRID, sampling=SAMPLING, metrics={"chars": chars}, out=out, progress=False)
    assert marker.exists()  # a worker did die mid-shard
    _same(result, local[1])
    stored = _stored(out)
    keys = [(r["condition"], r["vector"], r["layer"], r["coeff"], r["prompt"], r["seed"]) for r in stored]
    assert len(keys) == len(set(keys)) == N_ROWS  # nothing lost, nothing written twice
    assert pool.restarts == restarts - 1  # a replacement is starting (last test: nobody waits for it)
    pool.close()
    with pytest.raises(RuntimeError, match="pool has no workers"):
        sweep(pool, GRID, sampling=SAMPLING, progress=False)
