"""The actlens fast path computes what the reference paths compute.

References: the raw Hugging Face model (deep-copied before wrapping, so it never sees
TransformerLens) and the TransformerLens bridge's own forward and ``generate``. Steered runs
are compared with the bridge under the same ``steer`` block and with the raw model plus a
hand-written forward pre-hook that adds the same values at the same positions. Logits must
agree to 1e-5; greedy tokens exactly. Also: a left-padded batch of different prompt lengths
equals one-by-one runs, and KV-cached generation equals uncached generation.
"""

import copy
import json

import pytest
import torch
from transformers import GenerationConfig

import actlens
from actlens.core import prompts
from actlens.models.model import _decoder_layers
from actlens.models.tiny import tiny_hf
from actlens.steering.intervene import steer

ATOL = 1e-5
TEXTS = ["Hello there, my good friend", "I think that", "Why is the sky so blue today?"]
LAYER, COEFF, NEW = 2, 4.0, 10


@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma3"])
def pair(request):
    """(raw Hugging Face copy, actlens bridge) with the same weights."""
    hf, tok = tiny_hf(request.param, seed=1)
    raw = copy.deepcopy(hf)  # wrapping rewires `hf` in place
    return raw, actlens.load_model(hf, tokenizer=tok)


@pytest.fixture(scope="module")
def vector(pair):
    return actlens.actadd_vector(pair[1], "Love", "Hate", LAYER)  # k = 5 on the byte-level tokenizer


def _raw_logits(raw, tokens, mask=None):
    mask = torch.ones_like(tokens) if mask is None else mask
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        return raw(input_ids=tokens, attention_mask=mask, position_ids=position_ids, use_cache=False).logits


class RawSteering:
    """A forward pre-hook on raw decoder layer ``layer``: ActAdd by hand.

    ``front``: add ``delta[k]`` at positions ``[start, start+k)`` of each row whenever the
    prompt is in the chunk (prefill, or every step without a cache). ``all``: add ``delta[1]``
    at every position after each row's BOS, and at every generated token.
    """

    def __init__(self, raw, vec, coeff, align, starts):
        self.delta = vec.values * coeff
        self.align, self.starts = align, starts
        self.handle = _decoder_layers(raw)[vec.layer].register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        out = hidden.clone()
        seq = hidden.shape[1]
        for row, start in enumerate(self.starts):
            if self.align == "all":
                out[row, start + 1 if seq > 1 else 0:] += self.delta[1]
            elif seq > 1:  # the prompt is in this chunk
                out[row, start:start + self.delta.shape[0]] += self.delta
        if args:
            return (out, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": out}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _steering(model, vec, align):
    return steer(model, vec, COEFF, align=align, position=1)


def _raw_greedy(raw, model, batch, *, use_cache=True):
    config = GenerationConfig(do_sample=False, max_new_tokens=NEW, eos_token_id=[], use_cache=use_cache,
                              pad_token_id=prompts.pad_token_id(model), temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        out = raw.generate(input_ids=batch.tokens, attention_mask=batch.attention_mask, generation_config=config)
    return out[:, batch.tokens.shape[1]:].tolist()


def _greedy(model, texts, **kw):
    return actlens.generate(model, texts, temperature=0, freq_penalty=0, stop_at_eos=False,
                            max_new_tokens=NEW, **kw).tokens


# --- logits -------------------------------------------------------------------------------
def test_unsteered_logits_equal_raw_hf_and_bridge(pair):
    raw, model = pair
    tokens = torch.tensor([prompts.encode(model, "Hello there, my good friend")] * 2)
    ours = actlens.forward(model, tokens)
    with torch.inference_mode():
        torch.testing.assert_close(ours, raw(tokens).logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours, model(tokens), atol=ATOL, rtol=0)


@pytest.mark.parametrize("align", [None, "front", "all"])
def test_padded_batch_logits_equal_one_by_one_and_raw_hf(pair, vector, align):
    raw, model = pair
    batch = prompts.encode_batch(model, TEXTS)
    assert len(set(batch.lengths)) == len(TEXTS)  # really different lengths
    steered = actlens.steered_logits(model, TEXTS, vector if align else None, COEFF, align=align or "front",
                                     position=1)[0]
    raw_ctx = RawSteering(raw, vector, COEFF, align, batch.starts) if align else _null()
    with raw_ctx:
        reference = _raw_logits(raw, batch.tokens, batch.attention_mask)
    for row, (start, text) in enumerate(zip(batch.starts, TEXTS, strict=True)):
        torch.testing.assert_close(steered[row, start:], reference[row, start:], atol=ATOL, rtol=0)
        alone = actlens.steered_logits(model, text, vector if align else None, COEFF, align=align or "front",
                                       position=1)[0]
        torch.testing.assert_close(steered[row, start:], alone[0], atol=ATOL, rtol=0)
    if align:
        unsteered = actlens.steered_logits(model, TEXTS)[0]
        assert (steered - unsteered)[:, -1].abs().max() > 1e-3  # the steering reached the last position


@pytest.mark.parametrize("align", ["front", "all"])
def test_steered_fast_path_equals_bridge_forward_under_the_same_steer(pair, vector, align):
    _, model = pair
    tokens = torch.tensor([prompts.encode(model, TEXTS[0])])
    with torch.inference_mode():
        base = actlens.forward(model, tokens)
        with _steering(model, vector, align):
            fast = actlens.forward(model, tokens)
            bridge = model(tokens)
    torch.testing.assert_close(fast, bridge, atol=ATOL, rtol=0)
    assert (fast - base).abs().max() > 1e-2  # the steering did something


# --- greedy tokens ---------------------------------------------------------------------------
@pytest.mark.parametrize("align", [None, "front", "all"])
def test_greedy_tokens_equal_raw_hf_batched_and_cached(pair, vector, align):
    raw, model = pair
    kw = dict(vector=vector, coeff=COEFF, align=align, position=1) if align else {}
    ours = _greedy(model, TEXTS, **kw)
    assert all(len(t) == NEW for t in ours)
    assert ours == [_greedy(model, [t], **kw)[0] for t in TEXTS]  # batch == one by one
    assert ours == _greedy(model, TEXTS, use_cache=False, **kw)  # cached == uncached
    batch = prompts.encode_batch(model, TEXTS)
    for use_cache in (True, False):
        with RawSteering(raw, vector, COEFF, align, batch.starts) if align else _null():
            assert ours == _raw_greedy(raw, model, batch, use_cache=use_cache)
    # (On tiny random GPT-2, front-aligned steering moves the logits but not the greedy tokens;
    # the logits tests check that steering had an effect.)


@pytest.mark.parametrize("align", [None, "front", "all"])
def test_greedy_tokens_equal_the_bridge_generate(pair, vector, align):
    _, model = pair
    kw = dict(vector=vector, coeff=COEFF, align=align, position=1) if align else {}
    for text in TEXTS:
        tokens = torch.tensor([prompts.encode(model, text)])
        with _steering(model, vector, align) if align else _null():
            bridge = model.generate(tokens, max_new_tokens=NEW, do_sample=False, stop_at_eos=False, verbose=False,
                                    use_past_kv_cache=True)
        assert bridge[0, tokens.shape[1]:].tolist() == _greedy(model, [text], **kw)[0]


def _null():
    import contextlib

    return contextlib.nullcontext()


# --- the benchmark itself ---------------------------------------------------------------------
def test_bench_smoke_writes_every_row(tmp_path):
    from actlens import cli
    from actlens.bench.rows import ROWS

    threads = torch.get_num_threads()
    assert cli.main(["bench", "--smoke", "--model", "tiny", "--threads", "1", "--repeats", "5", "--no-png",
                     "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads  # --threads does not leak
    result = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.html").is_file()
    cases = {group: {r["case"] for r in result["rows"] if r["group"] == group}
             for group in ("generate", "forward", "sweep", "klcurve", "klcurve-late")}
    assert len(cases["generate"]) == 2 and len(cases["forward"]) == 1 and len(cases["sweep"]) == 1
    assert len(cases["klcurve"]) == 1 and len(cases["klcurve-late"]) == 1
    timed = {(r["id"], r["case"]) for r in result["rows"]}
    skipped = {(s["id"], s["case"]): s["reason"] for s in result["skipped"]}
    for row in (r for r in ROWS.values() if not r.opt_in):  # opt-in rows (Ray): tests/test_distributed.py
        for case in cases[row.group]:
            assert (row.id, case) in timed or (row.optional and skipped.get((row.id, case)))
    for r in result["rows"]:
        assert len(r["seconds"]) == 5 and r["tok_s_median"] > 0 and r["ratio_median"] > 0
    assert {t["target"] for t in result["targets"]} and result["machine"]["torch"] == torch.__version__
    assert all(r.get("same_tokens_as_baseline", True) for r in result["rows"])
    assert [r.get("same_completions_as_baseline") for r in result["rows"] if r["id"] == "sweep/batched"] == [True]
    differences = [r.get("max_relative_difference") for r in result["rows"] if r["id"].endswith("/batched")
                   and r["group"].startswith("klcurve")]
    assert len(differences) == 2 and all(d is not None and d <= 1e-4 for d in differences)  # kl_curve == separate
    labels = {t["target"] for t in result["targets"]}
    assert any("batched sweep" in t for t in labels) and sum(t.startswith("kl_per_token") for t in labels) == 2
    assert sum(t.startswith("kl_curve") for t in labels) == 2


def test_bench_two_process_reference_row_gives_the_same_completions(tmp_path):
    """The no-Ray reference for the Ray row: two spawned processes, each with half of the sweep's rows."""
    from actlens import cli

    assert cli.main(["bench", "--smoke", "--model", "tiny", "--rows", "sweep/batched,sweep/2-processes",
                     "--threads", "1", "--repeats", "1", "--warmup", "1", "--no-png", "--no-memory",
                     "--out", str(tmp_path)]) == 0
    rows = {r["id"]: r for r in json.loads((tmp_path / "bench.json").read_text())["rows"]}
    assert rows["sweep/2-processes"]["same_completions_as_baseline"] is True
    assert rows["sweep/2-processes"]["startup_s"] > 0
    targets = {t["target"] for t in json.loads((tmp_path / "bench.json").read_text())["targets"]}
    assert any(t.startswith("reference: 2 plain processes") for t in targets)


def test_bench_profile_keeps_where_a_rows_time_goes(tmp_path, capsys):
    from actlens import cli

    args = ["bench", "--smoke", "--model", "tiny", "--rows", "forward/*", "--threads", "1", "--repeats", "1",
            "--warmup", "1", "--no-png", "--no-memory", "--out", str(tmp_path)]
    assert cli.main([*args, "--profile", "forward/kl_per_token-nocontrol"]) == 0
    profiles = json.loads((tmp_path / "bench.json").read_text())["profiles"]
    assert list(profiles) == ["forward/kl_per_token-nocontrol @ forward b=2 p=16"]
    got = next(iter(profiles.values()))
    assert got["device"] == "cpu" and got["total_ms"] > 0 and got["top"]
    assert "aten::mm" in {k["name"] for k in got["top"]}  # the forwards' and the unembedding's products
    assert sum(k["share"] for k in got["top"]) <= 1.0001
    assert cli.main([*args, "--profile", "generate/*"]) == 2
    assert "matches none of the rows being timed" in capsys.readouterr().err


def test_bench_check_reports_numbers_and_raises_only_for_different_work():
    """Different numbers are recorded and checked against a tolerance; different work raises."""
    import pytest

    from actlens.bench import _check
    from actlens.bench.models import build
    from actlens.bench.rows import ROWS, Case, Workload
    from actlens.vectors import actadd_vector

    setup = build("tiny", torch.device("cpu"), torch.float32)
    work = Workload(setup, actadd_vector(setup.model, "Love", "Hate", 1), 4.0)
    gen, fwd, sw = Case("generate", 2, 8, 3), Case("forward", 2, 8), Case("sweep", 3, 0, 2)
    base = torch.tensor([[5, 6, 7], [8, 9, 10]])
    logits = torch.randn(2, 8, 11)
    thunks = {(gen, ROWS["generate/hf"]): lambda: base, (gen, ROWS["generate/actlens"]): lambda: base + (base > 8),
              (fwd, ROWS["forward/hf"]): lambda: logits, (fwd, ROWS["forward/actlens"]): lambda: logits * 1.5,
              (sw, ROWS["sweep/separate"]): lambda: ["a", "b", "c"], (sw, ROWS["sweep/batched"]): lambda: ["a", "b", "x"]}
    meta, checks = _check(thunks, torch.device("cpu"), "float32", work)
    row = meta[(gen, ROWS["generate/actlens"])]
    assert row["same_tokens_as_baseline"] is False and row["token_agreement"] == pytest.approx(4 / 6, abs=1e-4)
    assert row["divergence"]["rows_differing"] == 1 and row["divergence"]["first_differing_step"] == [1]
    assert meta[(fwd, ROWS["forward/actlens"])]["max_logit_difference"] == pytest.approx(0.5)
    assert meta[(sw, ROWS["sweep/batched"])]["completion_agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert [(c["row"], c["passed"]) for c in checks] == [("forward/actlens", False), ("sweep/batched", False)]
    thunks[(sw, ROWS["sweep/batched"])] = lambda: ["a", "b"]
    with pytest.raises(RuntimeError, match="would not do the same work"):
        _check(thunks, torch.device("cpu"), "float32", work)
