"""The steering-vector type: per-position values at one layer, with their provenance, saved and loaded.

A :class:`SteeringVector` is immutable and carries its provenance: the layer (its hook
name follows from it, :func:`actlens.hook_name`), the prompts and their tokens, the model's
identity, and whether TransformerLens compatibility mode (weight processing, which changes
LayerNorm models' residuals) was on. It is saved as safetensors with JSON metadata (never
pickle), and a file is checked field by field when loaded. :func:`from_values` builds one,
:func:`check_vector` checks one against a model, and :func:`random_like` is the norm-matched
random control. The extraction functions that make vectors from a model are in
:mod:`actlens.vectors.extraction`; :mod:`actlens.vectors` re-exports everything here and registers the
exchange formats (:class:`Codec`) that ``to_gguf`` / ``from_gguf`` use.
"""

import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core import schema as _schema
from actlens.core import validation as _validation
from actlens.core.types import SITES
from actlens.models.model import ModelIdentity, hook_name, identity, n_layers

FORMAT = "actlens.steering_vector/1"


@dataclass(frozen=True)
class Codec:
    """An exchange format for vectors: ``write(vector, path, **options)`` and ``read(path, model)``."""

    write: Callable[..., Path]
    read: Callable[..., dict]


# Exchange formats sit above the type (they import it), so the type finds them here: the package face,
# actlens.vectors, registers each one explicitly (register_codec("gguf", ...)); nothing registers on import.
_CODECS: dict[str, Codec] = {}


def register_codec(name: str, codec: Codec) -> None:
    """Make ``codec`` the reader and writer behind ``SteeringVector.to_<name>`` / ``from_<name>``."""
    _CODECS[name] = codec


def _codec(name: str) -> Codec:
    try:
        return _CODECS[name]
    except KeyError:
        raise RuntimeError(f"no {name!r} codec is registered (registered: {sorted(_CODECS)}); import actlens.vectors, "
                           "whose package face registers the exchange formats") from None


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Per-position values ``[k, d_model]`` to add at ``blocks.{layer}.hook_{site}`` (``site``: ``resid_pre``
    unless the vector was read elsewhere; files written before sites existed load as ``resid_pre``).

    ``bos_row`` says whether row 0 belongs to the BOS position (ActAdd vectors: both prompts
    start with BOS, so that row is zero); front alignment then starts at position 0, and
    otherwise right after BOS.
    """

    _values: Float[Tensor, "pos d_model"] = field(repr=False)
    layer: int
    kind: str  # "actadd" | "mean_diff" | "mean_centred" | "random" | "imported"
    model: ModelIdentity
    compatibility_mode: bool
    bos_row: bool
    prepend_bos: bool = True
    plus: tuple[str, ...] = ()
    minus: tuple[str, ...] = ()
    plus_tokens: tuple[tuple[int, ...], ...] = ()
    minus_tokens: tuple[tuple[int, ...], ...] = ()
    pad_token_id: int | None = None
    pad_source: str | None = None
    read_position: str | None = None
    notes: str = ""
    # Chat-formatted vectors (actlens.vectors.chat): absolute token positions read in each plus text, then
    # each minus text, and a fingerprint of the chat template they were rendered with.
    read_positions: tuple[tuple[int, ...], ...] = ()
    chat_template: str | None = None
    site: str = "resid_pre"  # one of actlens.core.types.SITES

    def __post_init__(self) -> None:
        if self.site not in SITES:
            _validation.choice("site", self.site, SITES)
        # Every way a vector is made (builders, from_values, with_values, random_like) ends here. The largest
        # |value| is read back once, now, so that applying the vector (the overflow check) never syncs a device.
        if math.isfinite(self.peak):
            return
        finite = torch.isfinite(self._values)
        if not bool(finite.all()):
            rows = sorted({int(r) for r in (~finite).nonzero()[:, 0].tolist()})
            raise ValueError(
                f"a {self.kind} steering vector at layer {self.layer} would hold {int((~finite).sum())} non-finite "
                f"values (nan or inf) in row(s) {rows[:8]}; a vector must be finite: check the values passed, or "
                f"the activations they came from (float16 models can overflow; load with dtype=torch.float32)")

    @property
    def peak(self) -> float:
        """The largest absolute value, read once (when the vector is made) and kept; 0 on the meta device."""
        peak = self.__dict__.get("_peak")
        if peak is None:  # first read: at construction, or for a vector unpickled from an actlens without it
            values = self._values.detach()
            peak = 0.0 if values.numel() == 0 or values.is_meta else float(values.abs().max().double())
            object.__setattr__(self, "_peak", peak)
        return peak

    @property
    def values(self) -> Float[Tensor, "pos d_model"]:
        """A copy of the values (the vector itself never changes)."""
        return self._values.clone()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return self.metadata() == other.metadata() and torch.equal(self._values, other._values)

    __hash__ = None  # tensors are not hashable

    @property
    def hook_name(self) -> str:
        """Where the vector was read and is added: ``blocks.{layer}.hook_{site}``."""
        return hook_name(self.layer, self.site)

    def require_site(self, site: str = "resid_pre", *, where: str) -> "SteeringVector":
        """``self`` if it lives at ``site``; else an error naming ``where`` needs it (no silent re-siting)."""
        if self.site != site:
            raise ValueError(
                f"{where} works on vectors at {site!r}, but this vector was read at {self.site!r} "
                f"({self.hook_name}); extract one with site={site!r}, or use steer / generate / kl_per_token / "
                "mediation, which honour every site")
        return self

    @property
    def k(self) -> int:
        return int(self._values.shape[0])

    @property
    def d_model(self) -> int:
        return int(self._values.shape[1])

    def __repr__(self) -> str:
        if len(self.plus) == 1:
            pair = f", plus={self.plus[0]!r}, minus={self.minus[0]!r}"
        else:
            pair = f", {len(self.plus)} positive and {len(self.minus)} negative texts" if self.plus else ""
        at = "" if self.site == "resid_pre" else f", site={self.site!r}"
        return (
            f"SteeringVector({self.kind}, layer={self.layer}{at}, k={self.k}, d_model={self.d_model}, "
            f"model={self.model.name!r}{pair})"
        )

    def norms(self) -> Float[Tensor, " pos"]:
        return torch.linalg.vector_norm(self._values.float(), dim=-1)

    def at_position(self, position: int) -> "SteeringVector":
        """One row as a single-position vector, e.g. to add an ActAdd row at every position."""
        if not -self.k <= position < self.k:
            raise ValueError(f"position must be in [{-self.k}, {self.k}) for this k={self.k} vector, got {position}")
        return replace(self, _values=self._values[position:position + 1 or None].clone(), bos_row=False,
                       read_position=f"row {position % self.k}")

    def at_layer(self, layer: int, *, notes: str = "") -> "SteeringVector":
        """The same values injected at another layer (provenance kept; ``notes`` says so)."""
        return replace(self, layer=layer, notes=notes or self.notes)

    def with_values(self, values: Tensor, *, kind: str | None = None, notes: str = "") -> "SteeringVector":
        """The same provenance with other values (e.g. a norm-matched random control)."""
        if values.shape[-1] != self.d_model or values.ndim != 2:
            raise ValueError(f"values must have shape [k, {self.d_model}], got {tuple(values.shape)}")
        return replace(self, _values=values.detach().clone(), kind=kind or self.kind, notes=notes)

    def check_model(self, model: TransformerBridge) -> None:
        """Raise if the vector cannot be applied to ``model`` (other shape or mode)."""
        other = identity(model)
        mismatch = self.model.shape_mismatch(other)
        if mismatch:
            raise ValueError(
                f"this vector comes from model {self.model.name!r} and does not fit {other.name!r} "
                f"({mismatch}); extract a new vector on this model"
            )
        if other.name != self.model.name:
            warnings.warn(
                f"this vector comes from model {self.model.name!r} but is applied to {other.name!r}; the shapes "
                "match, so it runs, but a residual direction rarely means the same thing in another model",
                stacklevel=3,
            )
        mode = bool(getattr(model, "compatibility_mode", False))
        if mode != self.compatibility_mode:
            raise ValueError(
                f"this vector was extracted with compatibility mode {'on' if self.compatibility_mode else 'off'} "
                f"but the model has it {'on' if mode else 'off'}; LayerNorm residuals differ between modes, "
                "so extract and apply in one mode"
            )

    # --- interchange: llama.cpp / repeng GGUF control vectors, through the registered codec ---------
    def to_gguf(self, path: str | os.PathLike, *, reduce: Literal["error", "sum", "mean", "position"] = "error",
                position: int | None = None, model_hint: str | None = None) -> Path:
        """Write a llama.cpp control vector; see :func:`actlens.vectors.gguf.to_gguf` (lossy for k > 1)."""
        self.require_site("resid_pre", where="a llama.cpp control vector (added to layer outputs)")
        return _codec("gguf").write(self, path, reduce=reduce, position=position, model_hint=model_hint)

    @staticmethod
    def from_gguf(path: str | os.PathLike, model: TransformerBridge) -> dict[int, "SteeringVector"]:
        """Read a llama.cpp / repeng control vector, keyed by actlens layer."""
        return _codec("gguf").read(path, model)

    # --- save / load: safetensors with JSON metadata, never pickle -----------------------
    def metadata(self) -> dict:
        meta = {k: v for k, v in asdict(self).items() if k != "_values"}
        if meta["site"] == "resid_pre":  # resid_pre files stay as they were before sites, readable by older actlens
            del meta["site"]
        meta["hook_name"] = self.hook_name  # recorded for readers of the file; derived from the layer on load
        meta["format"] = FORMAT
        return meta

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors; the provenance is JSON in the header)."""
        from safetensors.torch import save_file

        path = Path(path)
        save_file({"values": self._values.detach().cpu().contiguous()}, path,
                  metadata={"actlens": json.dumps({**self.metadata(), "shape": [self.k, self.d_model]})})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SteeringVector":
        """Read a vector written by :meth:`save`; a corrupt, foreign or inconsistent file raises a
        ``ValueError`` naming the file and the field (see :func:`_fields_from_file`)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no steering-vector file at {path}")
        try:
            with safe_open(path, framework="pt") as f:
                header = f.metadata() or {}
                names = sorted(f.keys())
                values = f.get_tensor("values") if names == ["values"] else None
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(
                f"{path} is not a readable safetensors file ({err}); it may be truncated or corrupt. "
                "Re-save the vector with SteeringVector.save"
            ) from err
        if "values" not in names or "actlens" not in header:
            raise ValueError(f"{path} is a safetensors file but not an actlens steering vector (no 'values'/'actlens' entries)")
        if values is None:
            raise ValueError(f"{path} holds tensors {names}; a steering-vector file holds only 'values'")
        return cls(_values=values, **_fields_from_file(path, header["actlens"], values))


def _fields_from_file(path: Path, text: str, values: Tensor) -> dict:
    """The constructor's fields from a file's JSON metadata, checked against a schema and the values:
    types (booleans as booleans), required and unknown keys, ``hook_name`` matching ``layer``,
    a 2-D float ``values`` of shape ``[k, d_model]`` matching the metadata, bounded sizes."""
    f = _schema.Fields(path, "metadata", _schema.parse_json(path, "metadata 'actlens'", text))
    if f.get("format", lambda v: v == FORMAT, repr(FORMAT)) != FORMAT:
        raise ValueError(f"{path} has an unknown format; expected {FORMAT}")
    m = _schema.Fields(path, "metadata['model']", f.get("model", lambda v: isinstance(v, dict), "an object"))
    model = ModelIdentity(name=m.text("name"), d_model=m.integer("d_model", low=1),
                          n_layers=m.integer("n_layers", low=1), d_vocab=m.integer("d_vocab", low=1))
    m.no_others()
    layer = f.integer("layer", high=model.n_layers)
    site = f.get("site", lambda v: v in SITES, f"one of {list(SITES)}", default="resid_pre")  # older files: resid_pre
    if f.text("hook_name") != hook_name(layer, site):
        raise ValueError(f"{path}: metadata['hook_name'] is {f.obj['hook_name']!r} but layer {layer} at site {site!r} "
                         f"is {hook_name(layer, site)!r}; the file is inconsistent")
    out = dict(
        layer=layer, kind=f.text("kind"), model=model,
        compatibility_mode=f.boolean("compatibility_mode"), bos_row=f.boolean("bos_row"),
        prepend_bos=f.boolean("prepend_bos", default=True), plus=f.strings("plus", default=[]),
        minus=f.strings("minus", default=[]), plus_tokens=f.int_lists("plus_tokens", model.d_vocab, default=[]),
        minus_tokens=f.int_lists("minus_tokens", model.d_vocab, default=[]),
        pad_token_id=f.integer("pad_token_id", high=model.d_vocab, default=None, none=True),
        pad_source=f.text("pad_source", default=None, none=True),
        read_position=f.text("read_position", default=None, none=True), notes=f.text("notes", default=""),
        read_positions=f.int_lists("read_positions", default=[]),  # files from before chat vectors lack it
        chat_template=f.text("chat_template", default=None, none=True), site=site,
    )
    shape = f.get("shape", lambda v: isinstance(v, list) and len(v) == 2 and all(_schema.is_int(x) for x in v),
                  "[k, d_model]", default=None)
    f.no_others()
    if values.ndim != 2 or not values.is_floating_point():
        raise ValueError(
            f"{path}: 'values' must be a 2-D float tensor [k, d_model], got {values.ndim}-D {values.dtype}")
    expected = [shape[0] if shape else values.shape[0], model.d_model]
    if list(values.shape) != expected or not 1 <= values.shape[0] <= _schema.MAX_ITEMS:
        raise ValueError(f"{path}: 'values' has shape {list(values.shape)} but the metadata says [k, d_model] = "
                         f"{expected} (metadata['shape'] and metadata['model']['d_model']); the file is inconsistent")
    if not torch.isfinite(values).all():
        raise ValueError(f"{path}: 'values' holds non-finite values (nan or inf)")
    return out


def from_values(model: TransformerBridge, layer: int, values: Float[Tensor, "pos d_model"], kind: str,
                **kw) -> SteeringVector:
    """A vector for ``model`` at ``layer`` with these values (copied); ``kw`` is the rest of the provenance."""
    with torch.inference_mode(False):  # extraction may run under inference mode; the vector must not be such a tensor
        values = values.detach().clone()
    return SteeringVector(
        _values=values, layer=layer, kind=kind, model=identity(model),
        compatibility_mode=bool(getattr(model, "compatibility_mode", False)), **kw,
    )


def check_vector(model: TransformerBridge, vector: object, *, name: str = "vector") -> SteeringVector:
    """``vector`` if it is a :class:`SteeringVector` that fits ``model``; a clear error otherwise."""
    if not isinstance(vector, SteeringVector):
        raise TypeError(
            f"{name} must be an actlens SteeringVector, got {type(vector).__name__}; build one with "
            "actlens.actadd_vector(model, plus, minus, layer)"
        )
    vector.check_model(model)
    _validation.layer(vector.layer, n_layers(model), name=f"{name}.layer")
    return vector


def random_like(vector: SteeringVector, *, seed: int = 0) -> SteeringVector:
    """A Gaussian control with the same per-position norms (the paper's random-vector control).

    The noise is drawn on the CPU (the same ``seed`` gives the same direction on every device)
    and lands on the vector's device, in its dtype.

    >>> from actlens.models.tiny import tiny_model
    >>> from actlens.vectors import actadd_vector
    >>> v = actadd_vector(tiny_model(), "Love", "Hate", layer=1)
    >>> torch.allclose(random_like(v).norms(), v.norms())
    True
    """
    gen = torch.Generator().manual_seed(_validation.seed(seed))
    noise = torch.randn(vector._values.shape, generator=gen, dtype=torch.float32).to(vector._values.device)
    norms = vector.norms()[:, None]
    scaled = noise / torch.linalg.vector_norm(noise, dim=-1, keepdim=True) * norms
    return vector.with_values(scaled.to(vector._values.dtype), kind="random", notes=f"norm-matched Gaussian, seed {seed}")

__all__ = ["FORMAT", "Codec", "SteeringVector", "register_codec", "check_vector", "from_values", "random_like"]
