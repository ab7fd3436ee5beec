"""Devices: whatever actlens creates lands on the vector's or the model's device.

No GPU is needed to catch device mixing: tensors on PyTorch's ``meta`` device have a shape
and no data, and an operation that mixes a meta tensor with a CPU tensor actlens built by
mistake raises. The vector, control and hook paths run on meta tensors here (a full model
forward cannot: Hugging Face's masks read data). The ``gpu`` tests repeat the paths on CUDA
(``.ci/gpu`` runs them; selecting them without CUDA fails, see tests/conftest.py).
"""

import pytest
import torch

import actlens
from actlens.analysis.ablation import remove_direction
from actlens.core import positions
from actlens.core.sampling import FrequencyPenalty, KeyedSample, Sampling, processors
from actlens.models.model import hook_name, padding
from actlens.steering.batched import Request, steer_rows
from actlens.vectors import actadd_vector, mean_diff_vector, random_like

META = torch.device("meta")


def _on_meta(vector):
    return vector.with_values(vector.values.to(META))


def test_random_control_stays_on_the_vectors_device(tiny):
    v = actadd_vector(tiny, "Love", "Hate", 1)
    control = random_like(_on_meta(v), seed=3)
    assert control.values.device == META and control.values.shape == v.values.shape
    assert control.kind == "random"
    half = v.with_values(v.values.to(torch.bfloat16))
    assert random_like(half).values.dtype == torch.bfloat16


@pytest.mark.parametrize("align", ["front", "mid", "back", "all"])
def test_steering_hooks_build_nothing_on_the_cpu(tiny, align):
    """A meta residual through every hook kind: steer, steer_rows (with row masks) and the projection."""
    v = _on_meta(actadd_vector(tiny, "Love", "Hate", 1))
    d = int(tiny.cfg.d_model)
    resid = torch.zeros(2, 9, d, device=META)
    point = tiny.hook_dict[hook_name(1)]
    with padding(tiny, [2, 0], [7, 9]):
        with actlens.steer(tiny, v, 3.0, align=align, position=1):
            out = point(resid)
        assert out.device == META and out.shape == resid.shape
        with steer_rows(tiny, [None, Request(v, 3.0, align, 1)]):
            assert point(resid).device == META
        with remove_direction(tiny, {1: torch.ones(d)}):  # checked for finiteness on the CPU; the hook moves it
            assert point(resid).device == META


def test_position_masks_follow_the_device():
    layout = positions.of_batch([2, 0], [7, 9], 9)
    where = positions.Placement("mid", 3, False, True)
    assert positions.injected(where, layout, META).device == META
    assert positions.real(layout, META).device == META
    index, inside = positions.window_index(where, where.first(layout), layout, META)
    assert index.device == inside.device == META


def test_sampling_processors_follow_the_scores_device():
    ids = torch.zeros(2, 5, dtype=torch.long, device=META)
    scores = torch.zeros(2, 11, device=META)
    assert FrequencyPenalty(1.0, torch.tensor([1, 0]))(ids, scores).device == META
    assert KeyedSample([1, 2])(ids, scores).device == META
    assert len(processors(Sampling(temperature=0), torch.tensor([0, 0]))) == 0


# --- on a GPU (.ci/gpu) ---------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cuda_paths_match_the_cpu(arch):
    from actlens.models.tiny import tiny_hf

    cpu, gpu = (actlens.load_model(hf, tokenizer=tok, device=device)
                for device, (hf, tok) in (("cpu", tiny_hf(arch)), ("cuda", tiny_hf(arch))))
    texts = ["I think that you are", "Hi"]
    v_cpu, v_gpu = actadd_vector(cpu, "Love", "Hate", 1), actadd_vector(gpu, "Love", "Hate", 1)
    assert v_gpu.values.device.type == random_like(v_gpu).values.device.type == "cuda"
    torch.testing.assert_close(v_gpu.values.cpu(), v_cpu.values, atol=1e-4, rtol=0)
    for align in ("front", "all"):
        a = actlens.steered_logits(cpu, texts, v_cpu, 4.0, align=align, position=1, short_prompt="pad")[0]
        b = actlens.steered_logits(gpu, texts, v_gpu, 4.0, align=align, position=1, short_prompt="pad")[0]
        torch.testing.assert_close(b.cpu(), a, atol=1e-3, rtol=0)
    greedy = dict(temperature=0, max_new_tokens=6, vector=None, stop_at_eos=False)
    assert actlens.generate(gpu, texts, **greedy).tokens == actlens.generate(cpu, texts, **greedy).tokens
    mean = mean_diff_vector(gpu, [("I love it", "I hate it")], 2)
    result = actlens.kl_per_token(gpu, texts, mean, 2.0, align="all")  # its default control is random_like
    assert result.kl_control is not None and torch.isfinite(result.kl_steered).all()
    grid = actlens.Grid(vectors=[actlens.pair_spec("Love", "Hate")], layers=[1], coeffs=[2.0],
                        prompts=["I think"], seeds=[0], controls=("unsteered", "random"))
    result = actlens.sweep(gpu, grid, sampling=Sampling(max_new_tokens=4), progress=False)
    assert [r["condition"] for r in result.records] == ["unsteered", "steered", "random"]


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_cuda_sweeps_chat_and_vector_files(arch, tmp_path):
    """Batched sweeps (exactly, and against one setting at a time), chat generation, and a CUDA vector's
    save/load, on a Llama- and a Gemma-3-architecture tiny model."""
    from actlens.models.tiny import tiny_hf
    from actlens.vectors.steering_vector import SteeringVector

    hf, tok = tiny_hf(arch)
    gpu = actlens.load_model(hf, tokenizer=tok, device="cuda")
    v = actadd_vector(gpu, "Love", "Hate", 1)
    path = v.save(tmp_path / "v.safetensors")
    back = SteeringVector.load(path)
    assert torch.equal(back.values, v.values.cpu()) and back.layer == v.layer
    with actlens.steer(gpu, back, 3.0):  # a CPU-loaded vector steers the CUDA model
        moved = actlens.steered_logits(gpu, ["I think that you are"])[0]
    direct = actlens.steered_logits(gpu, ["I think that you are"], v, 3.0)[0]
    torch.testing.assert_close(moved, direct, atol=1e-5, rtol=0)
    grid = actlens.Grid(vectors=[actlens.pair_spec("Love", "Hate")], layers=[1, 2], coeffs=[2.0, -1.0],
                        prompts=["I think", "The weather today is"], seeds=[0], controls=("unsteered", "random"))
    short = Sampling(max_new_tokens=4)
    batched = actlens.sweep(gpu, grid, sampling=short, progress=False)
    exact = actlens.sweep(gpu, grid, sampling=short, exact=True, progress=False)
    again = actlens.sweep(gpu, grid, sampling=short, exact=True, progress=False)
    assert exact.records == again.records  # same device, dtype and batch: bit-identical on a re-run
    assert len(batched.records) == len(exact.records)
    agree = sum(a["completion"] == b["completion"] for a, b in zip(batched.records, exact.records, strict=True))
    assert agree >= len(exact.records) // 2, (agree, len(exact.records))  # float32: near-ties only
    hf_cpu, tok_cpu = tiny_hf(arch)
    cpu = actlens.load_model(hf_cpu, tokenizer=tok_cpu)
    chat = dict(chat=True, max_new_tokens=6, temperature=0, stop_at_eos=False, align="all", position=1, coeff=3.0)
    reply = actlens.generate(gpu, ["Hello", "How are you?"], vector=v, **chat)
    assert reply.tokens == actlens.generate(cpu, ["Hello", "How are you?"], vector=v.with_values(v.values.cpu()), **chat).tokens


@pytest.mark.gpu
@pytest.mark.compiled
@pytest.mark.parametrize("arch", ["llama"])  # each new steering set-up compiles: one architecture keeps .ci/gpu short
def test_cuda_compiled_decoding_steers_like_eager(arch):
    """generate(compile=True) on CUDA (inductor, CUDA graphs, static KV cache), float32: the same greedy tokens as
    eager decoding, unsteered, front-aligned and align='all' (every generated token steered, so a hook dropped by
    the compiled decode steps fails), switching vectors, layers and coefficients on the same compiled model; no graph
    break and no frame left to eager (.ci/gpu runs without jaxtyping's checkers, so dynamo's counters are exact),
    and a new coefficient compiles nothing."""
    from torch._dynamo.utils import counters

    from actlens.models.tiny import tiny_hf

    hf, tok = tiny_hf(arch)
    gpu = actlens.load_model(hf, tokenizer=tok, device="cuda")
    v, w = actadd_vector(gpu, "Love", "Hate", 1), actadd_vector(gpu, "Up", "Down", 2)
    texts = ["I think that you are", "Hello there"]
    counters.clear()
    greedy = dict(max_new_tokens=8, temperature=0, stop_at_eos=False)
    for vector, coeff, align in ((None, 1.0, "front"), (v, 4.0, "all"), (w, -6.0, "all"), (v, 8.0, "all")):
        steering = {} if vector is None else dict(vector=vector, coeff=coeff, align=align, position=1)
        eager = actlens.generate(gpu, texts, **greedy, **steering).tokens
        assert actlens.generate(gpu, texts, **greedy, **steering, compile=True).tokens == eager, (coeff, align)
        graphs = counters["stats"]["unique_graphs"]
    assert actlens.generate(gpu, texts, **greedy, vector=v, coeff=2.0, align="all", position=1, compile=True).tokens
    assert counters["stats"]["unique_graphs"] == graphs
    assert not counters["graph_break"] and not counters["unimplemented"], (counters["graph_break"],
                                                                           counters["unimplemented"])
