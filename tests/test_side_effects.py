"""Importing actlens changes nothing outside it; loading never touches the network; the fast tree stays shared."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

from actlens.models import tl_compat
from actlens.models.model import forward, state
from actlens.models.tiny import tiny_hf, tiny_model

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def test_import_changes_no_environment_and_loading_never_touches_the_network(tmp_path):
    hf, tok = tiny_hf("llama")
    hf.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    code = textwrap.dedent(f"""
        import os, socket
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args)
            raise OSError("the network is off in this test")
        socket.socket.connect = socket.socket.connect_ex = socket.create_connection = refuse
        import torch._dynamo, transformers, transformer_lens  # torch._dynamo sets TORCHINDUCTOR_CACHE_DIR itself
        before = dict(os.environ)
        import actlens
        from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
        changed = sorted(set(before.items()) ^ set(os.environ.items()))
        assert not changed, f"importing actlens changed the environment: {{changed}}"
        assert AttentionBridge._update_kv_cache.__module__.startswith("transformer_lens"), "class patched at import"
        model = actlens.load_model({str(tmp_path / "tiny")!r})
        assert model.cfg.n_layers == 4
        try:
            actlens.load_model("actlens-tests/not-on-this-disk")
        except ValueError as err:
            assert "never downloads" in str(err), err
        else:
            raise AssertionError("a hub name that is not on disk loaded")
        assert dict(os.environ) == before, "loading changed the environment"
        print("network attempts:", len(attempts))
    """)
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARS}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty hub cache: nothing to find locally
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "network attempts: 0" in done.stdout


def test_kv_fix_is_per_bridge_and_never_on_the_class():
    model = tiny_model("llama")
    assert AttentionBridge._update_kv_cache.__module__.startswith("transformer_lens")
    attention = [m for m in model.modules() if isinstance(m, AttentionBridge)]
    assert attention and all("_update_kv_cache" in vars(m) for m in attention) == tl_compat.kv_shim_needed()


@pytest.fixture
def fresh_self_test():
    tl_compat.kv_shim_needed.cache_clear()
    yield
    tl_compat.kv_shim_needed.cache_clear()


def test_no_kv_fix_when_transformer_lens_reads_cache_itself(monkeypatch, fresh_self_test):
    original = AttentionBridge._update_kv_cache

    def upstream_fixed(self, k, v, **kwargs):
        kwargs.setdefault("past_key_values", kwargs.get("cache"))
        return original(self, k, v, **kwargs)

    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", upstream_fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tl_compat.kv_shim_needed() is False
        assert tl_compat.apply_kv_shim(tiny_model("gpt2")) == 0


def test_kv_fix_that_does_not_help_is_a_warning_not_a_patch(monkeypatch, fresh_self_test):
    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", lambda self, k, v, **kwargs: (k, v))
    with pytest.warns(RuntimeWarning, match="ignores the KV cache.*not enough"):
        assert tl_compat.kv_shim_needed() is False


def test_kv_fix_only_on_the_verified_series(monkeypatch, fresh_self_test):
    monkeypatch.setattr(tl_compat.importlib.metadata, "version", lambda dist: "5.0.0")
    with pytest.warns(RuntimeWarning, match="not verified on this version"):
        assert tl_compat.kv_shim_needed() is False


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_moving_the_model_keeps_one_shared_set_of_tensors(arch):
    model = tiny_model(arch)  # a private copy: this test moves it
    tokens = torch.tensor([[0, 40, 41, 42, 43]])
    model.to(torch.float64)
    logits = forward(model, tokens)  # the fast tree
    fast = state(model).fast
    bridge_tensors = {id(t) for t in (*model.parameters(), *model.buffers())}
    assert all(id(t) in bridge_tensors for t in (*fast.parameters(), *fast.buffers()))
    assert logits.dtype == torch.float64
    torch.testing.assert_close(logits, model(tokens), atol=1e-6, rtol=0)  # and the bridge path agrees


def test_tensor_shapes_are_checked_while_the_tests_run():
    """pyproject's --jaxtyping-packages instruments actlens: a shape that contradicts an annotation fails at the
    call, not somewhere inside it."""
    import jaxtyping

    from actlens.analysis.kl import kl_divergence

    with pytest.raises(jaxtyping.TypeCheckError, match="d_vocab"):
        kl_divergence(torch.zeros(2, 5), torch.zeros(2, 6))
