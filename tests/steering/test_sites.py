"""Vectors read and added at any residual site (resid_pre, resid_mid, resid_post, attn_out, mlp_out).

Identities that the architectures make exact (up to float rounding: the sum is taken in another order):
adding at resid_post L = at resid_pre L+1 = at mlp_out L; adding at attn_out L = at resid_mid L; a vector
read at resid_post L is the one read at resid_pre L+1. Each holds on the fast tree (``actlens.forward``) and
on the bridge (``model(tokens)``), and the fast tree matches a raw Hugging Face model with hand-written hooks.
"""

import copy
import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

import actlens
from actlens.analysis.ablation import ablate_downstream
from actlens.core import prompts
from actlens.models.activations import activations, resid_pre
from actlens.models.model import check_site, hook_name, state, write_hook_name
from actlens.models.tiny import tiny_hf
from actlens.steering.intervene import steer

ATOL = 1e-5
LAYER, COEFF = 1, 4.0
TEXT = "Hello there, my good friend"


@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma3"])
def pair(request):
    hf, tok = tiny_hf(request.param, seed=1)
    raw = copy.deepcopy(hf)  # wrapping rewires `hf` in place
    return request.param, raw, actlens.load_model(hf, tokenizer=tok)


def _at(vector, layer, site):
    return replace(vector, layer=layer, site=site)


def _both_paths(model, vector, tokens):
    """Steered logits on the fast tree and on the bridge."""
    with torch.no_grad(), steer(model, vector, COEFF):
        return actlens.forward(model, tokens), model(tokens)


@pytest.fixture(scope="module")
def base(pair):
    model = pair[2]
    return actlens.actadd_vector(model, "Love", "Hate", LAYER), torch.tensor([prompts.encode(model, TEXT)])


def test_every_site_is_on_the_fast_tree(pair):
    assert state(pair[2]).fast_sites == {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z"}


def test_addition_identities_on_both_paths(pair, base):
    _, _, model = pair
    v, tokens = base
    with torch.no_grad():
        plain = actlens.forward(model, tokens)
    runs = {(site, layer): _both_paths(model, _at(v, layer, site), tokens)
            for site, layer in [("resid_post", LAYER), ("resid_pre", LAYER + 1), ("mlp_out", LAYER),
                                ("attn_out", LAYER), ("resid_mid", LAYER)]}
    for fast, bridge in runs.values():
        torch.testing.assert_close(fast, bridge, atol=ATOL, rtol=0)
        assert (fast - plain).abs().max() > 1e-3  # each really steers
    for path in (0, 1):
        post = runs["resid_post", LAYER][path]
        torch.testing.assert_close(post, runs["resid_pre", LAYER + 1][path], atol=ATOL, rtol=0)
        torch.testing.assert_close(post, runs["mlp_out", LAYER][path], atol=ATOL, rtol=0)
        torch.testing.assert_close(runs["attn_out", LAYER][path], runs["resid_mid", LAYER][path], atol=ATOL, rtol=0)
    # resid_mid is not resid_pre or resid_post: the MLP of the layer reads it, the attention does not
    assert (runs["resid_mid", LAYER][0] - runs["resid_post", LAYER][0]).abs().max() > 1e-3


def test_read_identities(pair, base):
    _, _, model = pair
    tokens = base[1]
    acts = {site: activations(model, tokens, [LAYER], site=site)[LAYER]
            for site in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")}
    assert torch.equal(acts["resid_post"], resid_pre(model, tokens, [LAYER + 1])[LAYER + 1])
    torch.testing.assert_close(acts["resid_mid"], acts["resid_pre"] + acts["attn_out"], atol=ATOL, rtol=0)
    torch.testing.assert_close(acts["resid_post"], acts["resid_mid"] + acts["mlp_out"], atol=ATOL, rtol=0)
    bridge = {}
    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name(LAYER, s), (lambda s: lambda r, hook: bridge.__setitem__(
            s, r.clone()))(s)) for s in acts]):
        model(tokens)
    for site, value in acts.items():
        torch.testing.assert_close(value, bridge[site], atol=ATOL, rtol=0)
    plus = actlens.actadd_vector(model, "Love", "Hate", LAYER, site="resid_post")
    assert plus.hook_name == f"blocks.{LAYER}.hook_resid_post"
    assert torch.equal(plus.values, actlens.actadd_vector(model, "Love", "Hate", LAYER + 1).values)
    pairs = [("I love it", "I hate it"), ("Great", "Awful")]
    assert torch.equal(actlens.mean_diff_vector(model, pairs, LAYER, site="resid_post").values,
                       actlens.mean_diff_vector(model, pairs, LAYER + 1).values)


def _raw_module(raw, arch, layer, site):
    block = raw.transformer.h[layer] if arch == "gpt2" else raw.model.layers[layer]
    if site == "resid_post":
        return block
    if arch == "gemma3":  # Gemma 3's branch outputs are its post-norms' outputs
        return block.post_attention_layernorm if site == "attn_out" else block.post_feedforward_layernorm
    if site == "attn_out":
        return block.attn if arch == "gpt2" else block.self_attn
    return block.mlp


@pytest.mark.parametrize("site", ["attn_out", "mlp_out", "resid_post"])
def test_fast_tree_matches_raw_hf_forward_hooks(pair, base, site):
    arch, raw, model = pair
    v, tokens = base
    delta = v.values * COEFF
    k = delta.shape[0]

    def add(module, args, output):
        first = output if isinstance(output, torch.Tensor) else output[0]
        first = first.clone()
        first[:, :k] += delta
        return first if isinstance(output, torch.Tensor) else (first, *output[1:])

    handle = _raw_module(raw, arch, LAYER, site).register_forward_hook(add)
    try:
        with torch.no_grad():
            reference = raw(tokens).logits
    finally:
        handle.remove()
    fast, bridge = _both_paths(model, _at(v, LAYER, site), tokens)
    torch.testing.assert_close(fast, reference, atol=ATOL, rtol=0)


def test_gemma_inside_the_branch_is_not_attn_out():
    """Gemma 3 normalises each branch's output (post-norms): adding before that norm is not adding at attn_out."""
    model = actlens.load_model(*tiny_hf("gemma3", seed=1)[:1], tokenizer=tiny_hf("gemma3", seed=1)[1])
    v = actlens.actadd_vector(model, "Love", "Hate", LAYER)
    tokens = torch.tensor([prompts.encode(model, TEXT)])
    delta = v.values * COEFF

    def add(r, hook):
        return r + torch.nn.functional.pad(delta, (0, 0, 0, r.shape[1] - delta.shape[0]))

    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.{LAYER}.attn.hook_out", add)]):
        inside = model(tokens)
    assert (inside - _both_paths(model, _at(v, LAYER, "attn_out"), tokens)[1]).abs().max() > 1e-3


def test_steering_at_a_site_uses_its_hook_point(pair, base):
    model = pair[2]
    v = _at(base[0], LAYER, "mlp_out")
    with steer(model, v, COEFF):
        assert model.hook_dict[hook_name(LAYER, "mlp_out")].has_hooks()
        assert not model.hook_dict[hook_name(LAYER)].has_hooks()
    assert write_hook_name(LAYER, "resid_mid") == hook_name(LAYER, "attn_out")
    assert actlens.models.model.hooks_registered(model) == 0


# --- files ----------------------------------------------------------------------------------
def test_site_round_trips_and_resid_pre_files_are_unchanged(tmp_path, pair, base):
    model = pair[2]
    v = base[0]
    path = v.save(tmp_path / "pre.safetensors")
    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["actlens"])
    assert "site" not in meta and meta["hook_name"] == hook_name(LAYER)  # as written before sites existed
    assert actlens.SteeringVector.load(path).site == "resid_pre"
    m = actlens.actadd_vector(model, "Love", "Hate", LAYER, site="mlp_out")
    back = actlens.SteeringVector.load(m.save(tmp_path / "mlp.safetensors"))
    assert back == m and back.site == "mlp_out" and back.hook_name == f"blocks.{LAYER}.hook_mlp_out"


def _rewrite(path, out, **changes):
    from safetensors.torch import load_file, save_file

    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["actlens"])
    meta.update(changes)
    save_file(load_file(path), out, metadata={"actlens": json.dumps(meta)})
    return out


@pytest.mark.unchecked
def test_inconsistent_site_in_a_file_is_an_error(tmp_path, pair):
    model = pair[2]
    path = actlens.actadd_vector(model, "Love", "Hate", LAYER, site="mlp_out").save(tmp_path / "v.safetensors")
    with pytest.raises(ValueError, match="hook_name.*inconsistent"):
        actlens.SteeringVector.load(_rewrite(path, tmp_path / "a.safetensors", site="attn_out"))
    with pytest.raises(ValueError, match="site"):
        actlens.SteeringVector.load(_rewrite(path, tmp_path / "b.safetensors", site="resid_middle"))


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.unchecked
def test_unknown_site_suggests_the_closest(pair):
    model = pair[2]
    with pytest.raises(ValueError, match="did you mean 'resid_post'"):
        actlens.actadd_vector(model, "Love", "Hate", LAYER, site="resid_pst")
    with pytest.raises(ValueError, match="did you mean 'mlp_out'"):
        hook_name(LAYER, "mlp_outt")


@pytest.mark.unchecked
def test_site_the_model_lacks(pair, monkeypatch):
    model = pair[2]
    full = type(model).hook_dict
    monkeypatch.setattr(type(model), "hook_dict", property(
        lambda self: {k: v for k, v in full.fget(self).items() if "resid_mid" not in k}))
    with pytest.raises(ValueError, match="architecture has no hook point 'blocks.0.hook_resid_mid'"):
        check_site(model, "resid_mid")
    monkeypatch.undo()
    monkeypatch.setattr(state(model), "fast_sites", {"resid_pre"})
    with pytest.raises(ValueError, match="fast tree"):
        actlens.actadd_vector(model, "Love", "Hate", LAYER, site="mlp_out")


def test_vector_from_another_site_where_resid_pre_is_expected(pair, base):
    model = pair[2]
    v = _at(base[0], LAYER, "mlp_out")
    with pytest.raises(ValueError, match="works on vectors at 'resid_pre'.*'mlp_out'"):
        actlens.propagation(model, v, COEFF, [TEXT])
    with pytest.raises(ValueError, match="'resid_pre'.*'mlp_out'"):
        ablate_downstream(model, v, COEFF, [TEXT])
    with pytest.raises(ValueError, match="llama.cpp"):
        v.to_gguf("never-written.gguf")
