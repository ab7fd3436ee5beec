"""Timing and memory for ``actlens bench``: interleaved repeats, robust summaries.

Every timed call runs under ``torch.inference_mode()`` with the garbage collector paused,
between two device synchronisations. Rows are interleaved: each repeat calls every
(case, row) once, in alternating forward and reverse order, so slow drift (thermal,
other processes) hits all rows alike and a paired ratio per repeat cancels it.

Peak memory is measured in a separate, untimed call per row:

* CUDA: ``torch.cuda.max_memory_allocated()`` above what was allocated before the call.
* CPU: resident set size (``/proc/self/statm``) sampled every 0.5 ms by a thread, above the
  value just before the call. glibc keeps freed memory in its heap, which would hide the
  peaks of later rows, so for this pass we fix glibc's mmap threshold at 128 KiB (large
  tensors then come from ``mmap`` and go back to the OS when freed) and call
  ``malloc_trim(0)`` before each call. Python's ``tracemalloc`` does not see torch
  tensors and ``ru_maxrss`` only ever grows, which is why neither is used.
"""

import ctypes
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch

Thunk = Callable[[], object]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(thunk: Thunk, device: torch.device) -> float:
    """Seconds for one call of ``thunk`` (inference mode, gc paused, device synchronised)."""
    gc.disable()
    try:
        with torch.inference_mode():
            synchronize(device)
            start = time.perf_counter()
            thunk()
            synchronize(device)
            return time.perf_counter() - start
    finally:
        gc.enable()


def serpentine(items: list, repeat: int) -> list:
    """Forward order on even repeats, reversed on odd ones (cancels linear drift).

    >>> serpentine([1, 2, 3], 0), serpentine([1, 2, 3], 1)
    ([1, 2, 3], [3, 2, 1])
    """
    return list(items) if repeat % 2 == 0 else list(reversed(items))


def run_interleaved(thunks: dict, device: torch.device, *, warmup: int, repeats: int,
                    progress: Callable[[str], None] | None = None) -> dict[object, list[float]]:
    """Seconds per repeat for each key of ``thunks`` (warm-up calls untimed).

    The model's objects are frozen out of the garbage collector's view (``gc.freeze``), so
    the one collection per repeat, outside the timed calls, is cheap.
    """
    keys = list(thunks)
    gc.collect()
    gc.freeze()
    try:
        for w in range(warmup):
            for key in serpentine(keys, w):
                with torch.inference_mode():
                    thunks[key]()
                synchronize(device)
        seconds: dict[object, list[float]] = {key: [] for key in keys}
        for r in range(repeats):
            gc.collect()
            for key in serpentine(keys, r):
                seconds[key].append(time_call(thunks[key], device))
            if progress:
                progress(f"repeat {r + 1}/{repeats} done")
    finally:
        gc.unfreeze()
    return seconds


def summary(seconds: list[float]) -> dict:
    """Median, quartiles and range of a list of timings.

    >>> s = summary([1.0, 2.0, 3.0, 4.0, 5.0])
    >>> s["median_s"], s["q1_s"], s["q3_s"], s["min_s"], s["max_s"]
    (3.0, 2.0, 4.0, 1.0, 5.0)
    """
    if len(seconds) >= 2:
        q1, _, q3 = statistics.quantiles(seconds, n=4, method="inclusive")
    else:
        q1 = q3 = seconds[0]
    return {"median_s": statistics.median(seconds), "q1_s": q1, "q3_s": q3,
            "min_s": min(seconds), "max_s": max(seconds)}


def paired_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-repeat ``numerator[i] / denominator[i]`` (both timed in the same repeat)."""
    return [n / d for n, d in zip(numerator, denominator, strict=True)]


# --- peak memory -------------------------------------------------------------------------
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def _rss_sampler(interval_s: float = 0.0005):
    peak = [_rss_bytes()]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss_bytes())


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated above the allocation before the call"
    if not os.path.exists("/proc/self/statm"):
        return "unavailable (no /proc/self/statm)"
    trim = "with mmap threshold 128 KiB and malloc_trim" if _libc() else "without malloc_trim (not glibc)"
    return f"peak RSS above the RSS before the call, sampled every 0.5 ms, {trim}"


def prepare_memory_pass(device: torch.device) -> None:
    """Make freed CPU tensor memory visible to RSS (see the module docstring); call after timing."""
    libc = _libc()
    if device.type != "cuda" and libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def peak_extra_bytes(thunk: Thunk, device: torch.device) -> int | None:
    """Peak memory above the level before one untimed call of ``thunk`` (None if unmeasurable)."""
    with torch.inference_mode():
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            thunk()
            synchronize(device)
            return int(torch.cuda.max_memory_allocated(device) - before)
        if not os.path.exists("/proc/self/statm"):
            return None
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)
        with _rss_sampler() as peak:
            before = _rss_bytes()
            thunk()
        return max(int(peak[0] - before), 0)


def process_peak_rss_bytes() -> int | None:
    """The process's lifetime peak RSS (``ru_maxrss``; Linux reports KiB)."""
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None
