"""Sweeps: per-row steering, batch-independent sampling, batched == separate, resume, bad input."""

import json

import pytest
import torch

import actlens
from actlens.core import prompts
from actlens.core.sampling import Sampling, key_seed
from actlens.experiments.sweeps import Grid, Sampling, compare_batched, mean_diff_spec, pair_spec, sweep
from actlens.models.model import hooks_registered
from actlens.steering.batched import Request, encode_rows, forward_rows, generate_rows, steer_rows

SHORT = Sampling(max_new_tokens=4)




def _grid(**kw) -> Grid:
    base = dict(vectors=[pair_spec("Love", "Hate")], layers=[1, 2], coeffs=[2.0, -3.0],
                prompts=["I think that you", "The weather today"], seeds=[0, 1])
    return Grid(**(base | kw))


def test_steer_rows_equals_steer_per_row(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    rows = [prompts.encode(tiny, "I think that you are"), prompts.encode(tiny, "Hi there, you")]
    mixed, batch = forward_rows(tiny, rows, [Request(v, 3.0), None])
    for r, (row, coeff) in enumerate(zip(rows, [3.0, 0.0], strict=True)):
        logits, _ = actlens.steered_logits(tiny, [tiny.tokenizer.decode(row[1:])], v, coeff)
        torch.testing.assert_close(mixed[r, batch.starts[r]:], logits[0, -len(row):], atol=1e-5, rtol=1e-5)


def test_steer_rows_mixes_requests_and_short_unsteered_rows(tiny):
    """Rows with different requests (front, all, another layer) and an unsteered row shorter than the
    front vector: each row equals steering it alone."""
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    w = actlens.actadd_vector(tiny, "Joy", "Sad", 2)
    texts = ["Hi", "I think that you are", "The weather is nice", "Tell me more"]
    requests = [None, Request(v, 3.0), Request(w, -2.0, align="all", position=1), Request(v, -1.5)]
    rows = [prompts.encode(tiny, t) for t in texts]
    assert len(rows[0]) < v.k  # too short for the front vector other rows carry
    mixed, batch = forward_rows(tiny, rows, requests)
    for r, (text, req) in enumerate(zip(texts, requests, strict=True)):
        if req is None:
            logits, _ = actlens.steered_logits(tiny, [text], v, 0.0, align="all", position=1)
        else:
            logits, _ = actlens.steered_logits(tiny, [text], req.vector, req.coeff, align=req.align,
                                               position=req.position)
        torch.testing.assert_close(mixed[r, batch.starts[r]:], logits[0, -len(rows[r]):], atol=1e-5, rtol=1e-5)


def test_steer_rows_leaves_no_hooks_even_on_error(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    before = hooks_registered(tiny)
    with pytest.raises(RuntimeError, match="boom"), steer_rows(tiny, [Request(v, 1.0)]):
        raise RuntimeError("boom")
    assert hooks_registered(tiny) == before


def test_steer_rows_rejects_a_wrong_row_count(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    with steer_rows(tiny, [Request(v, 1.0)] * 3), pytest.raises(ValueError, match="3 row requests but the batch has 2"):
        tiny(torch.tensor([[0, 40, 41, 42, 43, 44]] * 2))


@pytest.mark.unchecked
def test_request_validates_its_arguments(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    with pytest.raises(ValueError, match="finite"):
        Request(v, float("nan"))
    with pytest.raises(ValueError, match="align must be one of"):
        Request(v, 1.0, align="middle")


def test_keyed_sampling_does_not_depend_on_batch_mates(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    texts = ["I think that you", "Hello there", "The weather today"]
    reqs = [Request(v, 2.0), None, Request(v, -1.0)]
    rows = encode_rows(tiny, texts, reqs)
    seeds = [key_seed(0, t) for t in texts]
    together = generate_rows(tiny, rows, reqs, seeds, Sampling(max_new_tokens=5))
    alone = [generate_rows(tiny, [r], [q], [s], Sampling(max_new_tokens=5))[0]
             for r, q, s in zip(rows, reqs, seeds, strict=True)]
    assert together == alone


def test_greedy_rows_equal_actlens_generate(tiny_hf_model):
    model = tiny_hf_model
    v = actlens.actadd_vector(model, "Love", "Hate", 1)
    rows = encode_rows(model, ["I think that you"], [Request(v, 3.0)])
    ours = generate_rows(model, rows, [Request(v, 3.0)], [0], Sampling(max_new_tokens=6, temperature=0))
    ref = actlens.generate(model, ["I think that you"], vector=v, coeff=3.0, max_new_tokens=6, temperature=0)
    assert ours == ref.tokens


@pytest.mark.parametrize("arch", ["llama", "native"])
def test_batched_sweep_equals_separate_runs(tiny_models, arch):
    grid = _grid(vectors=[pair_spec("Love", "Hate"), mean_diff_spec([("I love it", "I hate it")], name="md")])
    check = compare_batched(tiny_models[arch], grid, sampling=SHORT, batch_size=64)
    assert check.identical and check.max_abs_diff == 0.0
    # unsteered + per vector (prompting + steered/random x layers x coeffs); "md" has no prompting prefix
    n_settings = 1 + 2 * (1 + 2 * 2 * 2) - 1
    assert check.n_completions == n_settings * 2 * 2


def test_sweep_frame_is_tidy_and_unsteered_is_shared(tiny_models):
    result = sweep(tiny_models["llama"], _grid(), sampling=SHORT, progress=False)
    wide = result.completions()
    assert (wide.condition == "unsteered").sum() == 2 * 2  # once, not per setting
    frame = result.to_frame()
    assert list(frame.columns) == ["condition", "vector", "layer", "coeff", "prompt", "seed", "metric", "value"]
    assert len(frame) == len(wide) * len(result.metrics)
    assert not frame.duplicated(["condition", "vector", "layer", "coeff", "prompt", "seed", "metric"]).any()
    summary = result.summary("topic_hit")
    assert {"n", "mean", "ci_low", "ci_high"} <= set(summary.columns)


def test_prompting_and_unsteered_share_random_numbers(tiny_models):
    """Common random numbers: the prompting and unsteered rows of a (seed, prompt) use one noise stream."""
    model = tiny_models["llama"]
    grid = _grid(coeffs=[0.0], layers=[1], controls=("unsteered",))
    wide = sweep(model, grid, sampling=SHORT, progress=False).completions()
    zero = wide[wide.condition == "steered"].completion.tolist()
    assert zero == wide[wide.condition == "unsteered"].completion.tolist()  # c = 0 adds nothing


def test_interrupted_sweep_resumes_without_losing_rows(tiny_models, tmp_path):
    model, out = tiny_models["llama"], tmp_path / "s.jsonl"
    full = sweep(model, _grid(), sampling=SHORT, progress=False).completions()
    part = sweep(model, _grid(), sampling=SHORT, out=out, batch_size=4, limit=10, progress=False)
    assert part.computed == 10 and len(out.read_text().splitlines()) == 1 + 10
    with open(out, "a") as f:
        f.write('{"condition": "steered", "vec')  # torn line: killed mid-write
    rest = sweep(model, _grid(), sampling=SHORT, out=out, batch_size=4, progress=False)
    assert rest.computed == len(full) - 10
    assert rest.completions().equals(full)
    again = sweep(model, _grid(), sampling=SHORT, out=out, progress=False)
    assert again.computed == 0 and again.completions().equals(full)
    assert all(json.loads(line) for line in out.read_text().splitlines())


def test_results_file_of_another_config_is_refused(tiny_models, tmp_path):
    out = tmp_path / "s.jsonl"
    sweep(tiny_models["llama"], _grid(seeds=[0]), sampling=SHORT, out=out, limit=2, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        sweep(tiny_models["llama"], _grid(seeds=[0, 1]), sampling=SHORT, out=out, progress=False)
    with pytest.raises(ValueError, match=r"\.jsonl"):
        sweep(tiny_models["llama"], _grid(), sampling=SHORT, out=tmp_path / "s.csv", progress=False)


@pytest.mark.parametrize("change, error, match", [
    (dict(layers=[]), ValueError, "layers is empty"),
    (dict(coeffs=[]), ValueError, "coeffs is empty"),
    (dict(prompts=[]), ValueError, "prompts is empty"),
    (dict(seeds=[]), ValueError, "seeds is empty"),
    (dict(vectors=[]), ValueError, "vectors is empty"),
    (dict(coeffs=[1.0, float("inf")]), ValueError, "finite"),
    (dict(coeffs=[float("nan")]), ValueError, "finite"),
    (dict(coeffs=["2"]), TypeError, "coeffs must hold"),
    (dict(layers=3), TypeError, "layers must be a list"),
    (dict(controls=("unsteered", "shuffled")), ValueError, "controls"),
    (dict(vectors=[pair_spec("A", "B"), pair_spec("A", "B")]), ValueError, "unique"),
])
@pytest.mark.unchecked
def test_bad_grids_raise_clear_errors(change, error, match):
    with pytest.raises(error, match=match):
        _grid(**change)


@pytest.mark.unchecked
def test_bad_sweep_arguments_raise(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(ValueError, match=r"layer must be in \[0, 4\)"):
        sweep(model, _grid(layers=[1, 9]), sampling=SHORT, progress=False)
    with pytest.raises(ValueError, match="max_new_tokens"):
        Sampling(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        sweep(model, _grid(), mode="parallel", progress=False)
    with pytest.raises(TypeError, match="Grid"):
        sweep(model, {"layers": [1]}, progress=False)


def test_scoped_sweep_batched_equals_separate_and_the_phase_matters(tiny_models):
    model = tiny_models["llama"]
    pairs = [("I love it", "I hate it")]
    grid = _grid(vectors=[mean_diff_spec(pairs, name="gen", phase="generation"),
                          mean_diff_spec(pairs, name="both")])
    check = compare_batched(model, grid, sampling=SHORT, batch_size=64)
    assert check.identical and check.max_abs_diff == 0.0
    wide = sweep(model, grid, sampling=SHORT, progress=False).completions()
    steered = wide[wide.condition == "steered"]
    assert (steered[steered.vector == "gen"].completion.tolist()
            != steered[steered.vector == "both"].completion.tolist())


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_exact_sweep_runs_each_row_alone_and_equals_one_at_a_time(tiny_models, arch, monkeypatch):
    """exact=True: every generate call holds one row, so a row's result cannot depend on its batch (GPU kernels
    are chosen by shape); on the CPU it equals the batched sweep and each row computed alone."""
    from actlens.experiments import sweeps as sweeps_module
    from actlens.experiments.sweeps import grid_rows

    model = tiny_models[arch]
    grid = _grid(coeffs=[2.0], seeds=[0])
    sizes = []
    real = sweeps_module.run_rows
    monkeypatch.setattr(sweeps_module, "run_rows", lambda m, g, rows, **kw: sizes.append(len(rows)) or real(
        m, g, rows, **kw))
    exact = sweep(model, grid, sampling=SHORT, batch_size=8, exact=True, progress=False)
    assert sizes and set(sizes) == {1} and sum(sizes) == len(grid_rows(grid))
    alone = [r for row in grid_rows(grid) for r in real(model, grid, [row], sampling=SHORT,
                                                        metrics={"n": len})]
    assert [r["completion"] for r in exact.records] == [r["completion"] for r in alone]
    batched = sweep(model, grid, sampling=SHORT, batch_size=8, progress=False)
    assert batched.records == exact.records
    with pytest.raises(ValueError, match="exact=True runs every row alone"):
        sweep(model, grid, sampling=SHORT, mode="separate", exact=True, progress=False)
