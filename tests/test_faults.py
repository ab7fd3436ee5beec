"""Fault injection: nothing actlens reads back from disk is trusted blindly.

Caches are exercised with a small injectable converter (fast); the one test that corrupts the
embedded SmolLM2 cache itself is ``slow`` and uses a private ``ACTLENS_CACHE``.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from actlens.models import cache

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


def test_two_processes_converting_at_once_both_succeed(src, tmp_path):
    root = tmp_path / "c"
    script = textwrap.dedent(f"""
        import importlib.util, time
        from pathlib import Path
        spec = importlib.util.spec_from_file_location("cache", {cache.__file__!r})
        cache = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cache)
        def slow(source, out):
            (out / "model.safetensors").write_bytes(source.read_bytes() * 1000)
            time.sleep(0.5)
        print(cache.cached_conversion("m", Path({str(src)!r}), slow, recipe="test-1", root=Path({str(root)!r})))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate()[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs == [str(root / "m")] * 2
    assert sorted(p.name for p in root.iterdir()) == ["m"] and cache.verify(root / "m", src, RECIPE, full=True) is None


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
    from actlens.models import embedded

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


# --- vector files: content checked, not only format ------------------------------------------
@pytest.fixture(scope="module")
def saved_vector(tmp_path_factory):
    import actlens
    from actlens.models.tiny import tiny_model

    model = tiny_model()
    vector = actlens.actadd_vector(model, "Love", "Hate", layer=2)
    path = vector.save(tmp_path_factory.mktemp("vec") / "v.safetensors")
    return vector, path


def _rewrite(path: Path, out: Path, edit=None, values=None, extra=None) -> Path:
    import json

    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta, tensors = json.loads(f.metadata()["actlens"]), {"values": f.get_tensor("values")}
    if values is not None:
        tensors["values"] = values
    tensors.update(extra or {})
    text = edit(meta) if edit else json.dumps(meta)
    safetensors.torch.save_file(tensors, out, metadata={"actlens": text if isinstance(text, str) else json.dumps(text)})
    return out


def _set(**kw):
    return lambda m: {**m, **kw}


def _drop(key):
    return lambda m: {k: v for k, v in m.items() if k != key}


BAD_VECTOR_FILES = {
    # name: (edit of the metadata, replacement values, extra tensors, expected words in the error)
    "d_model-mismatch": (None, torch.zeros(5, 32), None, r"shape \[5, 32\].*\[5, 64\]"),
    "one-dimensional": (None, torch.zeros(64), None, "2-D float"),
    "three-dimensional": (None, torch.zeros(2, 5, 64), None, "2-D float"),
    "k-mismatch": (_set(shape=[3, 64]), None, None, r"shape \[5, 64\].*\[3, 64\]"),
    "integer-values": (None, torch.zeros(5, 64, dtype=torch.int32), None, "2-D float"),
    "hook-name-disagrees": (_set(hook_name="blocks.3.hook_resid_pre"), None, None, "hook_name.*layer 2"),
    "layer-out-of-range": (_set(layer=9, hook_name="blocks.9.hook_resid_pre"), None, None, r"\['layer'\].*< 4"),
    "layer-as-string": (_set(layer="2"), None, None, r"\['layer'\] must be an int"),
    "bos_row-as-string": (_set(bos_row="no"), None, None, r"\['bos_row'\] must be true or false"),
    "compat-as-string": (_set(compatibility_mode="false"), None, None, r"\['compatibility_mode'\] must be true"),
    "unknown-key": (_set(surprise=1), None, None, r"unknown fields \['surprise'\]"),
    "missing-key": (_drop("kind"), None, None, "lacks the required field 'kind'"),
    "model-missing-d_model": (lambda m: {**m, "model": {"name": "x", "n_layers": 4, "d_vocab": 100}}, None, None,
                              r"metadata\['model'\] lacks the required field 'd_model'"),
    "token-out-of-vocab": (_set(plus_tokens=[[1, 10**9]]), None, None, r"\['plus_tokens'\] must be a list of lists"),
    "texts-not-strings": (_set(plus=[1]), None, None, r"\['plus'\] must be a list of strings"),
    "deep-json": (lambda m: {**m, "notes": [[[[[[[[[["x"]]]]]]]]]]}, None, None, "nested deeper"),
    "very-deep-json": (lambda m: "[" * 100000 + "]" * 100000, None, None, "not valid JSON|nested deeper"),
    "invalid-json": (lambda m: "{not json", None, None, "not valid JSON"),
    "metadata-a-list": (lambda m: [m], None, None, "must be a JSON object"),
    "extra-tensor": (None, None, {"payload": torch.zeros(3)}, r"holds tensors \['payload', 'values'\]"),
    "nan-values": (None, torch.full((5, 64), float("nan")), None, "non-finite"),
}


@pytest.mark.parametrize("case", list(BAD_VECTOR_FILES))
def test_bad_vector_file_is_a_value_error_naming_file_and_field(saved_vector, tmp_path, case):
    from actlens import SteeringVector

    edit, values, extra, words = BAD_VECTOR_FILES[case]
    bad = _rewrite(saved_vector[1], tmp_path / "bad.safetensors", edit, values, extra)
    with pytest.raises(ValueError, match=words) as info:
        SteeringVector.load(bad)
    assert str(bad) in str(info.value)


def test_good_vector_file_round_trips_and_old_files_without_shape_load(saved_vector, tmp_path):
    from actlens import SteeringVector

    vector, path = saved_vector
    assert SteeringVector.load(path) == vector
    assert SteeringVector.load(_rewrite(path, tmp_path / "old.safetensors", _drop("shape"))) == vector


def _control_vector(path: Path, provenance: str | None, directions=(1,), d_model=64) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "controlvector")
    writer.add_uint32("controlvector.layer_count", 3)
    if provenance is not None:
        writer.add_string("actlens.provenance", provenance)
    for d in directions:
        writer.add_tensor(f"direction.{d}", np.ones(d_model, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _provenance(**change):
    import json

    entry = {"direction": 1, "layer": 2, "hook_name": "blocks.2.hook_resid_pre", "kind": "actadd", "k": 1,
             "reduce": None, "plus": ["Love"], "minus": ["Hate"]}
    prov = {"model": {"name": "tiny", "d_model": 64, "n_layers": 4, "d_vocab": 259}, "directions": [entry]}
    for key, value in change.items():
        if key.startswith("entry_"):
            entry[key[6:]] = value
        else:
            prov[key] = value
    return json.dumps(prov)


BAD_PROVENANCE = {
    "invalid-json": ("{oops", "not valid JSON"),
    "a-list": ("[1, 2]", "must be a JSON object"),
    "deep": ("[" * 5000 + "]" * 5000, "nested deeper|not valid JSON"),
    "model-not-object": (_provenance(model="tiny"), r"\['model'\] must be an object"),
    "d_model-string": (_provenance(model={"name": "t", "d_model": "64", "n_layers": 4, "d_vocab": 259}),
                       r"\['d_model'\] must be an int"),
    "unknown-key": (_provenance(extra=1), r"unknown fields \['extra'\]"),
    "hook-name-disagrees": (_provenance(entry_hook_name="blocks.3.hook_resid_pre"), "inconsistent with its layer"),
    "directions-differ": (_provenance(entry_direction=2, entry_layer=3, entry_hook_name="blocks.3.hook_resid_pre"),
                          r"lists directions \[2\] but the file holds direction tensors \[1\]"),
}


@pytest.mark.parametrize("case", list(BAD_PROVENANCE))
def test_bad_gguf_provenance_is_a_value_error_naming_file_and_field(tmp_path, case):
    from actlens.models.tiny import tiny_model
    from actlens.vectors.gguf import from_gguf

    text, words = BAD_PROVENANCE[case]
    path = _control_vector(tmp_path / "cv.gguf", text)
    with pytest.raises(ValueError, match=words) as info:
        from_gguf(path, tiny_model())
    assert str(path) in str(info.value) and "actlens.provenance" in str(info.value)


def test_gguf_with_valid_or_without_provenance_imports(tmp_path):
    from actlens.models.tiny import tiny_model
    from actlens.vectors.gguf import from_gguf

    model = tiny_model()
    assert list(from_gguf(_control_vector(tmp_path / "a.gguf", _provenance()), model)) == [2]
    assert list(from_gguf(_control_vector(tmp_path / "b.gguf", None), model)) == [2]


@pytest.mark.parametrize("obj, words", [
    ({"1": torch.ones(64), "x": torch.ones(64)}, "keys are not all layer numbers"),
    ({1: torch.ones(64, dtype=torch.int64)}, "expected a float tensor"),
    ({1: [1.0] * 64}, "expected a float tensor"),
    ({1: torch.ones(2, 64)}, r"shape \(2, 64\)"),
    ({1: torch.ones(32)}, r"shape \(32,\)"),
], ids=["bad-key", "int-tensor", "list", "two-rows", "short"])
def test_bad_pt_import_is_a_value_error_naming_the_file(tmp_path, obj, words):
    from actlens.models.tiny import tiny_model
    from actlens.vectors.pt import from_pt

    path = tmp_path / "v.pt"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=words) as info:
        from_pt(path, tiny_model(), layer=1)
    assert str(path) in str(info.value) or "v.pt" in str(info.value)


# --- sweep stores: keyed by the model's identity, one writer, corrupt lines located -----------
def _sweep_grid(seeds=(0, 1)):
    from actlens.experiments.sweeps import Grid, pair_spec

    return Grid([pair_spec("Love", "Hate")], layers=[1], coeffs=[2.0], prompts=["I think you", "The day"],
                seeds=list(seeds), controls=("unsteered",))


def _sweep(model, out, seeds=(0, 1), **kw):
    from actlens.experiments.sweeps import Sampling, sweep

    return sweep(model, _sweep_grid(seeds), sampling=Sampling(max_new_tokens=3), out=out, progress=False, **kw)


@pytest.fixture(scope="module")
def llama():
    from actlens.models.tiny import tiny_model

    return tiny_model("llama")


def test_store_from_another_model_with_the_same_name_is_refused(llama, tmp_path):
    from actlens.models.tiny import tiny_model

    out = tmp_path / "s.jsonl"
    _sweep(llama, out, limit=2)
    other = tiny_model("llama", seed=1)  # same name, architecture and shape; other weights
    with pytest.raises(ValueError, match=r"s\.jsonl holds results of a different configuration: "
                                         r"model\.weights_checksum \('[0-9a-f]+' in the file, '[0-9a-f]+' now\)"):
        _sweep(other, out)
    with pytest.raises(ValueError, match=r"model\.dtype \('torch.float32' in the file, 'torch.bfloat16' now\)"):
        _sweep(tiny_model("llama").to(torch.bfloat16), out)
    with pytest.raises(ValueError, match=r"model\.architecture .*model\.shape\.n_params"):
        _sweep(tiny_model("gpt2"), out)
    assert len(out.read_text().splitlines()) == 1 + 2  # nothing was appended


def test_store_of_an_older_format_is_refused(llama, tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_text('{"format": "actlens.results/1", "config_hash": "26705a5c119d50a0"}\n')
    with pytest.raises(ValueError, match="older actlens that did not record the model's identity"):
        _sweep(llama, out)


def test_second_writer_is_refused_while_the_first_runs(llama, tmp_path):
    out = tmp_path / "s.jsonl"
    _sweep(llama, out, limit=1)
    holder = textwrap.dedent(f"""
        import fcntl, sys
        f = open({str(out)!r}, "a+b")  # what an open Store holds: an exclusive flock on its file
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("holding", flush=True)
        sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "holding\n"
        before = out.read_text()
        with pytest.raises(ValueError, match=r"s\.jsonl is being written by another process"):
            _sweep(llama, out)
        assert out.read_text() == before
    finally:
        proc.stdin.close()
        proc.wait()
    assert _sweep(llama, out).computed == 2 * 2 * 2 - 1  # the lock went with the process


@pytest.mark.parametrize("line, words", [
    ("{not json", "not a JSON record"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"condition": "steered"}', "record lacks the required field 'vector'"),
])
def test_corrupt_line_names_file_and_line_number(llama, tmp_path, line, words):
    out = tmp_path / "s.jsonl"
    _sweep(llama, out, limit=4)
    lines = out.read_text().splitlines()
    lines[3] = line
    out.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"s\.jsonl, line 4: {words}"):
        _sweep(llama, out)


def _sweep_in_child(llama, out: Path) -> int:
    """Start ``_sweep(..., seeds=range(10), batch_size=1)`` in another process; return its pid."""
    if threading.active_count() == 1:  # fork only when no other thread can hold a lock: no second start-up
        pid = os.fork()
        if pid == 0:
            try:
                _sweep(llama, out, seeds=range(10), batch_size=1)
            finally:
                os._exit(0)
        return pid
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        torch.set_num_threads(1)
        from pathlib import Path
        from actlens.models.tiny import tiny_model
        from test_faults import _sweep
        _sweep(tiny_model("llama"), Path({str(out)!r}), seeds=range(10), batch_size=1)
    """)
    return subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL).pid


def test_sigkill_mid_sweep_then_resume_gives_identical_results(llama, tmp_path):
    """A sweep killed with SIGKILL mid-run resumes to exactly the uninterrupted results."""
    out = tmp_path / "s.jsonl"
    pid = _sweep_in_child(llama, out)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
        if out.exists() and len(out.read_bytes().splitlines()) >= 4:  # header + 3 rows: mid-sweep
            break
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    written = len(out.read_bytes().splitlines()) - 1
    assert 3 <= written < 40, "the sweep should have been killed midway"
    resumed = _sweep(llama, out, seeds=range(10))
    assert resumed.computed == 40 - written
    assert resumed.completions().equals(_sweep(llama, None, seeds=range(10)).completions())


# --- caller input: checked up front, expected / got / fix --------------------------------------
BAD_TEXT = "caf\udce9"  # bytes decoded with errors="surrogateescape"


def test_text_that_cannot_be_encoded_is_refused_everywhere(llama):
    import actlens
    from actlens.experiments.sweeps import Grid, pair_spec

    calls = [
        lambda: actlens.generate(llama, BAD_TEXT, max_new_tokens=2),
        lambda: actlens.generate(llama, [{"role": "user", "content": BAD_TEXT}], chat=True, max_new_tokens=2),
        lambda: actlens.actadd_vector(llama, BAD_TEXT, "Hate", 1),
        lambda: actlens.mean_diff_vector(llama, [("good", BAD_TEXT)], 1),
        lambda: Grid([pair_spec("Love", "Hate")], layers=[1], coeffs=[1.0], prompts=[BAD_TEXT], seeds=[0]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"not valid text: it holds '\\udce9' at index 3, a lone surrogate"):
            call()


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError), (2.0, ValueError), ("8", ValueError),
                                          (True, ValueError)])
@pytest.mark.unchecked
def test_batch_size_must_be_a_positive_int_or_none(llama, value, error):
    import actlens

    with pytest.raises(error, match="batch_size must be a positive int or None"):
        actlens.generate(llama, ["Hi", "Yo"], max_new_tokens=2, batch_size=value)
    with pytest.raises(error, match="batch_size must be a positive int"):
        actlens.mean_diff_vector(llama, [("good", "bad")], 1, batch_size=value)
    assert len(actlens.generate(llama, ["Hi", "Yo"], max_new_tokens=2, batch_size=None).completions) == 2
    assert len(actlens.generate(llama, ["Hi", "Yo"], max_new_tokens=2, batch_size=np.int64(1)).completions) == 2


@pytest.mark.parametrize("value, error, words", [
    ("0", TypeError, "non-negative int, got str '0'"), (1.5, TypeError, "got float 1.5"),
    (True, TypeError, "got bool True"), (-1, ValueError, r"in \[0, 2\*\*63\), got -1"),
])
@pytest.mark.unchecked
def test_seed_must_be_a_non_negative_int(llama, value, error, words):
    import actlens
    from actlens.experiments.sweeps import Grid, pair_spec

    with pytest.raises(error, match=words):
        actlens.generate(llama, "Hi", max_new_tokens=2, seed=value)
    with pytest.raises(error, match=words):
        actlens.random_like(actlens.actadd_vector(llama, "Love", "Hate", 1), seed=value)
    with pytest.raises(error, match=words):
        Grid([pair_spec("Love", "Hate")], layers=[1], coeffs=[1.0], prompts=["Hi"], seeds=[0], control_seed=value)


@pytest.mark.unchecked
def test_numpy_integer_seeds_are_accepted(llama):
    import actlens

    a = actlens.generate(llama, "Hi", max_new_tokens=3, seed=np.int64(7)).tokens
    assert a == actlens.generate(llama, "Hi", max_new_tokens=3, seed=7).tokens


# --- the command line: paths checked before the model loads, one line and exit code 2 ----------
@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load a model fails the test: these errors must come first."""
    from actlens.cli import demo

    monkeypatch.setattr(demo, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))


@pytest.mark.parametrize("flag, value", [("--n", "0"), ("--max-new-tokens", "0"), ("--seed", "-1"),
                                         ("--layer", "-2"), ("--n", "two")])
def test_cli_rejects_bad_numbers_before_loading(no_model, capsys, flag, value):
    from actlens.cli import main

    with pytest.raises(SystemExit) as info:
        main(["steer", flag, value])
    assert info.value.code == 2 and f"argument {flag}: expected an int >=" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, words", [
    ("--save", "{tmp}/missing/v.safetensors", "the folder .*missing does not exist; create it"),
    ("--save", "{tmp}", "is a folder"),
    ("--save", "{tmp}/v.pt", "must end with .safetensors"),
    ("--measure-out", "{tmp}/missing/m.json", "the folder .*missing does not exist"),
])
def test_cli_checks_output_paths_before_loading(no_model, capsys, tmp_path, flag, value, words):
    from actlens.cli import main

    argv = ["demo", "--measure"] if flag == "--measure-out" else ["steer"]
    assert main(argv + [flag, value.format(tmp=tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err
    assert re.search(words, err)


def test_cli_anticipated_errors_are_one_line_unexpected_keep_their_traceback(monkeypatch, capsys):
    from actlens.cli import demo, main
    from actlens.models import cache

    def cache_fails(args):
        raise cache.CacheError("cannot write the actlens cache /x (Read-only file system);\nset ACTLENS_CACHE")

    monkeypatch.setattr(demo, "run", cache_fails)
    assert main(["steer"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ACTLENS_CACHE" in err
    monkeypatch.setattr(demo, "run", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["steer"])


def test_a_stopped_measurement_keeps_the_conditions_it_finished(tiny_models, monkeypatch, tmp_path):
    """``demo --measure --measure-out`` writes after every condition (a Gemma run takes long on CPU)."""
    from actlens.cli import demo, main

    recipe = demo.Recipe(kind="actadd", layer=1, coeff=2.0, align="front")
    monkeypatch.setattr(demo, "load_model", lambda *a, **k: tiny_models["llama"])
    monkeypatch.setattr(demo, "settings_for", lambda name: (recipe, [recipe]))
    monkeypatch.setattr(demo, "EVAL_PROMPTS", demo.EVAL_PROMPTS[:2])

    def stop(*a, **k):  # the run is stopped before the random control
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "random_like", stop)
    out = tmp_path / "m.json"
    with pytest.raises(KeyboardInterrupt):
        main(["demo", "--measure", "--max-new-tokens", "2", "--measure-out", str(out)])
    rows = json.loads(out.read_text())
    assert [r["condition"] for r in rows] == ["unsteered"] * 6 + [recipe.label] * 6
    assert not list(tmp_path.glob("*.partial"))


# --- issue 22: a results file actlens did not write is never touched ------------------------------
FOREIGN_FILES = {
    "one-json-line-no-newline": b"[]",
    "one-object-line": b'{"name": "x", "value": 1}\n',
    "three-lines-no-final-newline": b'{"a": 1}\n{"a": 2}\n{"a": 3}',
    "binary": bytes(range(256)) * 4,
    "binary-with-newlines": b"\x00\xff\n\x89PNG\r\n\x1a\n" + os.urandom(300),
    "text": b"hello\nworld\n",
    "a-header-like-object": b'{"format": "other.results/1", "config": {}}\n{"x": 1}',
    "blank-first-line": b"\n\n{}",
}


@pytest.mark.parametrize("case", list(FOREIGN_FILES))
def test_foreign_results_file_is_refused_and_left_byte_for_byte(llama, tmp_path, case):
    """The issue's data loss: the torn-line repair used to truncate before the header was checked."""
    out = tmp_path / "other.jsonl"
    out.write_bytes(FOREIGN_FILES[case])
    for _ in range(2):  # a second run must not overwrite it either
        with pytest.raises(ValueError, match=r"other\.jsonl is not an actlens results file .*left as it is"):
            _sweep(llama, out)
        assert out.read_bytes() == FOREIGN_FILES[case]


def test_empty_file_is_adopted_and_a_torn_header_of_ours_restarted(llama, tmp_path):
    """An empty file holds nothing to lose (e.g. made by mkstemp); our own header cut mid-write is redone."""
    out = tmp_path / "s.jsonl"
    out.touch()
    assert _sweep(llama, out).computed == 8
    header = out.read_bytes().splitlines(keepends=True)[0]
    out.write_bytes(header[:40])
    assert _sweep(llama, out).computed == 8 and out.read_bytes().startswith(header)


def test_store_of_another_configuration_is_left_untouched_even_with_a_torn_line(llama, tmp_path):
    out = tmp_path / "s.jsonl"
    _sweep(llama, out, limit=3)
    torn = out.read_bytes() + b'{"condition": "unst'
    out.write_bytes(torn)
    with pytest.raises(ValueError, match="different configuration: grid.seeds"):
        _sweep(llama, out, seeds=(5,))
    assert out.read_bytes() == torn
    assert _sweep(llama, out).computed == 8 - 3  # the same configuration repairs its own torn line


# --- issue 22: the model fingerprint covers every parameter and buffer, as they are now -----------
@pytest.mark.parametrize("arch", ["llama", "gemma3", "native"])
def test_fingerprint_sees_a_change_to_any_element_of_any_parameter_or_buffer(arch):
    from actlens.models.model import fingerprint
    from actlens.models.tiny import tiny_model

    model = tiny_model(arch)
    base = fingerprint(model)["weights_checksum"]
    tensors = [*model.named_parameters(), *model.named_buffers()]
    assert len(tensors) > 30
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in tensors:
            flat = tensor.view(-1)
            i = int(torch.randint(flat.numel(), (1,), generator=gen))
            before = flat[i].clone()
            if tensor.dtype == torch.bool:
                flat[i] = ~before
            else:
                flat[i] = before + 1 if not tensor.is_floating_point() else before * (1 + 2 ** -20) + 2 ** -40
            assert fingerprint(model)["weights_checksum"] != base, f"a change to {name}[{i}] was not seen"
            flat[i] = before
    assert fingerprint(model)["weights_checksum"] == base


def test_fingerprint_is_unchanged_by_running_the_model(tiny_hf_model):
    import actlens
    from actlens.models.model import fingerprint

    before = fingerprint(tiny_hf_model)
    actlens.generate(tiny_hf_model, ["Hi there", "Yo"], max_new_tokens=3, chat=False)
    assert fingerprint(tiny_hf_model) == before


def test_weights_edited_in_memory_after_a_sweep_are_refused_on_resume(tmp_path):
    """The issue's silent wrong result: an edited MLP layer left the 3-tensor hash unchanged."""
    from actlens.models.tiny import tiny_model

    model, out = tiny_model("llama"), tmp_path / "s.jsonl"
    _sweep(model, out, limit=2)
    hf_name = next(n for n, _ in model.named_parameters() if "layers.2." in n and "down_proj" in n)
    with torch.no_grad():
        dict(model.named_parameters())[hf_name].mul_(-4)
    with pytest.raises(ValueError, match=r"model\.weights_checksum \('[0-9a-f]+' in the file"):
        _sweep(model, out)


def _rewrite_header(out: Path, edit) -> None:
    from actlens.experiments.store import config_hash

    lines = out.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["config"] = edit(header["config"])
    header["config_hash"] = config_hash(header["config"])
    out.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))


@pytest.mark.parametrize("field, value, words", [
    ("device", "cuda", r"model\.device \('cuda' in the file, 'cpu' now\)"),
    ("dtype", "torch.bfloat16", r"model\.dtype \('torch.bfloat16' in the file, 'torch.float32' now\)"),
])
def test_store_from_another_device_or_dtype_is_refused_naming_it(llama, tmp_path, field, value, words):
    out = tmp_path / "s.jsonl"
    _sweep(llama, out, limit=2)
    _rewrite_header(out, lambda c: c | {"model": c["model"] | {field: value}})
    with pytest.raises(ValueError, match=words):
        _sweep(llama, out)


def test_store_with_the_older_sampled_fingerprint_resumes_with_a_notice(llama, tmp_path, capsys):
    from actlens.models.model import LEGACY_FINGERPRINT
    from actlens.models.tiny import tiny_model

    out = tmp_path / "s.jsonl"
    _sweep(llama, out, limit=2)
    _rewrite_header(out, lambda c: c | {"model": {k: v for k, v in c["model"].items() if k in LEGACY_FINGERPRINT}})
    capsys.readouterr()
    assert _sweep(llama, out).computed == 8 - 2
    assert "sampled 3 weight tensors" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"model\.weights_sha256"):  # other weights: still refused
        _sweep(tiny_model("llama", seed=1), out)


# --- issue 22: every store record is checked against the sweep's schema on resume -----------------
def _edit_record(out: Path, line: int, edit) -> None:
    lines = out.read_text().splitlines()
    lines[line - 1] = edit(json.loads(lines[line - 1]))
    out.write_text("\n".join(lines) + "\n")


def _keys_only(r):
    return json.dumps({k: r[k] for k in ("condition", "vector", "layer", "coeff", "prompt", "seed")})


BAD_RECORDS = {
    # name: (edit of line 7, a steered row; expected words after "s.jsonl, line 7: ")
    "only-key-fields": (_keys_only, r"record lacks the required field 'completion'"),
    "sentiment-a-string": (lambda r: json.dumps(r | {"sentiment": "very happy"}),
                           r"record\['sentiment'\] must be a number in \[-1, 1\], got str 'very happy'"),
    "sentiment-out-of-range": (lambda r: json.dumps(r | {"sentiment": 3.0}), r"record\['sentiment'\] must be"),
    "negative-n_tokens": (lambda r: json.dumps(r | {"n_tokens": -5}), r"record\['n_tokens'\] must be an int >= 0"),
    "too-many-tokens": (lambda r: json.dumps(r | {"n_tokens": 99}), r"record\['n_tokens'\] must be an int >= 0 "
                                                                    r"and < 4"),
    "layer-a-word": (lambda r: json.dumps(r | {"layer": "one"}), r"record\['layer'\] must be an int >= 0"),
    "seed-a-float": (lambda r: json.dumps(r | {"seed": 1.7}), r"record\['seed'\] must be an int >= 0"),
    "seed-a-bool": (lambda r: json.dumps(r | {"seed": True}), r"record\['seed'\] must be an int >= 0"),
    "condition-unknown": (lambda r: json.dumps(r | {"condition": "boosted"}), r"record\['condition'\] must be one"),
    "coeff-on-a-control": (lambda r: json.dumps(r | {"condition": "unsteered", "vector": ""}),
                           r"record\['layer'\] must be null for condition 'unsteered'"),
    "completion-a-number": (lambda r: json.dumps(r | {"completion": 5}), r"record\['completion'\] must be a string"),
    "words-disagree": (lambda r: json.dumps(r | {"words": r["words"] + 3}),
                       r"record\['words'\] must be [0-9.]+ \(words of the record's completion\)"),
    "positive-disagrees": (lambda r: json.dumps(r | {"sentiment": 0.9, "positive": 0.0}),
                           r"record\['positive'\] must be 1.0 \(sentiment is 0.9\)"),
    "metric-missing": (lambda r: json.dumps({k: v for k, v in r.items() if k != "distinct_2"}),
                       "record lacks the required field 'distinct_2'"),
    "unknown-field": (lambda r: json.dumps(r | {"note": "x"}), r"record has unknown fields \['note'\]"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_bad_store_record_names_file_line_and_field(llama, tmp_path, case):
    edit, words = BAD_RECORDS[case]
    out = tmp_path / "s.jsonl"
    _sweep(llama, out, limit=6)
    assert json.loads(out.read_text().splitlines()[6])["condition"] == "steered"
    _edit_record(out, 7, edit)
    before = out.read_bytes()
    with pytest.raises(ValueError, match=rf"s\.jsonl, line 7: {words}"):
        _sweep(llama, out)
    assert out.read_bytes() == before


def test_duplicate_records_exact_ones_dropped_conflicting_ones_refused(llama, tmp_path):
    out = tmp_path / "s.jsonl"
    _sweep(llama, out, limit=4)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines + [lines[2]]) + "\n")  # a batch written twice
    assert _sweep(llama, out, limit=1).computed == 1
    other = json.loads(lines[2])
    other["completion"] += " and more"
    other |= text_metrics(other["completion"])
    out.write_text(out.read_text() + json.dumps(other) + "\n")
    with pytest.raises(ValueError, match=r"s\.jsonl, line 8: a second record for .* that differs from the first "
                                         r"\(completion"):
        _sweep(llama, out)


def text_metrics(text):
    from actlens.core.metrics import text_metrics

    return text_metrics(text)


# --- issue 22: vectors are checked where they are made, and their strength where they are applied -----
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.unchecked
def test_non_finite_vector_values_are_refused_wherever_a_vector_is_made(llama, bad):
    import actlens
    from actlens.vectors import from_values

    good = actlens.actadd_vector(llama, "Love", "Hate", 1)
    values = good.values
    values[1, 3] = bad
    with pytest.raises(ValueError, match=r"actadd steering vector at layer 1 would hold 1 non-finite values .*row\(s\) \[1\]"):
        good.with_values(values)
    with pytest.raises(ValueError, match="non-finite values"):
        from_values(llama, 1, values, "imported", bos_row=False)


def test_a_builder_on_a_model_that_overflows_is_refused():
    import actlens
    from actlens.models.tiny import tiny_model

    model = tiny_model("llama")
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "embed" in n).fill_(float("inf"))
    with pytest.raises(ValueError, match="non-finite values"):
        actlens.actadd_vector(model, "Love", "Hate", 1)
    with pytest.raises(ValueError, match="non-finite values"):
        actlens.mean_diff_vector(model, [("good", "bad")], 1)


@pytest.mark.parametrize("coeff, scale", [(1e308, 1.0), (1e30, 1.0), (1.0, 1e38), (-1e300, 1.0)])
def test_a_strength_that_overflows_the_model_is_an_error_that_says_so(llama, coeff, scale):
    import actlens

    vector = actlens.actadd_vector(llama, "Love", "Hate", 1)
    vector = vector.with_values(vector.values * scale)
    with pytest.raises(ValueError, match=r"overflows the model's numbers \(torch\.float32"):
        actlens.generate(llama, "I think", vector=vector, coeff=coeff, max_new_tokens=2)
    with pytest.raises(ValueError, match="overflows"), actlens.steer(llama, vector, coeff):
        pass
    assert len(actlens.generate(llama, "I think", vector=vector.with_values(vector.values / scale), coeff=8.0,
                                max_new_tokens=2).completions) == 1


def test_diagnose_refuses_a_vector_of_another_model_before_printing(tmp_path, capsys):
    import actlens
    from actlens.cli import main
    from actlens.models.tiny import tiny_model

    narrow = actlens.actadd_vector(tiny_model("llama", d_model=32), "Love", "Hate", 1).save(tmp_path / "n.safetensors")
    assert main(["diagnose", "--model", "tiny", "--vector", str(narrow)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "n.safetensors" in captured.err and "d_model 32 vs 64" in captured.err
    other = actlens.actadd_vector(tiny_model("gpt2"), "Love", "Hate", 1).save(tmp_path / "g.safetensors")
    assert main(["diagnose", "--model", "tiny", "--vector", str(other)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "was extracted on model" in captured.err


# --- issue 22: empty or same-token ActAdd pairs, Grid duplicates ---------------------------------------
@pytest.mark.parametrize("plus, minus, words", [
    ("", "", "is empty"), ("Love", "Love", "same text on both sides"),
    ("", " ", "tokenises identically"),  # the empty side is padded with the space token
])
def test_empty_or_identical_actadd_pairs_are_errors(llama, plus, minus, words):
    import actlens
    from actlens.experiments.sweeps import pair_spec
    from actlens.vectors import actadd_vectors
    from actlens.vectors.chat import chat_actadd_vector

    with pytest.raises(ValueError, match=words):
        actlens.actadd_vector(llama, plus, minus, 1)
    with pytest.raises(ValueError, match=words):
        actadd_vectors(llama, plus, minus, [1, 2])
    if plus != "" or minus != " ":  # text-only checks; the token check runs when the spec builds
        with pytest.raises(ValueError, match=words):
            pair_spec(plus, minus)
    else:
        with pytest.raises(ValueError, match=words):
            pair_spec(plus, minus).build(llama, 1)
    if plus:
        with pytest.raises(ValueError, match=words):
            chat_actadd_vector(llama, plus, minus, 1)
    assert actlens.actadd_vector(llama, " weddings", "", 1).k >= 2  # an empty minus side is fine


@pytest.mark.parametrize("argv", [["steer", "--plus", "", "--minus", ""], ["steer", "--plus", "Hi", "--minus", "Hi"]])
def test_cli_refuses_an_empty_pair_before_loading(no_model, capsys, argv):
    from actlens.cli import main

    assert main(argv) == 2
    assert "its vector would be zero" in capsys.readouterr().err


@pytest.mark.parametrize("key, values", [("prompts", ["Hi", "Yo", "Hi"]), ("seeds", [0, 1, 0]),
                                         ("coeffs", [1, 2.0, 1.0]), ("layers", [1, 1]),
                                         ("controls", ["random", "random"])])
def test_grid_refuses_repeated_values(key, values):
    from actlens.experiments.sweeps import Grid, pair_spec

    kw = dict(layers=[1], coeffs=[1.0], prompts=["Hi"], seeds=[0]) | {key: values}
    with pytest.raises(ValueError, match=rf"Grid {key} has repeated values .*Pass each value once"):
        Grid([pair_spec("Love", "Hate")], **kw)


# --- issue 22: the command line: negative numbers, seed ranges, flags that need another flag, names ------
@pytest.mark.parametrize("value, expected", [("-1e3", -1000.0), ("-2.5E-1", -0.25), ("-.5", -0.5), ("-4", -4.0),
                                             ("-1.5", -1.5)])
def test_cli_negative_coefficients_parse_in_the_usual_forms(monkeypatch, value, expected):
    from actlens.cli import demo, main

    seen = {}
    monkeypatch.setattr(demo, "run", lambda args: seen.setdefault("coeff", args.coeff) and 0)
    assert main(["steer", "--coeff", value, "--layer", "3"]) == 0
    assert seen["coeff"] == expected


def test_cli_negative_value_of_a_flag_in_diagnose_parses(capsys):
    from actlens.cli import main

    # "--layer -1e3" reaches the flag's own type check (a value), not argparse's "expected one argument"
    with pytest.raises(SystemExit) as info:
        main(["diagnose", "--model", "tiny", "--plus", "Love", "--minus", "Hate", "--layer", "-1e3"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "argument --layer: invalid int value: '-1e3'" in err


@pytest.mark.parametrize("argv, words", [
    (["steer", "--seed", str(2**63 - 1), "--n", "2"], r"needs seeds up to 9223372036854775808, beyond the largest "
                                                     r"seed .*pass --seed at most 9223372036854775806"),
    (["steer", "--seed", str(2**63)], "beyond the largest seed"),
    (["demo", "--measure", "--seed", str(2**63 - 2)], "pass --seed at most 9223372036854775805"),
    (["demo", "--measure-out", "m.json"], "--measure-out writes the completions of --measure; pass --measure"),
    (["demo", "--measure", "--save", "v.safetensors"], "--save does nothing with --measure"),
    (["steer", "--model", ""], r"--model is empty; pass an embedded model \['smollm2-135m'"),
])
def test_cli_ranges_and_flag_combinations_are_checked_before_loading(no_model, capsys, argv, words):
    from actlens.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(words, err)


@pytest.mark.parametrize("name, words", [("", "the model name is empty"),
                                         (".", "the folder holds neither config.json")])
def test_empty_or_unknown_model_names_get_actlens_message(name, words):
    import actlens

    with pytest.raises(ValueError, match=rf"{words}.*\['smollm2-135m'"):
        actlens.load_model(name)


# --- issue 22: cache housekeeping, and chat decoding that stops at the end of the turn ---------------
def test_a_cache_folder_replaced_by_a_file_leaves_nothing_behind(src, tmp_path):
    root = tmp_path / "c"
    directory = _load(src, root)
    import shutil

    shutil.rmtree(directory)
    directory.write_bytes(b"not a folder")
    assert _load(src, root) == directory and directory.is_dir()
    assert sorted(p.name for p in root.iterdir()) == ["m"]


def test_stale_files_are_cleaned_like_stale_folders(tmp_path):
    dead = tmp_path / ".stale-m-999999999-123"  # no such pid
    dead.write_bytes(b"x")
    old = tmp_path / ".stale-m"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * cache.STALE_AFTER_S,) * 2)
    live = tmp_path / f".stale-m-{os.getpid()}-5"
    live.write_bytes(b"x")
    assert sorted(cache.clean_stale(tmp_path)) == sorted([dead, old])
    assert live.exists() and not dead.exists() and not old.exists()


def test_cache_folders_of_an_older_layout_are_removed_with_a_notice(tmp_path, capsys):
    names = ["smollm2-135m-instruct-0.1.2-3f2a9c01", "smollm2-135m-instruct-0.1.2-28104608",  # older layouts
             "smollm2-135m-instruct-0.1.2", "smollm2-135m-instruct-0.1.1",  # current layout, any version: kept
             "smollm2-135m-instruct-notes-abc", "my-smollm2-135m-instruct-0.1.2-abc", "gemma-3-270m-1.0.0-ab"]
    for name in names:
        (tmp_path / name).mkdir()
    removed = cache.remove_older_layouts(tmp_path, "smollm2-135m-instruct-", "smollm2-135m-instruct-0.1.2")
    assert sorted(p.name for p in removed) == sorted(names[:2])
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "a cache folder of an older actlens layout" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


def test_chat_generation_stops_at_the_end_of_turn_token(monkeypatch):
    """A template whose end of turn is not EOS (Gemma's <end_of_turn>) must stop decoding there, not only truncate."""
    import actlens
    from actlens.core import chat, sampling
    from actlens.models.tiny import tiny_model
    from actlens.steering import generation

    model = tiny_model("gemma3")
    turn = [{"role": "user", "content": "Hi"}]
    full = actlens.generate(model, turn, chat=True, temperature=0, max_new_tokens=8).tokens[0]
    i = next(i for i in range(1, len(full)) if full[i] not in full[:i])  # a token that first appears at step i
    stop = full[i]
    assert stop != model.tokenizer.eos_token_id and len(full) == 8
    monkeypatch.setattr(chat, "end_of_turn", lambda m: stop)
    decoded = []
    real = sampling.hf_generate

    def spy(*a, **k):
        out = real(*a, **k)
        decoded.append(out.shape[1])
        return out

    monkeypatch.setattr(sampling, "hf_generate", spy)
    out = actlens.generate(model, turn, chat=True, temperature=0, max_new_tokens=8)
    assert out.tokens[0] == full[:i] and decoded == [i + 1]  # stopped at the turn's end: no wasted steps
    assert generation.chat_ is chat


GEMMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
                   "else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
                   "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def test_gemma_chat_decoding_stops_at_end_of_turn(gemma, monkeypatch):
    """Gemma's template closes a turn with <end_of_turn>, which is not its EOS: decoding is told to stop there.

    The embedded Gemma is the base model, without a template: Gemma 3's (instruction-tuned) one is set here.
    """
    import actlens
    from actlens.core import chat
    from actlens.steering import generation

    monkeypatch.setattr(gemma.tokenizer, "chat_template", GEMMA3_TEMPLATE)
    turn_end = chat.end_of_turn(gemma)
    assert gemma.tokenizer.convert_ids_to_tokens(turn_end) == "<end_of_turn>"
    assert turn_end != gemma.tokenizer.eos_token_id
    stops, real = [], generation.decode
    monkeypatch.setattr(generation, "decode", lambda *a, **k: stops.append(k.get("stop")) or real(*a, **k))
    actlens.generate(gemma, [{"role": "user", "content": "Say hi."}], chat=True, max_new_tokens=2)
    assert stops == [(turn_end,)]
