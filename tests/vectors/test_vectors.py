"""Vectors: multi-layer extraction, hook names derived from the layer, additions deduplicated by content."""

import dataclasses

import pytest
import torch

import actlens
from actlens.steering import batched
from actlens.steering.batched import Request, steer_rows
from actlens.vectors import SteeringVector, actadd_vector, actadd_vectors, mean_diff_vector, mean_diff_vectors

PAIRS = [("I love it", "I hate it"), ("Great", ""), ("What a fine day", "What an awful day")]


def test_hook_name_follows_the_layer(tiny, tmp_path):
    v = actadd_vector(tiny, "Love", "Hate", 1)
    assert v.hook_name == actlens.hook_name(1)
    assert dataclasses.replace(v, layer=3).hook_name == actlens.hook_name(3)
    assert v.at_layer(2, notes="moved").hook_name == actlens.hook_name(2)
    # a file whose recorded hook disagrees with its layer was edited: refuse it
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = v.save(tmp_path / "v.safetensors")
    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["actlens"])
    assert meta["hook_name"] == actlens.hook_name(1)
    meta["hook_name"] = actlens.hook_name(3)
    save_file(load_file(path), path, metadata={"actlens": json.dumps(meta)})
    with pytest.raises(ValueError, match="inconsistent"):
        SteeringVector.load(path)


def test_multi_layer_extraction_is_the_single_layer_one(tiny):
    several = actadd_vectors(tiny, "Love", "Hate!", [3, 0, 2])
    assert list(several) == [3, 0, 2]
    for layer, vec in several.items():
        assert vec == actadd_vector(tiny, "Love", "Hate!", layer)
    for kw in (dict(), dict(read_position="mean"), dict(centre=["The cat sat.", "A day."]), dict(read_position=0)):
        means = mean_diff_vectors(tiny, PAIRS, [1, 3], batch_size=2, **kw)
        for layer, vec in means.items():
            one = mean_diff_vector(tiny, PAIRS, layer, batch_size=2, **kw)
            assert vec.metadata() == one.metadata()
            torch.testing.assert_close(vec.values, one.values, rtol=0, atol=0)
    with pytest.raises(ValueError, match="repeated layers"):
        actadd_vectors(tiny, "Love", "Hate", [1, 1])


def test_equal_requests_make_one_addition(tiny, monkeypatch):
    """A sweep builds one Request per row: equal vectors and coefficients must add once, masked to their rows."""
    seen = []
    make_hook = batched.make_hook

    def counting(additions, positions, rows=None):
        seen.append((len(additions), rows))
        return make_hook(additions, positions, rows)

    monkeypatch.setattr(batched, "make_hook", counting)
    v, again = actadd_vector(tiny, "Love", "Hate", 1), actadd_vector(tiny, "Love", "Hate", 1)
    assert v is not again and v == again
    requests = [Request(v, 2.0), None, Request(again, 2.0), Request(v, 2.0), Request(v, 3.0)]
    tokens = torch.tensor([[0, 40, 41, 42, 43, 44, 45]] * len(requests))
    with torch.inference_mode(), steer_rows(tiny, requests):
        together = actlens.forward(tiny, tokens)
    assert seen == [(2, [[True, False, True, True, False], [False, False, False, False, True]])]
    for row, request in enumerate(requests):
        with torch.inference_mode(), steer_rows(tiny, [request]):
            alone = actlens.forward(tiny, tokens[:1])
        torch.testing.assert_close(together[row], alone[0], atol=1e-5, rtol=0)
