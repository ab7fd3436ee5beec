"""Mediation of a steering effect against a hand-written raw Hugging Face patching loop (no actlens machinery).

The raw loop: a forward pre-hook on decoder layer L adds the vector's values; forward hooks on the attention and
MLP modules cache or replace their outputs; KL / logit differences are computed from full logits in plain torch.
"""

import copy

import pytest
import torch

import actlens
from actlens.analysis.mediation import downstream, mediation
from actlens.core import prompts
from actlens.models.model import hook_name
from actlens.models.tiny import tiny_hf

LAYER, COEFF = 1, 4.0
TEXTS = ["I think that you are", "The weather today is so", "My neighbour is a", "Why is the sky blue"]
ATOL = 1e-5


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request):
    hf, tok = tiny_hf(request.param, seed=2)
    raw = copy.deepcopy(hf)
    model = actlens.load_model(hf, tokenizer=tok)
    v = actlens.actadd_vector(model, "Love", "Hate", LAYER)
    # rows scaled to norm 2 (BOS row stays 0): random-weight GPT-2's residual is small, so the effect is clear
    return request.param, raw, model, v.with_values(v.values / v.norms().clamp(min=1e-9)[:, None] * 2.0)


def _modules(raw, arch, layer):
    block = raw.transformer.h[layer] if arch == "gpt2" else raw.model.layers[layer]
    return {"block": block, "attn": block.attn if arch == "gpt2" else block.self_attn, "mlp": block.mlp}


def _raw_effects(raw, arch, model, vector, metric, target=None):
    """{(component, measure): [per-text effect]} and the per-text total, by a plain loop over components."""
    batch = prompts.encode_batch(model, TEXTS)
    tokens, mask = batch.tokens, batch.attention_mask
    pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    delta = vector.values * COEFF
    k, seq, n_layers = delta.shape[0], tokens.shape[1], len(raw.model.layers if arch == "llama" else raw.transformer.h)
    added = torch.zeros(len(TEXTS), seq, delta.shape[1])
    for row, start in enumerate(batch.starts):
        added[row, start:start + k] = delta
    counted = torch.zeros(len(TEXTS), seq, dtype=torch.bool)
    for row, start in enumerate(batch.starts):
        counted[row, start + k:] = True

    def forward(steered, patches):
        handles = []
        if steered:
            handles.append(_modules(raw, arch, LAYER)["block"].register_forward_pre_hook(
                lambda m, args: (args[0] + added, *args[1:]) if args else None))
        for module, fn in patches:
            handles.append(module.register_forward_hook(fn))
        try:
            with torch.no_grad():
                return raw(input_ids=tokens, attention_mask=mask, position_ids=pos_ids, use_cache=False).logits
        finally:
            for h in handles:
                h.remove()

    def replace_with(value):
        def fn(module, args, output):
            return value if isinstance(output, torch.Tensor) else (value, *output[1:])
        return fn

    def cache(store, key):
        def fn(module, args, output):
            store[key] = (output if isinstance(output, torch.Tensor) else output[0]).clone()
        return fn

    def run_cached(steered):
        store = {}
        patches = [(_modules(raw, arch, j)[kind], cache(store, (kind, j)))
                   for j in range(LAYER, n_layers) for kind in ("attn", "mlp")]
        return forward(steered, patches), store

    clean_logits, clean = run_cached(False)
    steered_logits, steered = run_cached(True)
    clean_logp = torch.log_softmax(clean_logits, -1)

    def effect(logits):
        if metric == "kl":
            logp = torch.log_softmax(logits, -1)
            per = (logp.exp() * (logp - clean_logp)).sum(-1)
        else:
            per = (logits[..., target[0]] - logits[..., target[1]]) - (clean_logits[..., target[0]] - clean_logits[..., target[1]])
        return torch.stack([per[i][counted[i]].mean() for i in range(len(TEXTS))])

    last = _modules(raw, arch, n_layers - 1)["block"]
    out = {}
    for j in range(LAYER, n_layers):
        for kind in ("attn", "mlp"):
            module = _modules(raw, arch, j)[kind]
            out[f"{kind}.{j}", "necessity"] = effect(forward(True, [(module, replace_with(clean[kind, j]))]))
            out[f"{kind}.{j}", "sufficiency"] = effect(forward(False, [(module, replace_with(steered[kind, j]))]))

    def shift(sign):
        def fn(module, args, output):
            first = output if isinstance(output, torch.Tensor) else output[0]
            return replace_with(first + sign * added)(module, args, output)
        return fn

    out["direct", "necessity"] = effect(forward(True, [(last, shift(-1.0))]))
    out["direct", "sufficiency"] = effect(forward(False, [(last, shift(1.0))]))
    return out, effect(steered_logits)


@pytest.mark.parametrize("metric", ["kl", "logit_diff"])
def test_matches_a_raw_hugging_face_patching_loop(pair, metric):
    arch, raw, model, vector = pair
    targets = ("l", "h") if metric == "logit_diff" else None
    target = None if targets is None else [model.tokenizer.encode(t, add_special_tokens=False)[0] for t in targets]
    reference, total = _raw_effects(raw, arch, model, vector, metric, target)
    frame = mediation(model, vector, COEFF, TEXTS, metric=metric, targets=targets, n_boot=20)
    assert len(frame) == len(reference)
    assert frame.total.iloc[0] == pytest.approx(float(total.mean()), rel=1e-4, abs=1e-6)
    for row in frame.itertuples():
        assert row.effect == pytest.approx(float(reference[row.component, row.measure].mean()), rel=1e-4, abs=1e-6), row
    assert abs(total.mean()) > 1e-5  # the vector does something to measure (random GPT-2 logits are flat)


def test_batched_equals_the_naive_loop(pair, monkeypatch):
    """Batched patched runs start at their group's first layer from the kept layer inputs, and give the naive loop's
    full-forward numbers exactly."""
    import actlens.analysis.mediation as module

    _, _, model, vector = pair
    begun = []

    def counting(model, layer, *args):
        begun.append(layer)
        return resumed(model, layer, *args)

    resumed = module.resumed
    monkeypatch.setattr(module, "resumed", counting)
    batched = mediation(model, vector, COEFF, TEXTS, components="heads", n_boot=50, batch_rows=12)
    assert begun and max(begun) == model.cfg.n_layers - 1 and min(begun) == LAYER  # layers below were not run again
    calls = len(begun)
    naive = mediation(model, vector, COEFF, TEXTS, components="heads", n_boot=50, method="naive")
    assert len(begun) == calls  # naive runs full forwards
    assert batched.equals(naive)


@pytest.mark.parametrize("arch", ["gemma3"])
def test_batched_equals_the_naive_loop_with_sliding_windows(arch):
    hf, tok = tiny_hf(arch, seed=2)
    model = actlens.load_model(hf, tokenizer=tok)
    v = actlens.actadd_vector(model, "Love", "Hate", LAYER)
    batched = mediation(model, v, COEFF, TEXTS, n_boot=20, batch_rows=8)
    assert batched.equals(mediation(model, v, COEFF, TEXTS, n_boot=20, method="naive"))


def test_restoring_everything_recovers_the_unsteered_output(pair):
    _, _, model, vector = pair
    tokens = torch.tensor([prompts.encode(model, TEXTS[0])])
    comps = downstream(model, vector)
    names = sorted({c.hook for c in comps if c.kind != "direct"})
    clean, steered_in = {}, {}

    def keep(store, name):
        return lambda x, hook: store.__setitem__(name, x.clone())

    write = hook_name(LAYER)
    with torch.no_grad(), model.hooks(fwd_hooks=[(n, keep(clean, n)) for n in [*names, write]]):
        unsteered = actlens.forward(model, tokens)
    with torch.no_grad(), actlens.steer(model, vector, COEFF), model.hooks(fwd_hooks=[(write, keep(steered_in, write))]):
        steered = actlens.forward(model, tokens)
    delta = steered_in[write] - clean[write]
    restore = [(n, (lambda n: lambda x, hook: clean[n])(n)) for n in names]
    last = (comps[-1].hook, lambda x, hook: x - delta)
    with torch.no_grad(), actlens.steer(model, vector, COEFF), model.hooks(fwd_hooks=[*restore, last]):
        everything = actlens.forward(model, tokens)
    with torch.no_grad(), actlens.steer(model, vector, COEFF), model.hooks(fwd_hooks=restore):
        components_only = actlens.forward(model, tokens)
    torch.testing.assert_close(everything, unsteered, atol=ATOL, rtol=0)
    assert (steered - unsteered).abs().max() > 1e-2
    assert (components_only - unsteered).abs().max() > 1e-3  # the direct path is part of the effect


def test_vector_at_another_site_reaches_fewer_components(pair):
    _, _, model, vector = pair
    moved = actlens.actadd_vector(model, "Love", "Hate", LAYER, site="mlp_out")
    assert [c.name for c in downstream(model, moved)][:2] == [f"attn.{LAYER + 1}", f"mlp.{LAYER + 1}"]
    assert [c.name for c in downstream(model, actlens.actadd_vector(model, "Love", "Hate", LAYER, site="attn_out"))
            ][0] == f"mlp.{LAYER}"
    frame = mediation(model, moved, COEFF, TEXTS[:2], n_boot=10)
    assert set(frame.layer) == set(range(LAYER + 1, model.cfg.n_layers))


@pytest.mark.unchecked
def test_bad_input(pair):
    _, _, model, vector = pair
    with pytest.raises(ValueError, match="texts is empty"):
        mediation(model, vector, COEFF, [])
    with pytest.raises(ValueError, match="head index 9 .* 4 heads"):
        mediation(model, vector, COEFF, TEXTS, components=["head.2.9"])
    with pytest.raises(ValueError, match="not downstream"):
        mediation(model, vector, COEFF, TEXTS, components=["attn.0"])
    with pytest.raises(ValueError, match="targets=\\(plus, minus\\)"):
        mediation(model, vector, COEFF, TEXTS, metric="logit_diff")
    with pytest.raises(ValueError, match="one token"):
        mediation(model, vector, COEFF, TEXTS, metric="logit_diff", targets=(" love", " hate"))
    with pytest.raises(ValueError, match="did you mean 'kl'"):
        mediation(model, vector, COEFF, TEXTS, metric="kll")
