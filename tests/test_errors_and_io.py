"""Bad input gets clear errors, raised before the model changes; vectors save and load exactly."""

import pytest
import torch

import actlens
from actlens.models.model import hooks_registered
from actlens.models.tiny import tiny_model


def test_save_load_round_trip_is_exact(tiny, tmp_path):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 2)
    path = v.save(tmp_path / "love.safetensors")
    w = actlens.SteeringVector.load(path)
    assert torch.equal(w.values, v.values)
    assert w == v
    assert w.plus_tokens == v.plus_tokens and w.model == v.model and w.hook_name == v.hook_name


def test_corrupt_truncated_and_foreign_files(tmp_path, tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 2)
    good = v.save(tmp_path / "v.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    for name, match in [("trunc", "truncated or corrupt"), ("junk", "truncated or corrupt"),
                        ("other", "not an actlens steering vector")]:
        with pytest.raises(ValueError, match=match):
            actlens.SteeringVector.load(tmp_path / f"{name}.safetensors")
    with pytest.raises(FileNotFoundError):
        actlens.SteeringVector.load(tmp_path / "missing.safetensors")


def test_vector_from_another_model_shape_is_refused(tiny_models):
    small = tiny_models["llama"]
    other = tiny_model("llama", d_model=32)
    v = actlens.actadd_vector(other, "Love", "Hate", 1)
    with pytest.raises(ValueError, match="d_model 32 vs 64"):
        with actlens.steer(small, v, 1.0):
            pass
    assert hooks_registered(small) == 0


@pytest.mark.parametrize("bad, match", [
    (dict(layer=4), r"layer must be in \[0, 4\)"),
    (dict(layer=-1), r"layer must be in \[0, 4\)"),
    (dict(coeff=float("inf")), "finite"),
    (dict(align="frnt"), "did you mean 'front'"),
])
@pytest.mark.unchecked
def test_bad_steering_requests(tiny, bad, match):
    args = dict(layer=1, coeff=1.0, align="front") | bad
    with pytest.raises(ValueError, match=match):
        v = actlens.actadd_vector(tiny, "Love", "Hate", args["layer"])
        with actlens.steer(tiny, v, args["coeff"], align=args["align"]):
            pass
    assert hooks_registered(tiny) == 0


def test_empty_prompts(tiny):
    with pytest.raises(ValueError, match="empty"):
        actlens.generate(tiny, "")
    with pytest.raises(ValueError, match="empty"):
        actlens.generate(tiny, [])
    with pytest.raises(ValueError, match="empty"):
        actlens.mean_diff_vector(tiny, [], 1)


def test_all_alignment_needs_a_position_for_multi_position_vectors(tiny):
    v = actlens.actadd_vector(tiny, "Love", "Hate", 1)
    with pytest.raises(ValueError, match="position="):
        with actlens.steer(tiny, v, 1.0, align="all"):
            pass


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"Did you mean \['smollm2-135m'"):
        actlens.load_model("smollm2-135")


def test_in_memory_model_needs_its_tokenizer():
    from actlens.models.tiny import tiny_hf

    hf, _ = tiny_hf("gpt2")
    with pytest.raises(ValueError, match="tokenizer"):
        actlens.load_model(hf)
