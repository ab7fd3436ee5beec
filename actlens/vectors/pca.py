"""PCA directions of contrast pairs (repeng's ``pca_diff`` and ``pca_center``, the "representation engineering" recipe).

Each pair's two texts are read as :func:`actlens.mean_diff_vector` reads them (one activation per
text at ``read_position``), then the first principal component is taken, exactly as repeng 0.4.0's
``read_representations`` does (scikit-learn's ``PCA``, which centres its input):

- ``"pca_diff"``: PCA of the pair differences ``pos_i - neg_i``. Because the differences are centred
  first, this is the axis along which the pairs differ most *from one another*, not their common
  direction: when every pair moves the same way by the same amount, the mean difference is removed and
  the component follows what is left. It recovers a direction along which the pairs differ by varying
  amounts.
- ``"pca_center"``: each pair is centred on its midpoint and both halves (``±(pos_i - neg_i)/2``) go
  into the PCA, so the common direction of the differences is kept: the top right singular vector of
  the differences without centring.

The sign is chosen so that ``+`` moves toward the first text of each pair (the mean difference
projects positively; repeng uses a majority vote of the pairs, which agrees unless the pairs
disagree). PCA gives a unit direction; the vector is that direction scaled to the norm of the
pairs' mean difference, so a coefficient means roughly what it means for
:func:`actlens.mean_diff_vector` at the same layer (calibrate to a KL budget,
:func:`actlens.analysis.calibrate`, to compare methods at equal effect size).
"""

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import validation as _validation
from actlens.core.types import ReadPosition
from actlens.vectors.extraction import read_pairs
from actlens.vectors.steering_vector import SteeringVector, from_values

PcaMethod = Literal["pca_diff", "pca_center"]
PCA_METHODS = ("pca_diff", "pca_center")


def pca_direction(
    pos: Float[Tensor, "n d_model"], neg: Float[Tensor, "n d_model"], method: PcaMethod = "pca_diff"
) -> tuple[Float[Tensor, " d_model"], float]:
    """The unit first principal component of the pairs (sign: toward ``pos``) and its explained-variance ratio.

    >>> g = torch.Generator().manual_seed(0)
    >>> planted = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    >>> neg = torch.randn(8, 16, generator=g)
    >>> pos = neg + torch.linspace(1, 8, 8)[:, None] * planted   # pairs differ along `planted` by varying amounts
    >>> d, ratio = pca_direction(pos, neg)
    >>> bool(d @ planted > 0.99)
    True
    """
    _validation.choice("method", method, PCA_METHODS)
    if pos.shape != neg.shape or pos.ndim != 2:
        raise ValueError(f"pos and neg must both be [n_pairs, d_model], got {tuple(pos.shape)} and {tuple(neg.shape)}")
    if pos.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 pairs, got {pos.shape[0]}; add pairs or use actlens.mean_diff_vector")
    pos, neg = pos.double(), neg.double()
    diff = pos - neg
    if method == "pca_diff":
        train = diff
    else:  # both halves of each pair around its midpoint, as repeng's pca_center
        centre = (pos + neg) / 2
        train = torch.cat([pos - centre, neg - centre])
    train = train - train.mean(0)  # scikit-learn's PCA centres its input
    _, s, vh = torch.linalg.svd(train, full_matrices=False)
    if not s[0] > 0:
        raise ValueError(f"the pairs' {'differences' if method == 'pca_diff' else 'halves'} do not vary (all equal "
                         f"after centring), so {method} has no direction; with pairs that all differ the same way "
                         "use method='pca_center' or actlens.mean_diff_vector")
    direction = vh[0]
    if diff.mean(0) @ direction < 0:
        direction = -direction
    ratio = float(s[0] ** 2 / (s ** 2).sum())
    return direction.float(), ratio


def pca_vector(
    model: TransformerBridge,
    pairs: Sequence[tuple[str, str]],
    layer: int,
    *,
    method: PcaMethod = "pca_diff",
    read_position: ReadPosition | int = "last",
    batch_size: int = 16,
) -> SteeringVector:
    """The first principal component of contrast pairs at ``layer`` (repeng's recipe), as a one-row vector.

    Needs at least 2 pairs with two different texts each. The unit direction is scaled to the norm of
    the pairs' mean difference; ``+`` moves toward the first text of each pair. ``kind`` is the method;
    ``notes`` records the explained-variance ratio and the scale. Apply with ``align="all"``.

    >>> from actlens.models.tiny import tiny_model
    >>> v = pca_vector(tiny_model(), [("I love it", "I hate it"), ("Great", "Awful"), ("Nice", "Bad")], layer=1)
    >>> v.kind, v.k
    ('pca_diff', 1)
    """
    _validation.choice("method", method, PCA_METHODS)
    reads = read_pairs(model, pairs, layer, read_position=read_position, batch_size=batch_size, min_pairs=2,
                       method=f"PCA ({method})")
    direction, ratio = pca_direction(reads.pos, reads.neg, method)
    scale = reads.mean_diff_norm()
    notes = (f"{method}: first principal component (explained variance ratio {ratio:.3f}) of {len(reads.pos)} pairs, "
             f"unit direction scaled to the mean difference's norm {scale:.4g}")
    return from_values(model, layer, (direction * scale)[None], method, notes=notes,
                       **reads.provenance(read_position))


__all__ = ["PCA_METHODS", "PcaMethod", "pca_direction", "pca_vector"]
