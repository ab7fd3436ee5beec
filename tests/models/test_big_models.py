"""Models placed by Accelerate (``device_map``): the weight-sharing fast tree and steering still work.

A real multi-GPU split needs GPUs; on CPU, ``accelerate.dispatch_model(..., force_hooks=True)``
with two groups of "cpu" modules installs the same ``_hf_hook`` machinery on every module,
which is what ``copy.deepcopy`` in :func:`actlens.models.model.wrap_hf` has to survive.
"""

import pytest
import torch

from actlens.models.model import forward, load_model, state
from actlens.models.tiny import tiny_hf
from actlens.steering.intervene import steer
from actlens.vectors import actadd_vector

TOKENS = torch.tensor([[0, 40, 41, 42, 43, 44, 45]])


def two_group_map(arch: str, n_layers: int = 4) -> dict[str, str]:
    """Two device groups (both "cpu"): embeddings + first half, second half + head."""
    if arch == "llama":
        head = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu"}
        layers = {f"model.layers.{i}": "cpu" for i in range(n_layers)}
        tail = {"model.norm": "cpu", "lm_head": "cpu"}
    else:
        head = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu"}
        layers = {f"transformer.h.{i}": "cpu" for i in range(n_layers)}
        tail = {"transformer.ln_f": "cpu", "lm_head": "cpu"}
    return head | layers | tail


def dispatched(arch: str):
    from accelerate import dispatch_model

    hf, tok = tiny_hf(arch)
    return dispatch_model(hf, device_map=two_group_map(arch), force_hooks=True), tok


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fast_tree_of_a_dispatched_model_shares_weights_and_steers_identically(tiny_models, arch):
    reference = tiny_models[arch]  # the same seeded weights, never dispatched
    hf, tok = dispatched(arch)
    assert getattr(hf, "_hf_hook", None) is not None
    model = load_model(hf, tokenizer=tok)
    fast = state(model).fast
    # the deep copy keeps Accelerate's hooks, rebound to the copied modules ...
    hooked = [m for m in fast.modules() if getattr(m, "_hf_hook", None) is not None]
    assert hooked and all(m.forward.args[0] is m for m in hooked)
    # ... and shares every parameter and buffer with the bridge (no second copy of the weights)
    bridge_ptrs = {t.data_ptr() for t in (*model.parameters(), *model.buffers())}
    assert {p.data_ptr() for p in fast.parameters()} <= bridge_ptrs
    v = actadd_vector(reference, "Love", "Hate", layer=2)
    with torch.no_grad():
        for run in (forward, lambda m, t: m(t)):  # fast tree, then the bridge's own forward
            torch.testing.assert_close(run(model, TOKENS), run(reference, TOKENS), atol=1e-5, rtol=1e-5)
            with steer(reference, v, 4.0):
                expected = run(reference, TOKENS)
            with steer(model, v, 4.0):
                got = run(model, TOKENS)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
            assert not torch.allclose(expected, run(reference, TOKENS), atol=1e-3)


def test_dispatched_model_is_not_moved_or_cast():
    hf, tok = dispatched("llama")
    with pytest.raises(ValueError, match="dispatched by Accelerate"):
        load_model(hf, tokenizer=tok, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="dispatched by Accelerate"):
        load_model(hf, tokenizer=tok, device="cpu")


@pytest.mark.parametrize(
    ("device_map", "max_memory"),
    [(two_group_map("llama"), None), ("auto", {"cpu": "1GiB"})],
)
def test_load_model_passes_device_map_to_from_pretrained(tiny_models, tmp_path, monkeypatch, device_map, max_memory):
    from transformers import AutoModelForCausalLM

    hf, tok = tiny_hf("llama")
    hf.save_pretrained(tmp_path)
    seen: list[dict] = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model = load_model(tmp_path, tokenizer=tok, device_map=device_map, max_memory=max_memory, dtype=torch.float32)
    assert [(k["device_map"], k["max_memory"], k["dtype"]) for k in seen] == [(device_map, max_memory, torch.float32)]
    v = actadd_vector(model, "Love", "Hate", layer=2)
    with torch.no_grad(), steer(model, v, 4.0):
        got = forward(model, TOKENS)
    with torch.no_grad(), steer(tiny_models["llama"], v, 4.0):
        expected = forward(tiny_models["llama"], TOKENS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_device_map_argument_errors(tmp_path):
    hf, tok = tiny_hf("llama")
    with pytest.raises(ValueError, match="not both"):
        load_model(tmp_path, device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="only applies with a device_map"):
        load_model(tmp_path, max_memory={"cpu": "1GiB"})
    with pytest.raises(ValueError, match="accelerate.dispatch_model"):
        load_model(hf, tokenizer=tok, device_map="auto")
