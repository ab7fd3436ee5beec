"""A TransformerLens 4.3 bug, fixed narrowly on each bridge actlens builds or adopts.

transformers 5.2x hands attention modules the KV cache as ``cache=``; TransformerLens 4.3's
``AttentionBridge._update_kv_cache`` reads only ``past_key_values`` (or ``layer_past``), so on
the bridge path the cache stays empty and cached decoding attends to the newest token only.
The fix forwards that one argument. It is set on each attention module of a bridge (an
instance attribute: TransformerLens's class is never patched, and importing actlens changes
nothing), only on the TransformerLens series it was verified on, and only when a self-test
of the installed version shows the bug and shows the fix working. Otherwise nothing is
patched, with one warning when the bug is there but the fix is not applied.
Guarded end to end by tests/steering/test_generation.py::test_bridge_generate_cached_equals_uncached.
"""

import functools
import importlib.metadata
import types
import warnings
from collections.abc import Callable

import torch
from torch import nn
from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

VERIFIED_SERIES = "4."  # pyproject pins transformer-lens>=4.3,<5; re-test before widening


class _RecordingCache:
    """Stands in for a transformers ``Cache``: counts ``update`` calls."""

    def __init__(self) -> None:
        self.updates = 0

    def update(self, k, v, layer_idx, *args, **kwargs):
        self.updates += 1
        return k, v


def _forward_cache(original: Callable) -> Callable:
    def _update_kv_cache(*args, **kwargs):
        if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
            kwargs["past_key_values"] = kwargs["cache"]
        return original(*args, **kwargs)

    return _update_kv_cache


def _uses_cache_argument(update: Callable) -> bool:
    """Whether ``update`` (an unbound ``_update_kv_cache``) writes into a cache passed as ``cache=``."""
    probe = types.SimpleNamespace(_layer_idx=0, name="actlens-self-test")
    cache = _RecordingCache()
    k = v = torch.zeros(1, 1, 1, 1)
    update(probe, k, v, cache=cache)
    return cache.updates == 1


@functools.cache
def kv_shim_needed() -> bool:
    """True when the installed TransformerLens has the bug and the fix is verified to work on it."""
    version = importlib.metadata.version("transformer-lens")
    original = AttentionBridge._update_kv_cache
    try:
        if _uses_cache_argument(original):
            return False  # fixed upstream: nothing to do
        fixed = _uses_cache_argument(_forward_cache(original))
    except Exception as err:  # the private method changed shape: do not guess
        warnings.warn(f"actlens cannot self-test TransformerLens {version}'s KV-cache handling "
                      f"({type(err).__name__}: {err}); no fix applied. If cached generation on the bridge path "
                      "ignores the prompt, install transformer-lens==4.3.0", RuntimeWarning, stacklevel=2)
        return False
    if not fixed or not version.startswith(VERIFIED_SERIES):
        warnings.warn(f"TransformerLens {version} ignores the KV cache transformers passes as `cache=`, and "
                      f"actlens's fix is {'not verified on this version' if fixed else 'not enough here'}; no fix "
                      "applied, so cached generation on the bridge path (compatibility mode, native models) may "
                      "ignore the prompt. Install transformer-lens==4.3.0", RuntimeWarning, stacklevel=2)
        return False
    return True


def apply_kv_shim(bridge: nn.Module) -> int:
    """Give every attention module of ``bridge`` the fix, when :func:`kv_shim_needed`; returns how many got it."""
    if not kv_shim_needed():
        return 0
    patched = 0
    for module in bridge.modules():
        if isinstance(module, AttentionBridge) and "_update_kv_cache" not in vars(module):
            module._update_kv_cache = _forward_cache(module._update_kv_cache)
            patched += 1
    return patched
