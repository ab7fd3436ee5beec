"""Vector recipes: how to build a steering vector at any layer, how to apply it, and its prompting baseline.

A :class:`VectorSpec` builds a :class:`~actlens.SteeringVector` at any layer; :func:`pair_spec` and
:func:`mean_diff_spec` are the two recipes of the paper. Sweeps (:mod:`actlens.experiments`) cross them with
layers, coefficients and prompts; analyses (:mod:`actlens.analysis.ablation`) build them per layer.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from transformer_lens import TransformerBridge

from actlens.core import validation as _validation
from actlens.core.positions import Placement, Scope
from actlens.core.types import ALIGNS, Align, Phase
from actlens.vectors.extraction import actadd_vector, mean_diff_vector
from actlens.vectors.steering_vector import SteeringVector


@dataclass(frozen=True)
class VectorSpec:
    """How to build a steering vector at any layer, how to apply it, and its prompting baseline.

    ``prefix`` is prepended to each prompt for the prompting control (``None``: no such control).
    ``recipe`` describes ``build`` for config hashes and manifests.
    """

    name: str
    build: Callable[[TransformerBridge, int], SteeringVector] = field(repr=False, compare=False)
    align: Align = "front"
    position: int | None = None
    prefix: str | None = None
    recipe: str = ""
    phase: Phase = "both"  # phase, span, include_bos: which tokens align="all" steers (actlens.steer)
    span: tuple[int, int | None] | None = None
    include_bos: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a VectorSpec needs a non-empty name, got {self.name!r}")
        _validation.choice("align", self.align, ALIGNS)
        Placement(self.align, 1, False, True, Scope(self.phase, self.span, self.include_bos))  # raises if they clash

    def scope_config(self) -> dict:
        """The scope when not the default (so configs, and their hashes, of unscoped sweeps stay as they were)."""
        if Scope(self.phase, self.span, self.include_bos).default:
            return {}
        return dict(phase=self.phase, span=self.span, include_bos=self.include_bos)


def pair_spec(plus: str, minus: str, *, name: str | None = None, align: Align = "front",
              position: int | None = None, prefix: str | None = "auto") -> VectorSpec:
    """ActAdd pair ``plus - minus`` (space-padded) at each layer; prompting prefix ``plus`` by default.

    >>> pair_spec("Love", "Hate").name, pair_spec(" weddings", " ").prefix
    ('Love-Hate', 'weddings ')
    """
    _validation.actadd_pair(_validation.texts("plus", [plus], allow_empty_string=True)[0],
                            _validation.texts("minus", [minus], allow_empty_string=True)[0])
    if prefix == "auto":
        prefix = f"{plus.strip()} " if plus.strip() else None
    return VectorSpec(name or f"{plus.strip()}-{minus.strip()}", lambda m, layer: actadd_vector(m, plus, minus, layer),
                      align=align, position=position, prefix=prefix, recipe=f"actadd {plus!r} - {minus!r}")


def mean_diff_spec(pairs: Sequence[tuple[str, str]], *, name: str, read_position: str = "last",
                   prefix: str | None = None, phase: Phase = "both", span: tuple[int, int | None] | None = None,
                   include_bos: bool = False) -> VectorSpec:
    """Mean difference over contrast pairs at each layer, added at every position (``align="all"``)
    of the tokens ``phase`` / ``span`` / ``include_bos`` choose (see :func:`actlens.steer`)."""
    pairs = [tuple(p) for p in pairs]
    return VectorSpec(name, lambda m, layer: mean_diff_vector(m, pairs, layer, read_position=read_position),
                      align="all", prefix=prefix, recipe=f"mean_diff {pairs!r} read {read_position}",
                      phase=phase, span=span, include_bos=include_bos)


__all__ = ["VectorSpec", "mean_diff_spec", "pair_spec"]
