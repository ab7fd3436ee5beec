"""The final residual stream and the unembedding, kept apart so logits can be made in small blocks.

Per-token analyses (KL, entropy, top-1 flips) need the whole next-token distribution at
every position, but never all positions at once. A 16 x 256 batch of SmolLM2 logits is
805 MB of float32; allocating, soft-maxing and freeing tensors that size cost about as much
as the forward pass that made them (``actlens.kl_per_token`` ran at 0.58x the throughput of
its three forwards). So :func:`final_hidden` stops the forward at the unembedding's input
(the residual after the final norm, ``d_model`` numbers per position), and callers apply
the returned unembedding to a few dozen positions at a time.

The split is used only where it is exact: on first use per model, :func:`unembedding`
compares ``unembed(final hidden)`` with the model's own logits on a two-token input. A model
whose logits are not a plain function of that input (say, soft-capping after the head) gets
``None``, and :func:`final_hidden` then returns the full logits with an identity "head".
"""

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import TransformerBridge

from actlens.models.model import fast_tree, forward, padding, state


class _Stop(Exception):
    """Raised by the capture hook to end a forward at the unembedding's input."""


def _capture(model: TransformerBridge, module: nn.Module, tokens: Tensor, attention_mask: Tensor | None
             ) -> Tensor | None:
    """The input of ``module`` in a forward of ``tokens`` (None if the forward never calls it)."""
    seen: list[Tensor] = []

    def grab(_module, args, kwargs):
        seen.append(args[0] if args else next(iter(kwargs.values())))
        raise _Stop

    handle = module.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        forward(model, tokens, attention_mask)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0] if seen else None


def unembedding(model: TransformerBridge) -> nn.Module | None:
    """The module mapping the final residual to logits, or None where that split is not exact.

    >>> from actlens.models.tiny import tiny_model
    >>> type(unembedding(tiny_model())).__name__
    'Linear'
    """
    st = state(model)
    key = "fast" if fast_tree(model) is not None else "bridge"
    if key not in st.unembedding:
        st.unembedding[key] = _checked(model)
    return st.unembedding[key]


def _checked(model: TransformerBridge) -> nn.Module | None:
    fast = fast_tree(model)
    module = fast.get_output_embeddings() if fast is not None else getattr(model, "unembed", None)
    if not isinstance(module, nn.Module):
        return None
    tokens = torch.tensor([[0, min(1, int(model.cfg.d_vocab) - 1)]])
    with torch.inference_mode(), padding(model, [0], [2]):
        full = forward(model, tokens).float()
        hidden = _capture(model, module, tokens, None)
        if hidden is None:  # the forward does not go through this module
            return None
        split = module(hidden).float()
    scale = float(full.abs().max()) or 1.0
    same = split.shape == full.shape and bool(torch.allclose(split, full, rtol=1e-4, atol=1e-4 * scale))
    return module if same else None


def final_hidden(
    model: TransformerBridge, tokens: Tensor, attention_mask: Tensor | None = None
) -> tuple[Float[Tensor, "batch pos d"], nn.Module]:
    """``(hidden, head)`` with ``head(hidden)`` the logits of ``forward(model, tokens, mask)``.

    ``hidden`` is the unembedding's input, on the model's device and in its dtype; where the
    split is not exact (see :func:`unembedding`) it is the logits and ``head`` the identity.
    Hooks registered on the model (steering) act as in :func:`actlens.models.model.forward`.

    >>> from actlens.models.tiny import tiny_model
    >>> model = tiny_model()
    >>> tokens = torch.tensor([[0, 40, 41]])
    >>> hidden, head = final_hidden(model, tokens)
    >>> tuple(hidden.shape), bool(torch.allclose(head(hidden), forward(model, tokens), atol=1e-5))
    ((1, 3, 64), True)
    """
    module = unembedding(model)
    if module is None:
        return forward(model, tokens, attention_mask), nn.Identity()
    hidden = _capture(model, module, tokens, attention_mask)
    if hidden is None:
        raise RuntimeError(f"the forward of {state(model).name} did not reach its unembedding "
                           f"{type(module).__name__} this time (it did when actlens checked it)")
    return hidden, module


__all__ = ["final_hidden", "unembedding"]
