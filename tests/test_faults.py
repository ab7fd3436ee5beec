"""Fault injection: nothing actlens reads back from disk is trusted blindly.

Caches are exercised with a small injectable converter (fast); the one test that corrupts the
embedded SmolLM2 cache itself is ``slow`` and uses a private ``ACTLENS_CACHE``.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from actlens import cache

RECIPE = "test-1"


def _convert(source: Path, out: Path) -> None:
    """A stand-in converter: float32 safetensors of the source's numbers, and a config."""
    values = torch.tensor([float(x) for x in source.read_text().split()])
    safetensors.torch.save_file({"w": values.repeat(256)}, out / "model.safetensors")
    (out / "config.json").write_text('{"n": %d}' % len(values))


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, source, out):
        self.calls += 1
        _convert(source, out)


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "src.txt"
    path.write_text("1 2 3 4")
    return path


def _weights(directory: Path) -> torch.Tensor:
    return safetensors.torch.load_file(directory / "model.safetensors")["w"]


def _load(src, root, conv=None):
    return cache.cached_conversion("m", src, conv or _convert, recipe=RECIPE, root=root)


def test_second_call_reuses_the_cache(src, tmp_path):
    conv = Counting()
    first = _load(src, tmp_path / "c", conv)
    assert _load(src, tmp_path / "c", conv) == first and conv.calls == 1
    manifest = (first / cache.MANIFEST).read_text()
    assert '"sha256"' in manifest and '"recipe": "test-1"' in manifest
    assert cache.verify(first, src, RECIPE, full=True) is None


def _corrupt_random(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-64:] = os.urandom(64)
    path.write_bytes(bytes(data))


def _scale(path: Path) -> None:
    # Same size, valid safetensors, scaled values: the fluent-garbage failure of the issue.
    safetensors.torch.save_file({"w": _weights(path.parent) * 3}, path)


def _corrupt_keep_times(path: Path) -> None:
    st = path.stat()
    _corrupt_random(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the mtime says nothing changed; the ctime does


@pytest.mark.parametrize("damage", [_corrupt_random, _scale, _corrupt_keep_times,
                                    lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated
                                    lambda p: p.unlink(),
                                    lambda p: (p.parent / cache.MANIFEST).unlink(),  # killed before the manifest
                                    lambda p: (p.parent / cache.MANIFEST).write_text("{not json"),
                                    lambda p: (p.parent / "extra.safetensors").write_bytes(b"x")],
                         ids=["random-bytes", "scaled", "mtime-reset", "truncated", "missing", "no-manifest",
                              "bad-manifest", "extra-file"])
def test_damaged_cache_is_rebuilt_with_one_warning(src, tmp_path, capsys, damage):
    conv = Counting()
    directory = _load(src, tmp_path / "c", conv)
    good = _weights(directory).clone()
    damage(directory / "model.safetensors")
    capsys.readouterr()
    assert _load(src, tmp_path / "c", conv) == directory
    err = capsys.readouterr().err
    assert conv.calls == 2 and err.count("\n") == 1 and "rebuilding it" in err and str(directory) in err
    assert torch.equal(_weights(directory), good)
    assert cache.verify(directory, src, RECIPE, full=True) is None


def test_changed_source_or_recipe_rebuilds(src, tmp_path):
    conv = Counting()
    directory = _load(src, tmp_path / "c", conv)
    src.write_text("5 6 7 8")
    assert _weights(_load(src, tmp_path / "c", conv))[0] == 5 and conv.calls == 2
    cache.cached_conversion("m", src, conv, recipe="test-2", root=tmp_path / "c")
    assert conv.calls == 3 and '"test-2"' in (directory / cache.MANIFEST).read_text()


def test_killed_conversion_leaves_nothing_behind(src, tmp_path):
    """SIGKILL a conversion midway: the next call removes its scratch folder and converts."""
    root = tmp_path / "c"
    script = textwrap.dedent(f"""
        import importlib.util, time
        from pathlib import Path
        spec = importlib.util.spec_from_file_location("cache", {cache.__file__!r})  # no torch import: fast
        cache = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cache)
        def slow(source, out):
            (out / "model.safetensors").write_bytes(b"0" * 1000)
            print("writing", flush=True)
            time.sleep(60)
        cache.cached_conversion("m", Path({str(src)!r}), slow, recipe="test-1", root=Path({str(root)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = [p for p in root.iterdir() if p.name.startswith(".converting-")]
    assert len(leftovers) == 1 and not (root / "m").exists()
    directory = _load(src, root)
    assert sorted(p.name for p in root.iterdir()) == ["m"] and cache.verify(directory, src, RECIPE) is None


def test_old_scratch_folder_without_pid_is_removed_after_a_day(tmp_path):
    old = tmp_path / ".converting-abcdefgh"
    old.mkdir()
    fresh = tmp_path / ".converting-qrstuvwx"
    fresh.mkdir()
    live = tmp_path / f".converting-m-{os.getpid()}-abcdefgh"
    live.mkdir()
    os.utime(old, (time.time() - 2 * cache.STALE_AFTER_S,) * 2)
    assert cache.clean_stale(tmp_path) == [old]
    assert fresh.exists() and live.exists()


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes through chmod; /sys refuses even root
        return Path("/sys/actlens-test-cache")
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o500)
    return path


def test_unwritable_cache_falls_back_to_a_temporary_folder(src, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cache, "fallback_root", lambda: tmp_path / "fallback")
    ro = _unwritable(tmp_path)
    directory = _load(src, ro)
    err = capsys.readouterr().err
    assert directory == tmp_path / "fallback" / "m" and "ACTLENS_CACHE" in err and err.count("\n") == 1
    assert _load(src, ro) == directory  # reused, not converted again


def test_unwritable_cache_and_fallback_raise_a_clear_error(src, tmp_path, monkeypatch):
    ro = _unwritable(tmp_path)
    monkeypatch.setattr(cache, "fallback_root", lambda: ro / "fallback")
    with pytest.raises(cache.CacheError, match=r"ACTLENS_CACHE.*fallback"):
        _load(src, ro)


def test_read_only_valid_cache_loads_and_checks_in_full(src, tmp_path, monkeypatch):
    """Without a writable stamp a cache is hashed on every load, and still accepted."""
    directory = _load(src, tmp_path / "c")
    (directory / cache.STAMP).unlink()
    real_write = Path.write_text

    def refuse(self, *a, **k):
        if self.name == cache.STAMP:
            raise PermissionError(13, "read-only")
        return real_write(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", refuse)
    assert _load(src, tmp_path / "c", lambda *_: pytest.fail("converted again")) == directory
    _corrupt_random(directory / "model.safetensors")
    assert "SHA-256" in cache.verify(directory, src, RECIPE)


@pytest.mark.slow
def test_embedded_cache_with_random_bytes_is_rebuilt(tmp_path, monkeypatch, capsys):
    """The issue's finding: random bytes in the cached SmolLM2 weights loaded silently (NaN, empty output)."""
    import actlens
    from actlens import embedded

    monkeypatch.setenv("ACTLENS_CACHE", str(tmp_path))
    directory = embedded.converted_dir()
    weights = directory / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        f.write(os.urandom(1 << 20))
    capsys.readouterr()
    model = actlens.load_model()
    assert "rebuilding it" in capsys.readouterr().err
    out = actlens.generate(model, "The capital of France is", temperature=0, max_new_tokens=4)
    assert "Paris" in out.completions[0]
