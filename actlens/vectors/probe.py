"""A linear probe's direction: logistic regression on the two sides of contrast pairs (AxBench's "probe").

Each text is read as :func:`actlens.mean_diff_vector` reads it; the first texts of the pairs are
class 1, the second texts class 0, and scikit-learn's ``LogisticRegression`` (L2 penalty, strength
``1/C``, with an intercept) is fitted on the raw activations. The direction is ``coef_``: it points
toward the first texts.

What the regularisation does: ``coef_``'s norm is not a steering size. With weak regularisation
(large ``C``) and separable classes (the usual case: a few dozen pairs in hundreds of dimensions) the
norm grows without bound as the fit tends to the max-margin separator; strong regularisation (small
``C``) shrinks it toward zero, and the direction then tends to the difference of the class means (the
gradient at zero), i.e. toward :func:`actlens.mean_diff_vector`'s direction. So only the direction is
kept, and the vector is scaled to the norm of the pairs' mean difference, so a coefficient means
roughly what it means for a mean-difference vector at the same layer (calibrate to a KL budget with
:func:`actlens.analysis.calibrate` to compare methods at equal effect size).

Needs scikit-learn (``pip install "actlens[probe]"``).
"""

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import validation as _validation
from actlens.core.types import ReadPosition
from actlens.vectors.extraction import read_pairs
from actlens.vectors.steering_vector import SteeringVector, from_values


class ProbeConvergenceWarning(UserWarning):
    """The logistic regression stopped at ``max_iter`` before converging (the message gives its accuracy)."""


def _logistic_regression():
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as err:
        raise ImportError("probe_vector needs scikit-learn, which is not installed; install the extra with "
                          "pip install \"actlens[probe]\" (or pip install 'scikit-learn>=1.3')") from err
    return LogisticRegression


def probe_direction(
    pos: Float[Tensor, "n d_model"], neg: Float[Tensor, "n d_model"], *, C: float = 1.0, max_iter: int = 1000
) -> tuple[Float[Tensor, " d_model"], float]:
    """The unit direction of a logistic probe (``pos`` = class 1) and its training accuracy.

    Warns :class:`ProbeConvergenceWarning` (with the accuracy reached) if the fit does not converge.

    >>> g = torch.Generator().manual_seed(0)
    >>> planted = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    >>> pos = torch.randn(20, 16, generator=g) + 2 * planted
    >>> neg = torch.randn(20, 16, generator=g) - 2 * planted
    >>> d, accuracy = probe_direction(pos, neg, C=0.1)
    >>> bool(d @ planted > 0.8), accuracy
    (True, 1.0)
    """
    from sklearn.exceptions import ConvergenceWarning

    LogisticRegression = _logistic_regression()
    C = _validation.finite("C", C)
    if not C > 0:
        raise ValueError(f"C (the inverse regularisation strength) must be > 0, got {C}; e.g. C=1.0")
    max_iter = _validation.positive_int("max_iter", max_iter)
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise ValueError(f"pos and neg must be [n, d_model] with one d_model, got {tuple(pos.shape)} and "
                         f"{tuple(neg.shape)}")
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"a probe needs both classes: got {len(pos)} positive and {len(neg)} negative examples")
    x = torch.cat([pos, neg]).double().cpu().numpy()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    probe = LogisticRegression(C=C, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(x, y)
    accuracy = float(probe.score(x, y))
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        warnings.warn(f"the logistic probe did not converge in max_iter={max_iter} iterations (training accuracy "
                      f"{accuracy:.3f}); raise max_iter, or lower C (stronger regularisation converges faster)",
                      ProbeConvergenceWarning, stacklevel=2)
    coef = torch.from_numpy(probe.coef_[0])
    norm = torch.linalg.vector_norm(coef)
    if not norm > 0:
        raise ValueError("the probe's coefficients are all zero (the classes cannot be told apart at this layer "
                         "and read position); use pairs whose texts differ there")
    return (coef / norm).float(), accuracy


def probe_vector(
    model: TransformerBridge,
    pairs: Sequence[tuple[str, str]],
    layer: int,
    *,
    read_position: ReadPosition | int = "last",
    C: float = 1.0,
    max_iter: int = 1000,
    batch_size: int = 16,
) -> SteeringVector:
    """A logistic probe's direction at ``layer`` (first texts vs second texts) as a one-row vector.

    Needs at least 2 pairs with two different texts each. The unit ``coef_`` direction is scaled to
    the norm of the pairs' mean difference (see the module docstring for why ``coef_``'s own norm is
    not used); ``+`` moves toward the first text of each pair. ``kind="probe"``; ``notes`` records
    ``C``, the training accuracy and the scale. Apply with ``align="all"``.

    >>> from actlens.models.tiny import tiny_model
    >>> v = probe_vector(tiny_model(), [("I love it", "I hate it"), ("Great", "Awful")], layer=1)
    >>> v.kind, v.k
    ('probe', 1)
    """
    _logistic_regression()  # the missing extra is reported before any forward pass
    reads = read_pairs(model, pairs, layer, read_position=read_position, batch_size=batch_size, min_pairs=2,
                       method="a probe (one example per class is no fit)")
    direction, accuracy = probe_direction(reads.pos, reads.neg, C=C, max_iter=max_iter)
    scale = reads.mean_diff_norm()
    notes = (f"probe: logistic regression (L2, C={C:g}) on {len(reads.pos)} pairs, training accuracy {accuracy:.3f}, "
             f"unit coef_ direction scaled to the mean difference's norm {scale:.4g}")
    return from_values(model, layer, (direction * scale)[None], "probe", notes=notes,
                       **reads.provenance(read_position))


__all__ = ["ProbeConvergenceWarning", "probe_direction", "probe_vector"]
