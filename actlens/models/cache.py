"""A verified on-disk cache of converted model files (e.g. a GGUF file dequantised to safetensors).

One call does everything::

    directory = cached_conversion(name, source, convert, recipe="gguf-f32-1")

- ``name``: the cache folder's name under :func:`cache_root` (``$ACTLENS_CACHE``, default
  ``~/.cache/actlens``), e.g. ``"smollm2-135m-instruct-0.1.2"``; :func:`source_name` makes one
  for an arbitrary file.
- ``source``: the file being converted, or a sequence of files that together make one source
  (e.g. the chunks of a split GGUF). Its identity (per file: size and a hash of its first and
  last MiB) is recorded; a different source under the same name rebuilds the cache.
- ``convert(source, out)``: writes the converted files into the empty folder ``out``. It is
  called only when the cache is missing or fails its check, in a scratch folder
  ``.converting-<name>-<pid>-*`` next to the target that is renamed into place when complete.
- ``recipe``: a short string naming the conversion; change it when the converter's output
  changes, and existing caches are rebuilt.

What is verified. After ``convert`` returns, every file is hashed (SHA-256) and fsynced, and
``actlens-manifest.json`` (format, recipe, source identity, each file's size and SHA-256) is
written last, after an fsync, so a cache without a complete manifest is never trusted. A load
checks that the folder holds exactly the manifest's files with their sizes. The contents are
hashed in full the first time a folder is seen and whenever a file's ``(size, mtime_ns,
ctime_ns, inode)`` differs from the stamp written after the last full check (``.verified.json``):
any write to a file, even one that resets its mtime, changes its ctime. So the second load
costs a few ``stat`` calls (measured on the SmolLM2 cache, 2-core EPYC: 6 ms, against 0.58 s
for a full SHA-256 of its 514 MiB of weights), and bit rot below the file system is not caught
after the first check; call :func:`verify` with ``full=True`` to hash everything regardless.

What happens on a failed check. A mismatch (changed bytes, a truncated or missing file, an
unreadable manifest, another source or recipe) prints one line to stderr
(``actlens: cache <path>: <why>; rebuilding it``) and converts again. Leftover
``.converting-*`` folders whose process is gone (or that are older than a day) are removed
before converting. A cache folder that cannot be written is replaced by
``<tempdir>/actlens-cache-<uid>`` with a one-line warning saying to set ``ACTLENS_CACHE``; if
that fails too, :class:`CacheError` (an ``OSError``) names both paths and ``ACTLENS_CACHE``.

>>> import pathlib, tempfile
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> src = tmp / "weights.txt"; _ = src.write_text("1 2 3")
>>> def double(source, out):
...     _ = (out / "doubled.txt").write_text(" ".join(str(2 * int(x)) for x in source.read_text().split()))
>>> d = cached_conversion("demo", src, double, recipe="double-1", root=tmp / "cache")
>>> (d / "doubled.txt").read_text(), verify(d, src, "double-1") is None
('2 4 6', True)
>>> _ = (d / "doubled.txt").write_text("2 4 7")  # tampered: the next call rebuilds (with a warning)
>>> (cached_conversion("demo", src, double, recipe="double-1", root=tmp / "cache") / "doubled.txt").read_text()
'2 4 6'
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MANIFEST = "actlens-manifest.json"
STAMP = ".verified.json"
FORMAT = 1
STALE_AFTER_S = 24 * 3600  # a scratch folder whose process cannot be checked is stale after a day
_CHUNK = 8 << 20


class CacheError(OSError):
    """The cache can neither be used nor rebuilt; the message names the path and ``ACTLENS_CACHE``."""


def cache_root() -> Path:
    """``$ACTLENS_CACHE`` if set, else ``~/.cache/actlens``."""
    return Path(os.environ.get("ACTLENS_CACHE") or Path.home() / ".cache" / "actlens")


def fallback_root() -> Path:
    """Where conversions go when :func:`cache_root` cannot be written."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"actlens-cache-{uid}"


Source = Path | tuple[Path, ...]


def _as_source(source) -> Source:
    if isinstance(source, list | tuple):
        return tuple(Path(p) for p in source)
    return Path(source)


def _label(source: Source) -> str:
    return f"{source[0].name} (+{len(source) - 1} parts)" if isinstance(source, tuple) else source.name


def source_identity(source: Source) -> dict:
    """Size and SHA-256 of the first and last MiB: cheap even for multi-GB files (per part of a split source)."""
    if isinstance(source, tuple):
        return {"parts": [source_identity(part) for part in source]}
    size = source.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(source, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            h.update(f.read())
    return {"file": source.name, "size": size, "sha256_head_tail": h.hexdigest()}


def source_name(source: Path) -> str:
    """A cache folder name for an arbitrary file: its stem and a short hash of its resolved path."""
    digest = hashlib.sha256(str(Path(source).resolve()).encode()).hexdigest()[:12]
    return f"{Path(source).stem}-{digest}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory
        pass
    finally:
        os.close(fd)


def _read_manifest(directory: Path) -> dict | str:
    """The manifest, or why it cannot be trusted."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest (an interrupted conversion or an older actlens)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"unreadable manifest ({type(err).__name__})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(files, dict) or not files
        or not all(isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
                   for v in files.values())
        or any("/" in k or "\\" in k or k.startswith(".") or k == MANIFEST for k in files)
    ):
        return "malformed manifest"
    return manifest


def verify(directory: Path, source: Source, recipe: str, *, full: bool = False) -> str | None:
    """``None`` if ``directory`` is a complete, unmodified conversion of ``source`` by ``recipe``,
    else a short reason (``"missing"`` if there is no such folder)."""
    source = _as_source(source)
    if not directory.is_dir():
        return "missing"
    manifest = _read_manifest(directory)
    if isinstance(manifest, str):
        return manifest
    if manifest.get("format") != FORMAT or manifest.get("recipe") != recipe:
        return f"made by another converter ({manifest.get('recipe')!r}, expected {recipe!r})"
    if manifest.get("source") != source_identity(source):
        return f"converted from another version of {_label(source)}"
    files: dict = manifest["files"]
    present = {p.name for p in directory.iterdir() if p.name not in (MANIFEST, STAMP)}
    if present != set(files):
        extra, missing = sorted(present - set(files)), sorted(set(files) - present)
        return f"files differ from the manifest (missing {missing}, unexpected {extra})"
    for name, entry in files.items():
        size = (directory / name).stat().st_size
        if size != entry["size"]:
            return f"{name} has {size} bytes, the manifest says {entry['size']} (truncated or overwritten)"
    keys = {name: _stat_key(directory / name) for name in files}
    if not full:
        try:
            if json.loads((directory / STAMP).read_text()) == keys:
                return None
        except (OSError, ValueError):
            pass
    for name, entry in files.items():
        if _sha256(directory / name) != entry["sha256"]:
            return f"{name} does not match its SHA-256 (corrupted or modified)"
    try:  # best effort: a read-only cache is simply hashed again next time
        (directory / STAMP).write_text(json.dumps(keys))
    except OSError:
        pass
    return None


def _warn(message: str) -> None:
    print(f"actlens: {message}", file=sys.stderr)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def clean_stale(root: Path) -> list[Path]:
    """Remove ``.converting-*`` / ``.stale-*`` folders and files left by killed conversions; return them.

    A ``.stale-*`` entry is a file where the cache folder was replaced by one (moved aside on rebuild).
    """
    removed = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        if not path.name.startswith((".converting-", ".stale-")) or path.is_symlink():
            continue
        parts = path.name.split("-")
        pid = next((int(p) for p in reversed(parts[:-1]) if p.isdigit()), None)
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            continue
        if (pid is not None and pid != os.getpid() and not _pid_alive(pid)) or age > STALE_AFTER_S:
            _remove(path)
            removed.append(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_older_layouts(root: Path, prefix: str, current: str) -> list[Path]:
    """Remove cache folders named by an older actlens layout, ``<prefix><version>-<hex or size>``
    (e.g. ``smollm2-135m-instruct-0.1.2-3f2a9c``), other than ``current``; one notice line each.

    Only folders matching actlens's own naming are touched; other package versions in the current
    layout (``<prefix><version>``) are kept, since another environment may use them.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}\d+(?:\.\d+)+-[0-9a-f]+$")
    removed = []
    if not root.is_dir():
        return removed
    for path in sorted(root.iterdir()):
        if path.name != current and pattern.match(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                _warn(f"removed {path}, a cache folder of an older actlens layout (now {root / current})")
                removed.append(path)
    return removed


def _build(target: Path, source: Source, convert: Callable[[Source, Path], None], recipe: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".converting-{target.name}-{os.getpid()}-"))
    try:
        convert(source, scratch)
        files = {}
        for path in sorted(scratch.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.name == MANIFEST:
                raise CacheError(f"the converter wrote {path.name!r} into {scratch}: only plain, visible files")
            _fsync(path)
            files[path.name] = {"size": path.stat().st_size, "sha256": _sha256(path)}
        manifest = {"format": FORMAT, "recipe": recipe, "source": source_identity(source), "files": files}
        with open(scratch / MANIFEST, "w") as f:  # written last: its presence means the rest is complete
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        (scratch / STAMP).write_text(json.dumps({n: _stat_key(scratch / n) for n in files}))
        _fsync(scratch)
        _install(scratch, target, source, recipe)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _fsync(target.parent)
    return target


def _install(scratch: Path, target: Path, source: Source, recipe: str) -> None:
    """Rename ``scratch`` to ``target``, moving a failed cache aside; another process may win the race."""
    for _ in range(3):
        try:
            scratch.rename(target)  # atomic: a half-written cache is never seen
            return
        except OSError:
            if verify(target, source, recipe) is None:  # another process finished first
                return
            aside = target.parent / f".stale-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                target.rename(aside)
            except FileNotFoundError:
                continue
            _remove(aside)  # a folder, or a file that stood where the folder should be
    raise CacheError(f"could not move the converted files into {target}; remove that folder and retry")


def cached_conversion(
    name: str, source: Source | list[Path], convert: Callable[[Source, Path], None], *, recipe: str,
    root: Path | None = None
) -> Path:
    """The verified folder ``root/name`` holding ``convert``'s output for ``source``, converted when needed."""
    source = _as_source(source)
    for part in source if isinstance(source, tuple) else (source,):
        if not part.is_file():
            raise FileNotFoundError(f"the file to convert, {part}, does not exist")
    primary = (root or cache_root()) / name
    problem = verify(primary, source, recipe)
    if problem is None:
        return primary
    if problem != "missing":
        _warn(f"cache {primary}: {problem}; rebuilding it")
    try:
        return _build(primary, source, convert, recipe)
    except CacheError:
        raise
    except OSError as err:
        if err.errno not in _UNWRITABLE:
            raise CacheError(f"cannot convert {source} into {primary} ({err}); if the cache folder is the "
                             f"problem, set ACTLENS_CACHE to another folder") from err
        first = err
    fallback = fallback_root() / name
    if fallback.parent == primary.parent:
        raise CacheError(_unwritable(primary, first))
    if verify(fallback, source, recipe) is None:
        _warn(f"cannot write the cache {primary.parent} ({first.strerror}); using {fallback}. "
              f"Set ACTLENS_CACHE to a writable folder to keep conversions")
        return fallback
    _warn(f"cannot write the cache {primary.parent} ({first.strerror}); converting into {fallback} instead. "
          f"Set ACTLENS_CACHE to a writable folder to keep conversions")
    try:
        return _build(fallback, source, convert, recipe)
    except OSError as err:
        if isinstance(err, CacheError):
            raise
        raise CacheError(_unwritable(primary, first) + f"; the fallback {fallback} failed too ({err})") from err


_UNWRITABLE = {13, 30, 1}  # EACCES, EROFS, EPERM


def _unwritable(primary: Path, err: OSError) -> str:
    return (f"cannot write the actlens cache {primary.parent} ({err.strerror}); set ACTLENS_CACHE to a writable "
            f"folder (e.g. ACTLENS_CACHE=/tmp/actlens-cache) or make {primary.parent} writable")
