"""GGUF control vectors (llama.cpp / repeng) and steering-vectors / CAA ``.pt`` files, both ways."""

import dataclasses
import fractions
import warnings

import numpy as np
import pytest
import torch

from actlens.models.model import forward
from actlens.steering.intervene import steer
from actlens.vectors import actadd_vector, mean_diff_vector
from actlens.vectors import gguf as interchange
from actlens.vectors import pt as pt_vectors
from actlens.vectors.gguf import LossyExportWarning, from_gguf, to_gguf
from actlens.vectors.pt import from_pt

PAIRS = [("I love it", "I hate it"), ("Great", "Awful")]
TOKENS = torch.tensor([[0, 40, 41, 42, 43, 44, 45, 46]])


def write_repeng_style(path, directions: dict[int, np.ndarray], *, arch="controlvector", hint="llama",
                       layer_count=None):
    """A file laid out as repeng's ``ControlVector.export_gguf`` writes it, with gguf's own writer."""
    import gguf

    writer = gguf.GGUFWriter(path, arch)
    writer.add_string(f"{arch}.model_hint", hint)
    writer.add_uint32(f"{arch}.layer_count", len(directions) if layer_count is None else layer_count)
    for layer, direction in directions.items():
        writer.add_tensor(f"direction.{layer}", direction)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def hf_output_hook_logits(model, hf_layer: int, direction: torch.Tensor, coeff: float) -> torch.Tensor:
    """Oracle: add ``coeff * direction`` to the output of HF decoder layer ``hf_layer`` (after BOS), as
    repeng's ControlModule and llama.cpp's build_cvec do, on the model's plain Hugging Face tree."""
    from actlens.models.model import _decoder_layers, state

    fast = state(model).fast

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        delta = torch.zeros_like(hidden)
        delta[:, 1:] = coeff * direction  # actlens align="all" leaves BOS alone
        hidden = hidden + delta
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = _decoder_layers(fast)[hf_layer].register_forward_hook(add)
    try:
        with torch.no_grad():
            return forward(model, TOKENS)
    finally:
        handle.remove()


# --- round trips ------------------------------------------------------------------------------
def test_mean_diff_round_trip_is_exact(tiny, tmp_path):
    v = mean_diff_vector(tiny, PAIRS, layer=2)
    path = to_gguf(v, tmp_path / "v.gguf")
    back = from_gguf(path, tiny)
    assert list(back) == [2]
    w = back[2]
    assert torch.equal(w.values, v.values.float())
    assert (w.kind, w.k, w.bos_row, w.layer, w.hook_name) == ("imported", 1, False, 2, "blocks.2.hook_resid_pre")
    assert w.model == v.model


def test_multi_layer_file_round_trip(tiny_models, tmp_path):
    model = tiny_models["llama"]
    vs = [mean_diff_vector(model, PAIRS, layer=layer) for layer in (3, 2)]
    path = to_gguf(vs, tmp_path / "multi.gguf")
    from gguf import GGUFReader

    reader = GGUFReader(path)
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.2"]
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.layer_count").contents() == 3
    back = from_gguf(path, model)
    assert list(back) == [2, 3]
    for v in vs:
        assert torch.equal(back[v.layer].values, v.values)


def test_model_hint_defaults_to_model_name_and_can_be_set(tiny_models, tmp_path):
    from gguf import GGUFReader

    model = tiny_models["gpt2"]
    v = mean_diff_vector(model, PAIRS, layer=2)
    hint = lambda p: GGUFReader(p).get_field("controlvector.model_hint").contents()  # noqa: E731
    assert hint(to_gguf(v, tmp_path / "a.gguf")) == v.model.name
    assert hint(to_gguf(v, tmp_path / "b.gguf", model_hint="gpt2")) == "gpt2"


@pytest.mark.parametrize("reduce", ["mean", "sum", "position"])
def test_actadd_reductions_warn_and_match(tiny_models, tmp_path, reduce):
    model = tiny_models["llama"]
    v = actadd_vector(model, "Love", "Hate", layer=2)
    assert v.k > 1 and v.bos_row
    position = 2 if reduce == "position" else None
    with pytest.warns(LossyExportWarning, match="every position"):
        path = to_gguf(v, tmp_path / "a.gguf", reduce=reduce, position=position)
    rows = v.values[1:]  # the BOS row is zero and left out
    expected = {"mean": rows.mean(0), "sum": rows.sum(0), "position": v.values[2]}[reduce]
    torch.testing.assert_close(from_gguf(path, model)[2].values[0], expected)


def test_k1_vector_exports_without_warning(tiny_models, tmp_path):
    v = mean_diff_vector(tiny_models["llama"], PAIRS, layer=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LossyExportWarning)
        to_gguf(v, tmp_path / "v.gguf", reduce="mean")


# --- layer mapping against the formats' own conventions ----------------------------------------
def test_repeng_layout_file_maps_direction_n_to_block_n_plus_1(tiny_hf_model, tmp_path):
    """A file written by gguf's GGUFWriter as repeng does: direction.N is added to the output of
    HF layer N, which is the residual entering block N+1."""
    gen = torch.Generator().manual_seed(1)
    directions = {n: torch.randn(64, generator=gen).numpy() for n in (1, 2)}
    path = write_repeng_style(tmp_path / "repeng.gguf", directions)
    vectors = from_gguf(path, tiny_hf_model)
    assert list(vectors) == [2, 3]
    for n, direction in directions.items():
        v = vectors[n + 1]
        assert v.hook_name == f"blocks.{n + 1}.hook_resid_pre"
        assert np.array_equal(v.values[0].numpy(), direction)
        with torch.no_grad(), steer(tiny_hf_model, v, 3.0, align="all"):
            steered = forward(tiny_hf_model, TOKENS)
        expected = hf_output_hook_logits(tiny_hf_model, n, torch.from_numpy(direction), 3.0)
        torch.testing.assert_close(steered, expected, atol=1e-5, rtol=1e-5)


def test_last_block_output_direction_is_skipped_with_warning(tiny_models, tmp_path):
    model = tiny_models["llama"]  # 4 layers: direction.3 is the last block's output
    path = write_repeng_style(tmp_path / "r.gguf", {1: np.ones(64, np.float32), 3: np.ones(64, np.float32)})
    with pytest.warns(UserWarning, match="skipped direction.3"):
        vectors = from_gguf(path, model)
    assert list(vectors) == [2]


def test_direction_zero_imports_at_block_1(tiny_models, tmp_path):
    model = tiny_models["llama"]  # repeng may write direction.0 (llama.cpp rejects it); it is still well defined
    path = write_repeng_style(tmp_path / "r.gguf", {0: np.ones(64, np.float32)})
    assert list(from_gguf(path, model)) == [1]


def test_layer_mapping_helpers():
    assert interchange.gguf_direction(6) == 5
    assert interchange.resid_pre_layer(5) == 6


# --- .pt import (CAA, steering-vectors) ------------------------------------------------------
def test_pt_import_is_also_importable_from_interchange():
    """from_pt lives in actlens.vectors.pt; actlens.vectors.gguf keeps the name for its users (README)."""
    assert interchange.from_pt is pt_vectors.from_pt and interchange.CONVENTIONS is pt_vectors.CONVENTIONS


def test_pt_single_tensor_round_trip(tiny, tmp_path):
    v = mean_diff_vector(tiny, PAIRS, layer=2)
    torch.save(v.values[0].clone(), tmp_path / "vec_layer_1.pt")  # CAA: output of HF layer 1 = blocks.2
    w = from_pt(tmp_path / "vec_layer_1.pt", tiny, layer=1)
    assert (w.layer, w.kind, w.k, w.bos_row) == (2, "imported", 1, False)
    assert torch.equal(w.values, v.values)
    same = from_pt(tmp_path / "vec_layer_1.pt", tiny, layer=2, convention="resid_pre")
    assert same.layer == 2 and torch.equal(same.values, v.values)


def test_pt_dict_round_trip(tiny_models, tmp_path):
    model = tiny_models["gpt2"]
    vs = {layer: mean_diff_vector(model, PAIRS, layer=layer + 1) for layer in (0, 2)}
    torch.save({layer: v.values[0].half() for layer, v in vs.items()}, tmp_path / "sv.pt")
    for layer, v in vs.items():
        w = from_pt(tmp_path / "sv.pt", model, layer=layer)
        assert w.layer == layer + 1 and w.values.dtype == torch.float32
        torch.testing.assert_close(w.values, v.values.half().float())
    torch.save({"1": torch.ones(1, 64)}, tmp_path / "str_keys.pt")  # [1, d_model] and string keys are fine
    assert from_pt(tmp_path / "str_keys.pt", model, layer=1).layer == 2


def test_pt_matches_steering_vectors_library(tiny_models, tmp_path):
    """steering-vectors adds layer_activations[i] to the output of decoder block i; after import,
    actlens (align="all") must give the same logits as the library's own apply()."""
    import steering_vectors as sv_lib  # installed by the test command (--no-deps: it pins transformers<5)

    from actlens.models.tiny import tiny_hf

    model = tiny_models["llama"]
    hf, _ = tiny_hf("llama")  # the same seeded weights as the wrapped tiny model
    direction = torch.randn(64, generator=torch.Generator().manual_seed(2))
    sv = sv_lib.SteeringVector(layer_activations={1: direction}, layer_type="decoder_block")
    torch.save(sv.layer_activations, tmp_path / "sv.pt")
    with torch.no_grad(), sv.apply(hf, multiplier=2.0, min_token_index=1):  # skip BOS as align="all" does
        expected = hf(TOKENS).logits
    v = from_pt(tmp_path / "sv.pt", model, layer=1)
    with torch.no_grad(), steer(model, v, 2.0, align="all"):
        got = forward(model, TOKENS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_include_bos_is_llama_cpp_s_window(tiny_models, tmp_path):
    """llama.cpp (and steering-vectors' default apply) add at every position, BOS included: include_bos=True."""
    import steering_vectors as sv_lib

    from actlens.models.tiny import tiny_hf

    model = tiny_models["llama"]
    hf, _ = tiny_hf("llama")
    direction = torch.randn(64, generator=torch.Generator().manual_seed(3))
    sv = sv_lib.SteeringVector(layer_activations={1: direction}, layer_type="decoder_block")
    torch.save(sv.layer_activations, tmp_path / "sv.pt")
    with torch.no_grad(), sv.apply(hf, multiplier=2.0):  # min_token_index=0: every position
        expected = hf(TOKENS).logits
    v = from_pt(tmp_path / "sv.pt", model, layer=1)
    with torch.no_grad(), steer(model, v, 2.0, align="all", include_bos=True):
        got = forward(model, TOKENS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad(), steer(model, v, 2.0, align="all"):
        assert not torch.allclose(forward(model, TOKENS), expected, atol=1e-5)  # without BOS it differs


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.unchecked
def test_k_gt_1_refused_by_default(tiny_models, tmp_path):
    v = actadd_vector(tiny_models["llama"], "Love", "Hate", layer=2)
    with pytest.raises(ValueError, match="reduce='mean'"):
        to_gguf(v, tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="needs position"):
        to_gguf(v, tmp_path / "a.gguf", reduce="position")
    with pytest.raises(ValueError, match="position must be"):
        to_gguf(v, tmp_path / "a.gguf", reduce="position", position=99)
    with pytest.raises(ValueError, match="only used with reduce='position'"):
        to_gguf(v, tmp_path / "a.gguf", reduce="mean", position=1)
    with pytest.raises(ValueError, match="did you mean 'mean'"):
        to_gguf(v, tmp_path / "a.gguf", reduce="meen")


@pytest.mark.parametrize(("layer", "match"), [(0, "embedding output"), (1, "direction.0")])
def test_export_layers_without_llama_cpp_equivalent(tiny_models, tmp_path, layer, match):
    v = mean_diff_vector(tiny_models["llama"], PAIRS, layer=layer)
    with pytest.raises(ValueError, match=match):
        to_gguf(v, tmp_path / "a.gguf")


def test_export_rejects_bad_vectors(tiny_models, tmp_path):
    model = tiny_models["llama"]
    v = mean_diff_vector(model, PAIRS, layer=2)
    with pytest.raises(ValueError, match="non-finite"):
        to_gguf(v.with_values(torch.full((1, 64), float("nan"))), tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="two vectors at layer 2"):
        to_gguf([v, v], tmp_path / "a.gguf")
    other = mean_diff_vector(tiny_models["gpt2"], PAIRS, layer=3)
    with pytest.raises(ValueError, match="different models"):
        to_gguf([v, dataclasses.replace(other, model=dataclasses.replace(other.model, d_vocab=7))], tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="compatibility mode"):
        to_gguf(dataclasses.replace(v, compatibility_mode=True), tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="no vectors"):
        to_gguf([], tmp_path / "a.gguf")
    with pytest.raises(TypeError, match="SteeringVector"):
        to_gguf([torch.ones(64)], tmp_path / "a.gguf")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_gguf(v, tmp_path / "missing" / "a.gguf")


def test_import_rejects_missing_and_foreign_files(tiny_models, tmp_path):
    model = tiny_models["llama"]
    with pytest.raises(FileNotFoundError, match="no control-vector file"):
        from_gguf(tmp_path / "nope.gguf", model)
    (tmp_path / "junk.gguf").write_bytes(b"definitely not gguf" * 8)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        from_gguf(tmp_path / "junk.gguf", model)
    path = write_repeng_style(tmp_path / "llama.gguf", {1: np.ones(64, np.float32)}, arch="llama")
    with pytest.raises(ValueError, match="not a control vector"):
        from_gguf(path, model)
    good = to_gguf(mean_diff_vector(model, PAIRS, layer=2), tmp_path / "good.gguf")
    data = good.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable GGUF"):
        from_gguf(tmp_path / "cut.gguf", model)


def test_import_rejects_shapes_that_do_not_fit(tiny_models, tmp_path):
    model = tiny_models["llama"]  # d_model 64, 4 layers
    cases = {
        "d_model=64": {1: np.ones(32, np.float32)},
        "deeper model": {7: np.ones(64, np.float32)},
        "non-finite": {1: np.array([np.inf] + [0.0] * 63, np.float32)},
        "1-D F32": {1: np.ones((2, 64), np.float32)},
    }
    for match, directions in cases.items():
        path = write_repeng_style(tmp_path / "bad.gguf", directions)
        with pytest.raises(ValueError, match=match):
            from_gguf(path, model)
    path = write_repeng_style(tmp_path / "count.gguf", {1: np.ones(64, np.float32)}, layer_count=40)
    with pytest.raises(ValueError, match="layer_count=40"):
        from_gguf(path, model)
    path = write_repeng_style(tmp_path / "none.gguf", {})
    with pytest.raises(ValueError, match="without direction.N"):
        from_gguf(path, model)


def test_import_rejects_foreign_tensor_names(tiny_models, tmp_path):
    import gguf

    writer = gguf.GGUFWriter(tmp_path / "odd.gguf", "controlvector")
    writer.add_tensor("token_embd.weight", np.ones(64, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="only direction.N"):
        from_gguf(tmp_path / "odd.gguf", tiny_models["llama"])


def test_import_checks_the_exporting_model(tiny_models, tmp_path):
    v = mean_diff_vector(tiny_models["llama"], PAIRS, layer=2)
    path = to_gguf(dataclasses.replace(v, model=dataclasses.replace(v.model, d_vocab=999)), tmp_path / "v.gguf")
    with pytest.raises(ValueError, match="d_vocab 999"):
        from_gguf(path, tiny_models["llama"])


@pytest.mark.unchecked
def test_pt_bad_input(tiny_models, tmp_path):
    model = tiny_models["llama"]
    with pytest.raises(FileNotFoundError, match="no .pt vector file"):
        from_pt(tmp_path / "nope.pt", model, layer=1)
    torch.save({1: torch.ones(64)}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match=r"has layers \[1\]"):
        from_pt(tmp_path / "d.pt", model, layer=5)
    with pytest.raises(ValueError, match="last decoder layer"):
        torch.save({3: torch.ones(64)}, tmp_path / "last.pt")
        from_pt(tmp_path / "last.pt", model, layer=3)
    with pytest.raises(ValueError, match="did you mean 'hf_output'"):
        from_pt(tmp_path / "d.pt", model, layer=1, convention="hf_outptu")
    with pytest.raises(ValueError, match=">= 0"):
        from_pt(tmp_path / "d.pt", model, layer=-1)
    torch.save(torch.ones(32), tmp_path / "small.pt")
    with pytest.raises(ValueError, match=r"needs \[64\]"):
        from_pt(tmp_path / "small.pt", model, layer=1)
    torch.save(torch.ones(3, 64), tmp_path / "rows.pt")
    with pytest.raises(ValueError, match="several rows"):
        from_pt(tmp_path / "rows.pt", model, layer=1)
    torch.save(torch.tensor([float("nan")] * 64), tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="non-finite"):
        from_pt(tmp_path / "nan.pt", model, layer=1)
    torch.save({"a": torch.ones(64)}, tmp_path / "keys.pt")
    with pytest.raises(ValueError, match="not all layer numbers"):
        from_pt(tmp_path / "keys.pt", model, layer=1)
    torch.save(torch.arange(64), tmp_path / "ints.pt")
    with pytest.raises(ValueError, match="float tensor"):
        from_pt(tmp_path / "ints.pt", model, layer=1)
    torch.save(fractions.Fraction(1, 3), tmp_path / "obj.pt")  # a pickled object, not tensors
    with pytest.raises(ValueError, match="weights_only=True"):
        from_pt(tmp_path / "obj.pt", model, layer=1)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="weights_only=True"):
        from_pt(tmp_path / "junk.pt", model, layer=1)


def test_import_refuses_compatibility_mode(tmp_path):
    from actlens.models.tiny import tiny_model

    model = tiny_model("gpt2", n_layers=2)
    torch.save(torch.ones(64), tmp_path / "v.pt")
    model.enable_compatibility_mode()
    with pytest.raises(ValueError, match="compatibility mode"):
        from_pt(tmp_path / "v.pt", model, layer=0)
