"""Append-only JSON-lines result files that make long runs resumable.

The first line is a header with the hash of the run's configuration; each later line is one
finished record. Records are appended, flushed and fsynced batch by batch, so an interrupted
run loses at most the batch in flight; a torn last line (killed mid-write) is dropped on the
next open. Reopening with a different configuration raises instead of mixing results.
"""

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

FORMAT = "actlens.results/1"


def config_hash(config: Mapping) -> str:
    """sha256 of the canonical JSON of ``config`` (first 16 hex digits).

    >>> config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1})
    True
    """
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Store:
    """``records()`` already in ``path`` (by key) and ``append(records)``."""

    def __init__(self, path: str | os.PathLike, config_hash: str, *, key: Callable[[Mapping], tuple]):
        self.path = Path(path)
        self.hash = config_hash
        self.key = key
        if self.path.suffix != ".jsonl":
            raise ValueError(f"out must be a .jsonl file, got {str(self.path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write([{"format": FORMAT, "config_hash": config_hash}], mode="w")

    def records(self) -> dict[tuple, dict]:
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):  # torn final line from an interrupted write
            raw = raw[:raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(raw))
        lines = raw.decode().splitlines()
        header = json.loads(lines[0]) if lines else {}
        if header.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not an actlens results file (first line {lines[:1]}); "
                             "pass another out= path")
        if header.get("config_hash") != self.hash:
            raise ValueError(
                f"{self.path} holds results of a different configuration (hash {header.get('config_hash')}, "
                f"this run {self.hash}); delete it or pass another out= path to start afresh")
        out: dict[tuple, dict] = {}
        for line in lines[1:]:
            if line.strip():
                record = json.loads(line)
                out[self.key(record)] = record
        return out

    def append(self, records: list[Mapping]) -> None:
        self._write(records, mode="a")

    def _write(self, records: list[Mapping], *, mode: str) -> None:
        with open(self.path, mode, encoding="utf-8") as f:
            f.write("".join(json.dumps(r, default=_plain) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())


def _plain(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in a results file")
