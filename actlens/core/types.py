"""Shape aliases and option sets shared across actlens.

Shapes use TransformerLens's vocabulary (``batch pos d_model``); option sets are
``Literal`` types so that a typo is caught by a type checker and by the runtime
checks in :mod:`actlens.core.validation`.
"""

from typing import Literal, get_args

from jaxtyping import Float, Int
from torch import Tensor

Resid = Float[Tensor, "batch pos d_model"]
"""Residual-stream activations of a batch."""
Delta = Float[Tensor, "pos d_model"]
"""Per-position values of a steering vector."""
Logits = Float[Tensor, "batch pos d_vocab"]
Tokens = Int[Tensor, "batch pos"]
Mask = Int[Tensor, "batch pos"]

Align = Literal["front", "mid", "back", "all"]
"""Where a vector's values go: positions ``[a, a+k)`` of the prompt for
``front``/``mid``/``back`` (as in the ActAdd authors' code), or one vector at
every position after BOS, generated tokens included, for ``all``."""
ALIGNS: tuple[str, ...] = get_args(Align)

ShortPrompt = Literal["error", "pad"]
"""What to do with a prompt shorter than a positional vector: raise, or
front-pad the prompt with space tokens after BOS (the authors' ``pad`` mode)."""
SHORT_PROMPTS: tuple[str, ...] = get_args(ShortPrompt)

ReadPosition = Literal["last", "mean"]
"""Which position a mean-difference vector reads: the last real token, or the
mean over the real tokens after BOS. An ``int`` index is accepted too."""

Site = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
"""Where in a layer a vector is read and added, as TransformerLens names the hook points
(``blocks.{L}.hook_{site}``); ``resid_pre`` is ActAdd's site and every default."""
SITES: tuple[str, ...] = get_args(Site)

HookSite = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z"]
"""A :data:`Site`, or ``z``: the per-head attention result ``blocks.{L}.attn.hook_z``
(``[batch, pos, n_heads, d_head]``), read and patched by mediation analyses."""

Phase = Literal["both", "prompt", "generation"]
"""Which tokens all-position steering (``align="all"``) reaches: prompt and generated
tokens (``both``, the default), the prompt only, or generated tokens only (then the prompt,
and so the first new token's distribution, is unsteered)."""
PHASES: tuple[str, ...] = get_args(Phase)
