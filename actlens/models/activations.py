"""Residual-stream activations at chosen layers, never a full cache.

Capture goes through the bridge's ``blocks.{L}.hook_{site}`` HookPoints (so what is
cached is exactly what a steering hook would modify), on the fast tree when there is one.
"""

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import TransformerBridge

from actlens.core.types import Site
from actlens.models.model import check_layer, check_site, forward, hook_name


def resid_pre(
    model: TransformerBridge,
    tokens: Tensor,
    layers: Sequence[int],
    attention_mask: Tensor | None = None,
) -> dict[int, Float[Tensor, "batch pos d_model"]]:
    """``blocks.{L}.hook_resid_pre`` for each of ``layers``, in one forward pass.

    Runs under ``torch.no_grad`` (not inference mode), so the returned tensors are ordinary
    tensors that callers may modify.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model("gpt2")
    >>> acts = resid_pre(model, torch.tensor([[0, 40, 41]]), [1, 2])
    >>> tuple(acts[2].shape)
    (1, 3, 64)
    """
    return activations(model, tokens, layers, attention_mask)


def activations(
    model: TransformerBridge,
    tokens: Tensor,
    layers: Sequence[int],
    attention_mask: Tensor | None = None,
    *,
    site: Site = "resid_pre",
) -> dict[int, Float[Tensor, "batch pos d_model"]]:
    """``blocks.{L}.hook_{site}`` for each of ``layers``, in one forward pass (:func:`resid_pre` at any site).

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model("gpt2")
    >>> tokens = torch.tensor([[0, 40, 41]])
    >>> post, pre = activations(model, tokens, [1], site="resid_post"), resid_pre(model, tokens, [2])
    >>> bool(torch.equal(post[1], pre[2]))
    True
    """
    site = check_site(model, site)
    layers = [check_layer(model, layer) for layer in layers]
    found: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(resid: Tensor, *, hook) -> None:
            found[layer] = resid.detach().clone()

        return hook

    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name(layer, site), keep(layer)) for layer in layers]):
        forward(model, tokens, attention_mask)
    return found
