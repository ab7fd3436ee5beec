"""Forwards that start at a decoder layer: the layers below it are skipped and it receives a given input.

Analyses that run many forwards which differ only from some layer up compute the layers below once: kl_curve's
coefficients differ from the vector's layer up (:mod:`actlens.analysis.klcurve`), and mediation's patched runs
from the patched component's layer up (:mod:`actlens.analysis.mediation`). :func:`layer_inputs` keeps what each
decoder layer received in a full forward; :func:`resumed` starts a forward at a layer from such an input, with
every hook registered on the model acting from that layer up as in a full forward (a steering hook at the start
layer's ``resid_pre`` included: the kept input is the one from before the layer's hooks).

Done on the Hugging Face fast tree (:func:`actlens.models.model.decoder_layers`) and only where it is exact: on
first use per model and layer, :func:`resumable` compares a resumed forward with a full one. Models without a fast
tree (compatibility mode, native models) are never resumable; callers then run full forwards.
"""

import contextlib
import weakref
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.models.model import decoder_layers, forward, hook_name, padding
from actlens.models.readout import final_hidden, unembedding


class _Stop(Exception):
    """Raised at the unembedding's input to end a resumed forward."""


def resumed(model: TransformerBridge, layer: int, resid: Tensor, tokens: Tensor, mask: Tensor) -> Tensor | None:
    """Final hidden state of a forward whose layer ``layer`` receives ``resid`` (layers below skipped).

    None when the model has no fast tree or no separable unembedding.
    """
    layers, head = decoder_layers(model), unembedding(model)
    if layers is None or head is None:
        return None
    seen: list[Tensor] = []

    def skip(*args, **kwargs):  # a layer below L: its output is never used
        return args[0] if args else kwargs["hidden_states"]

    def put(_module, args, kwargs):
        if args:
            return (resid, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": resid}

    def grab(_module, args, kwargs):
        seen.append(args[0] if args else next(iter(kwargs.values())))
        raise _Stop

    saved = [m.__dict__.get("forward") for m in layers[:layer]]
    handles = [layers[layer].register_forward_pre_hook(put, with_kwargs=True, prepend=True),
               head.register_forward_pre_hook(grab, with_kwargs=True)]
    try:
        for m in layers[:layer]:
            m.forward = skip
        forward(model, tokens, mask)
    except _Stop:
        pass
    finally:
        for m, old in zip(layers[:layer], saved, strict=True):
            if old is None:
                del m.forward
            else:
                m.forward = old
        for h in handles:
            h.remove()
    return seen[0] if seen else None


_EXACT: "weakref.WeakKeyDictionary[TransformerBridge, dict[int, bool]]" = weakref.WeakKeyDictionary()


def resumable(model: TransformerBridge, layer: int) -> bool:
    """Whether starting the fast tree at ``layer`` reproduces a full forward (checked once per model and layer).

    >>> from actlens.models.tiny import tiny_model
    >>> resumable(tiny_model(), 2), resumable(tiny_model("native"), 2)
    (True, False)
    """
    per_model = _EXACT.setdefault(model, {})
    if layer not in per_model:
        tokens = torch.tensor([[0, 1, min(2, int(model.cfg.d_vocab) - 1)]])
        mask = torch.ones_like(tokens)
        unembedding(model)  # its own first-use check runs a forward; not while we capture
        got: list[Tensor] = []
        with torch.inference_mode(), padding(model, [0], [3]), \
                model.hooks(fwd_hooks=[(hook_name(layer), lambda r, hook: got.append(r))]):
            full, _ = final_hidden(model, tokens, mask)
        if not got:
            per_model[layer] = False
        else:
            with torch.inference_mode(), padding(model, [0], [3]):
                part = resumed(model, layer, got[-1], tokens, mask)
            scale = float(full.abs().max()) or 1.0
            per_model[layer] = part is not None and part.shape == full.shape and bool(
                torch.allclose(part.float(), full.float(), rtol=1e-4, atol=1e-5 * scale))
    return per_model[layer]


@contextlib.contextmanager
def layer_inputs(model: TransformerBridge, layers: Sequence[int], into: dict[int, Tensor]) -> Iterator[None]:
    """Inside the block, each forward puts what decoder layer ``l`` receives into ``into[l]``, for ``l`` in
    ``layers``, before any hook of that layer changes it (the input :func:`resumed` replaces). Nothing is kept
    without a fast tree.

    >>> from actlens.models.tiny import tiny_model
    >>> model, kept = tiny_model(), {}
    >>> with torch.inference_mode(), layer_inputs(model, [2], kept):
    ...     full, _ = final_hidden(model, torch.tensor([[0, 40, 41]]))
    >>> with torch.inference_mode(), padding(model, [0], [3]):
    ...     part = resumed(model, 2, kept[2], torch.tensor([[0, 40, 41]]), torch.ones(1, 3, dtype=torch.long))
    >>> bool(torch.equal(part, full))
    True
    """
    found = decoder_layers(model)
    handles = []

    def keep(layer: int):
        def pre(_module, args, kwargs):
            into[layer] = (args[0] if args else kwargs["hidden_states"]).detach()

        return pre

    try:
        if found is not None:
            handles = [found[layer].register_forward_pre_hook(keep(layer), with_kwargs=True, prepend=True)
                       for layer in layers]
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = ["layer_inputs", "resumable", "resumed"]
