"""Tiny random-weight models built from a config, for tests, docstrings and benchmarks.

Nothing here downloads: the tokenizer is byte-level with no merges (every byte is a
token, so ``" "`` is a single token, as ActAdd's padding wants) plus BOS, EOS and PAD.
"""

from typing import Literal

import torch

Arch = Literal["llama", "gpt2", "gemma3", "native"]
HFArch = Literal["llama", "gpt2", "gemma3"]
GEMMA_WINDOW = 4  # tiny Gemma 3 sliding window: prompts plus generations easily exceed it

# ChatML as SmolLM2 writes it, with the tiny tokenizer's BOS/EOS in the roles of <|im_start|>/<|im_end|>.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ bos_token + m['role'] + '\\n' + m['content'] + eos_token + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ bos_token + 'assistant\\n' }}{% endif %}"
)


def tiny_tokenizer():
    """A byte-level tokenizer with ``<bos>``, ``<eos>``, a distinct ``<pad>`` and a ChatML-like chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2} | {ch: i + 3 for i, ch in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    tok.add_bos_token = True
    tok.chat_template = CHAT_TEMPLATE
    tok.init_kwargs["name_or_path"] = "in-memory"  # TL 4.3 pops this key at boot
    return tok


def tiny_hf(arch: HFArch = "llama", *, seed: int = 0, d_model: int = 64, n_layers: int = 4):
    """A random-weight Hugging Face causal LM and its tokenizer.

    >>> hf, tok = tiny_hf("gpt2")
    >>> type(hf).__name__
    'GPT2LMHeadModel'
    """
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = tiny_tokenizer()
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=d_model, n_layer=n_layers, n_head=4, **ids)
        return GPT2LMHeadModel(cfg).eval(), tok
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=len(tok), hidden_size=d_model, intermediate_size=2 * d_model,
            num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, tie_word_embeddings=False, **ids,
        )
        return LlamaForCausalLM(cfg).eval(), tok
    if arch == "gemma3":  # sliding-window layers (window GEMMA_WINDOW) and one global layer; scaled embeddings
        cfg = Gemma3TextConfig(
            vocab_size=len(tok), hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
            num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
            sliding_window=GEMMA_WINDOW, max_position_embeddings=256, tie_word_embeddings=True,
            layer_types=["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(n_layers)],
            attn_implementation="sdpa", **ids,
        )
        model = Gemma3ForCausalLM(cfg).eval()
        with torch.no_grad():  # random RMSNorm weights (HF initialises them to 0, i.e. scale 1): a stronger test
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.normal_(0.0, 0.3)
        return model, tok
    raise ValueError(f"arch must be 'llama', 'gpt2' or 'gemma3', got {arch!r}")


def tiny_model(arch: Arch = "llama", *, seed: int = 0, d_model: int = 64, n_layers: int = 4):
    """A tiny actlens-ready bridge: a wrapped Hugging Face model, or a TL native model.

    >>> model = tiny_model("native")
    >>> model.cfg.n_layers
    4
    """
    from actlens.models.model import load_model

    if arch != "native":
        hf, tok = tiny_hf(arch, seed=seed, d_model=d_model, n_layers=n_layers)
        return load_model(hf, tokenizer=tok)
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    tok = tiny_tokenizer()
    cfg = TransformerBridgeConfig(
        d_model=d_model, d_head=16, n_layers=n_layers, n_ctx=256, d_vocab=len(tok),
        act_fn="gelu_new", normalization_type="LN", seed=seed,
    )
    bridge = TransformerBridge.boot_native(cfg, tokenizer=tok, device="cpu", model_name="tiny-native")
    return load_model(bridge)


TINY: dict[str, Arch] = {"tiny": "llama", "tiny-llama": "llama", "tiny-gpt2": "gpt2", "tiny-native": "native"}
"""Model names that mean a tiny random-weight model (``actlens figures --model tiny``, ``actlens diagnose``)."""


def load_named(name: str):
    """A tiny model for a name in :data:`TINY`, else whatever :func:`actlens.load_model` makes of ``name``.

    >>> load_named("tiny-gpt2").cfg.n_layers
    4
    """
    if name in TINY:
        return tiny_model(TINY[name])
    from actlens.models.model import load_model

    try:
        return load_model(name)
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "memory" not in str(err).lower():
            raise
        raise ValueError(f"model {name!r} does not fit in memory on this machine ({err}); pick a smaller model, "
                         "e.g. the default smollm2-135m, or --model tiny") from err
