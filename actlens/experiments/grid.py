"""What a sweep runs: the :class:`Grid` of settings over vector recipes.

The recipes (:class:`VectorSpec`, :func:`pair_spec`, :func:`mean_diff_spec`) live in
:mod:`actlens.vectors.specs` and are re-exported here. A :class:`Grid` crosses vectors,
layers, coefficients, prompts and seeds with the controls; :func:`actlens.experiments.sweeps.sweep` runs it.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from actlens.core import validation as _validation
from actlens.vectors.specs import VectorSpec, mean_diff_spec, pair_spec

Condition = Literal["unsteered", "steered", "random", "prompting"]
Control = Literal["unsteered", "random", "prompting"]
CONTROLS: tuple[str, ...] = get_args(Control)


def _tuple(name: str, values: object, kind: type | tuple[type, ...]) -> tuple:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | range):
        raise TypeError(f"{name} must be a list, got {type(values).__name__} {values!r}")
    out = tuple(values)
    if not out:
        raise ValueError(f"{name} is empty; a sweep needs at least one value in each of vectors, layers, coeffs, "
                         "prompts and seeds")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise TypeError(f"{name} must hold {getattr(kind, '__name__', kind)} values, got {v!r}")
    return out


@dataclass(frozen=True)
class Setting:
    """One cell of the grid: a condition with its vector, layer and coefficient (None for controls without)."""

    condition: str
    vector: str
    layer: int | None
    coeff: float | None


@dataclass(frozen=True)
class Grid:
    """The settings of a sweep. Coefficients must be finite; every list must be non-empty and hold
    each value once (a repeated layer, coefficient, prompt, seed or control is an error: rows are
    keyed by setting, prompt and seed, so repeats could only be collapsed); vector names are unique."""

    vectors: Sequence[VectorSpec]  # any sequences; stored as tuples
    layers: Sequence[int]
    coeffs: Sequence[float]
    prompts: Sequence[str]
    seeds: Sequence[int] = (0,)
    controls: Sequence[str] = CONTROLS
    control_seed: int = 0

    def __post_init__(self) -> None:
        vectors = _tuple("vectors", self.vectors, VectorSpec)
        names = [v.name for v in vectors]
        if len(set(names)) != len(names):
            raise ValueError(f"vector names must be unique, got {names}")
        coeffs = tuple(_validation.finite("coeffs[]", c) for c in _tuple("coeffs", self.coeffs, (int, float)))
        controls = tuple(self.controls)
        for c in controls:
            _validation.choice("controls[]", c, CONTROLS)
        for key, value in (("vectors", vectors), ("layers", _tuple("layers", self.layers, int)), ("coeffs", coeffs),
                           ("prompts", tuple(_validation.texts("prompts", list(self.prompts)))),
                           ("seeds", tuple(_validation.seed(s, name="seeds[]")
                                           for s in _tuple("seeds", self.seeds, int))),
                           ("controls", controls),
                           ("control_seed", _validation.seed(self.control_seed, name="control_seed"))):
            object.__setattr__(self, key, value)
        for key in ("layers", "coeffs", "prompts", "seeds", "controls"):
            values = getattr(self, key)
            repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
            if repeated:  # rows are keyed by (setting, prompt, seed): a repeat would be collapsed into one row
                raise ValueError(
                    f"Grid {key} has repeated values {repeated}; every row of a sweep is keyed by its setting, "
                    f"prompt and seed, so repeats would be collapsed. Pass each value once (for more samples of "
                    f"one setting, add seeds)")

    def settings(self) -> list[Setting]:
        """Unsteered first, then per vector: prompting, then steered and random per layer and coefficient."""
        out = [Setting("unsteered", "", None, None)] if "unsteered" in self.controls else []
        for spec in self.vectors:
            if "prompting" in self.controls and spec.prefix:
                out.append(Setting("prompting", spec.name, None, None))
            for layer in self.layers:
                for coeff in self.coeffs:
                    out.append(Setting("steered", spec.name, layer, coeff))
                    if "random" in self.controls:
                        out.append(Setting("random", spec.name, layer, coeff))
        return out

    def config(self) -> dict:
        """A JSON-able description (recipes, not functions) for hashes and manifests."""
        return dict(vectors=[dict(name=v.name, recipe=v.recipe, align=v.align, position=v.position, prefix=v.prefix)
                             | v.scope_config() for v in self.vectors],
                    layers=list(self.layers), coeffs=list(self.coeffs), prompts=list(self.prompts),
                    seeds=list(self.seeds), controls=list(self.controls), control_seed=self.control_seed)


__all__ = ["CONTROLS", "Condition", "Control", "Grid", "Setting", "VectorSpec", "mean_diff_spec", "pair_spec"]
