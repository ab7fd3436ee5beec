"""Local GGUF model files: check what they are, dequantise once, cache float32 safetensors.

``load_model("path/to/model.gguf")`` (or a folder holding exactly one model GGUF) comes here. A
GGUF is read only through its header first, so a llama.cpp control vector (what
:func:`actlens.vectors.gguf.to_gguf` writes) or an architecture transformers cannot dequantise
is refused with a clear error before any work. Conversion runs transformers' GGUF loader once
and keeps config, tokenizer and float32 weights in the verified cache (:mod:`actlens.models.cache`;
``$ACTLENS_CACHE``, default ``~/.cache/actlens``), keyed by the file's path and checked
against its size and contents.
"""

import json
import os
from pathlib import Path

from actlens.models import cache

CONTROL_VECTOR = "controlvector"
NOT_MODELS = frozenset({"general", "tokenizer", "t5", "umt5"})  # mapping keys, and encoder-decoders


def supported_architectures() -> list[str]:
    """GGUF ``general.architecture`` values transformers can dequantise into a causal LM."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - NOT_MODELS)


def architecture(path: Path) -> str:
    """The file's ``general.architecture``, read from its header; a clear error if it is no GGUF."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except KeyError:
        raise ValueError(f"{path} is a GGUF file without general.architecture; it is not a model file") from None
    except Exception as err:  # gguf raises ValueError, struct.error, OSError... on a bad file
        raise ValueError(f"{path} is not a readable GGUF file ({type(err).__name__}: {err}); it may be truncated "
                         "or another format") from err


def check_model_file(path: Path) -> str:
    """The architecture of a model GGUF, or a ValueError saying why it cannot be loaded."""
    arch = architecture(path)
    if arch == CONTROL_VECTOR:
        raise ValueError(f"{path} is a llama.cpp control vector (general.architecture = 'controlvector'), not a "
                         "model; load the model it steers with load_model(...) and read the vector with "
                         "actlens.vectors.gguf.from_gguf(path, model)")
    supported = supported_architectures()
    if arch not in supported:
        raise ValueError(f"{path} holds a {arch!r} model, which transformers cannot dequantise from GGUF; "
                         f"supported architectures: {', '.join(supported)}. Convert it to safetensors elsewhere "
                         "and pass its folder")
    return arch


def find_model_file(path: str | os.PathLike) -> Path | None:
    """The model GGUF that ``path`` names: the file itself, or the single non-vector ``*.gguf`` in a folder.

    Returns None for a folder with no GGUF (a Hugging Face folder then).
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        return None
    files = sorted(path.glob("*.gguf"))
    models = [f for f in files if architecture(f) != CONTROL_VECTOR]
    if not files or (any(path.glob("*.safetensors")) or any(path.glob("*.bin"))):
        return None  # a Hugging Face folder (weights beside any GGUF win)
    if not models:
        check_model_file(files[0])  # raises the control-vector error
    if len(models) > 1:
        raise ValueError(f"{path} holds {len(models)} model GGUF files ({', '.join(f.name for f in models)}); "
                         "pass the one to load")
    return models[0]


RECIPE = "gguf-f32-1"  # change when convert()'s output changes: existing caches are rebuilt


def converted_file(path: Path) -> Path:
    """The verified cached float32 folder of a local model GGUF (converted on first use)."""
    check_model_file(path)
    return cache.cached_conversion(cache.source_name(path), path, convert, recipe=RECIPE)


def convert(source: Path, out: Path) -> None:
    """Dequantise ``source`` with transformers and write config, tokenizer and float32 safetensors to ``out``."""
    import safetensors.torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
    hf = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32,
                                              local_files_only=True)
    config = hf.config.to_dict()
    config.pop("quantization_config", None)  # the weights we write are plain float32
    (out / "config.json").write_text(json.dumps(config, indent=1))
    weights = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if config.get("tie_word_embeddings"):
        weights.pop("lm_head.weight", None)  # tied to model.embed_tokens.weight
    safetensors.torch.save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    tok.save_pretrained(out)
