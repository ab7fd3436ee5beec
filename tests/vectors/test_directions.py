"""PCA and probe directions: repeng and scikit-learn as oracles, planted directions, save / load / GGUF, bad input."""

import warnings

import numpy as np
import pytest
import torch

import actlens
from actlens.vectors import SteeringVector
from actlens.vectors.extraction import read_pairs
from actlens.vectors.gguf import from_gguf, to_gguf
from actlens.vectors.pca import pca_direction, pca_vector
from actlens.vectors.probe import ProbeConvergenceWarning, probe_direction, probe_vector

PAIRS = [("I love it", "I hate it"), ("Great day", "Awful day"), ("What a fine meal", "What a dreadful meal"),
         ("She smiled", "She frowned"), ("Wonderful news", "Terrible news")]


def _cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))


def _repeng_directions(pos: torch.Tensor, neg: torch.Tensor, method: str, monkeypatch) -> np.ndarray:
    """repeng 0.4.0's own ``read_representations`` (PCA and sign) run on our activations.

    repeng 0.4.0 names ``np.float_`` (removed in NumPy 2) in an annotation: alias it for the import.
    Its activation reading is replaced by ours, so both sides see the same activations.
    """
    if not hasattr(np, "float_"):
        monkeypatch.setattr(np, "float_", np.float64, raising=False)
    extract = pytest.importorskip("repeng.extract")
    h = torch.stack([pos, neg], 1).reshape(-1, pos.shape[1]).double().numpy()  # [pos, neg, pos, neg, ...]
    monkeypatch.setattr(extract, "batched_get_hiddens", lambda *a, **k: {0: h.copy()})
    monkeypatch.setattr(extract, "model_layer_list", lambda model: [None])
    inputs = [extract.DatasetEntry(positive=f"p{i}", negative=f"n{i}") for i in range(len(pos))]
    return extract.read_representations(None, None, inputs, hidden_layers=[0], method=method)[0]


@pytest.mark.parametrize("method", ["pca_diff", "pca_center"])
def test_pca_matches_repeng(tiny, method, monkeypatch):
    reads = read_pairs(tiny, PAIRS, 2)
    ours = pca_vector(tiny, PAIRS, 2, method=method)
    theirs = torch.from_numpy(_repeng_directions(reads.pos, reads.neg, method, monkeypatch))
    assert abs(_cos(ours.values[0], theirs)) >= 0.99
    # + moves toward the first texts; scaled to the mean difference's norm
    mean_diff = reads.pos.mean(0) - reads.neg.mean(0)
    assert float(ours.values[0] @ mean_diff) > 0
    torch.testing.assert_close(ours.norms()[0], torch.linalg.vector_norm(mean_diff), rtol=1e-4, atol=1e-6)
    assert ours.kind == method and ours.k == 1 and ours.read_position == "last" and method in ours.notes


def test_probe_matches_scikit_learn(tiny):
    from sklearn.linear_model import LogisticRegression

    reads = read_pairs(tiny, PAIRS, 1, read_position="mean")
    v = probe_vector(tiny, PAIRS, 1, read_position="mean", C=0.5)
    x = torch.cat([reads.pos, reads.neg]).double().numpy()
    y = np.r_[np.ones(len(PAIRS)), np.zeros(len(PAIRS))]
    coef = torch.from_numpy(LogisticRegression(C=0.5, max_iter=1000).fit(x, y).coef_[0])
    assert _cos(v.values[0], coef) >= 0.999  # same direction, same sign
    mean_diff = reads.pos.mean(0) - reads.neg.mean(0)
    torch.testing.assert_close(v.norms()[0], torch.linalg.vector_norm(mean_diff), rtol=1e-4, atol=1e-6)
    assert v.kind == "probe" and "C=0.5" in v.notes and v.read_position == "mean"


def _planted(seed: int, n: int = 40, d: int = 32, spread: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    planted = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    base = torch.randn(n, d, generator=g) * spread  # shared content of each pair
    amount = 1 + torch.rand(n, generator=g) * 8  # pairs differ along `planted` by varying amounts
    noise = lambda: 0.2 * torch.randn(n, d, generator=g)  # noqa: E731
    return planted, base + amount[:, None] * planted / 2 + noise(), base - amount[:, None] * planted / 2 + noise()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_methods_recover_a_planted_direction(seed):
    planted, pos, neg = _planted(seed)
    for method in ("pca_diff", "pca_center"):
        direction, ratio = pca_direction(pos, neg, method)
        assert _cos(direction, planted) > 0.95, method  # the sign too: toward pos
        assert 0 < ratio <= 1
    planted, pos, neg = _planted(seed, spread=0.5)  # a probe sees the texts unpaired: less shared content
    direction, accuracy = probe_direction(pos, neg, C=0.01)
    assert _cos(direction, planted) > 0.9 and accuracy >= 0.9
    # and a random direction is nowhere near it (the tests could fail)
    assert abs(_cos(torch.randn(32, generator=torch.Generator().manual_seed(seed + 9)), planted)) < 0.6


def test_pca_diff_differs_from_pca_center_on_constant_differences():
    """repeng's pca_diff centres the differences: pairs that all differ the same way leave it only the noise."""
    planted, pos, neg = _planted(0)
    g = torch.Generator().manual_seed(5)
    pos = neg + 4 * planted + 0.05 * torch.randn(neg.shape, generator=g)
    assert _cos(pca_direction(pos, neg, "pca_center")[0], planted) > 0.99
    assert abs(_cos(pca_direction(pos, neg, "pca_diff")[0], planted)) < 0.5


def test_new_vectors_save_load_and_export(tiny_hf_model, tmp_path):
    for v in (pca_vector(tiny_hf_model, PAIRS, 2, method="pca_center"), probe_vector(tiny_hf_model, PAIRS, 2)):
        back = SteeringVector.load(v.save(tmp_path / f"{v.kind}.safetensors"))
        assert back == v and back.notes == v.notes
        imported = from_gguf(to_gguf(v, tmp_path / f"{v.kind}.gguf"), tiny_hf_model)[2]
        torch.testing.assert_close(imported.values, v.values)
        with actlens.steer(tiny_hf_model, v, 2.0, align="all"):  # and they steer like any one-row vector
            steered = tiny_hf_model(torch.tensor([[0, 40, 41, 42]]))
        assert not torch.equal(steered, tiny_hf_model(torch.tensor([[0, 40, 41, 42]])))


def test_exported_from_the_package():
    assert actlens.pca_vector is pca_vector and actlens.probe_vector is probe_vector
    assert {"pca_vector", "probe_vector"} <= set(actlens.__all__)


@pytest.mark.unchecked
def test_bad_input(tiny_hf_model, monkeypatch):
    model = tiny_hf_model
    with pytest.raises(ValueError, match="at least 2 pairs"):
        pca_vector(model, PAIRS[:1], 1)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        probe_vector(model, PAIRS[:1], 1)
    with pytest.raises(ValueError, match=r"pairs \[1\] have the same text on both sides"):
        pca_vector(model, [PAIRS[0], ("Same", "Same"), PAIRS[2]], 1)
    with pytest.raises(ValueError, match="same text on both sides"):
        probe_vector(model, [PAIRS[0], ("Same", "Same")], 1)
    with pytest.raises(ValueError, match="method must be one of"):
        pca_vector(model, PAIRS, 1, method="pca")
    with pytest.raises(ValueError, match="C .* must be > 0"):
        probe_vector(model, PAIRS, 1, C=0.0)
    with pytest.raises(ValueError, match="a probe needs both classes"):
        probe_direction(torch.randn(3, 8), torch.randn(0, 8))
    with pytest.raises(ValueError, match="do not vary"):
        pca_direction(torch.ones(3, 8), torch.zeros(3, 8), "pca_diff")
    # a probe stopped early warns with the accuracy it reached
    planted, pos, neg = _planted(0)
    with pytest.warns(ProbeConvergenceWarning, match=r"did not converge in max_iter=1 .*training accuracy \d\.\d{3}"):
        probe_direction(pos, neg, C=100.0, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProbeConvergenceWarning)
        probe_direction(pos, neg, C=0.01)  # a converged fit is silent
    # without scikit-learn: an ImportError naming the extra
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match=r"actlens\[probe\]"):
        probe_vector(model, PAIRS, 1)
