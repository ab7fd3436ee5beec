"""``actlens bench --profile ROWS``: one more call of each named row under ``torch.profiler``, summarised.

A timing says *that* a row is slow; a profile says where its time goes. For each profiled row the report
keeps the busiest kernels by their own device time (CPU operators on a machine without one), how many
calls made the host wait for the device (``cudaStreamSynchronize``, ``cudaDeviceSynchronize``, blocking
``cudaMemcpy``), and how many kernels were launched. GPU runs are rare and short (``.ci/gpu``), so the
profile travels in ``bench.json`` under ``"profiles"`` instead of as a trace file to open elsewhere.

>>> import torch
>>> out = profile_call(lambda: torch.ones(64, 64) @ torch.ones(64, 64), torch.device("cpu"), top=3)
>>> out["device"], len(out["top"]) <= 3, out["top"][0]["calls"] >= 1
('cpu', True, True)
"""

from collections.abc import Callable

import torch

from actlens.bench import timing

SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cudaLaunchKernelExC")


def profile_call(call: Callable[[], object], device: torch.device, *, top: int = 20) -> dict:
    """Profile one call of ``call`` (already warmed up) on ``device``; a JSON-ready summary."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        call()
        timing.synchronize(device)
    events = prof.key_averages()

    def own(event) -> float:  # microseconds of the event's own work, on the device where there is one
        return float(event.self_device_time_total if cuda else event.self_cpu_time_total)

    kernels = [e for e in events if (own(e) > 0 and (not cuda or e.device_type.name == "CUDA"))]
    total = sum(own(e) for e in kernels)
    busiest = sorted(kernels, key=own, reverse=True)[:top]
    return {
        "device": device.type,
        "time_kind": "self device time of kernels" if cuda else "self CPU time of operators",
        "total_ms": round(total / 1e3, 3),
        "top": [{"name": e.key[:200], "calls": int(e.count), "ms": round(own(e) / 1e3, 3),
                 "share": round(own(e) / total, 4) if total else 0.0} for e in busiest],
        "host_waits": {name: int(e.count) for e in events for name in SYNCS if e.key == name},
        "kernel_launches": sum(int(e.count) for e in events if e.key in LAUNCHES),
    }


__all__ = ["profile_call"]
