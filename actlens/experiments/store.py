"""Append-only JSON-lines result files that make long runs resumable.

The first line is a header with the run's configuration (for a sweep: the grid, the sampling
and its sampler version, the metrics, and the model's identity from
:func:`actlens.models.model.fingerprint`: architecture, shape, dtype and a hash of a few weight
tensors) and its hash; each later line is one finished record. Records are appended, flushed
and fsynced batch by batch, so an interrupted run loses at most the batch in flight; a torn
last line (killed mid-write) is dropped on the next open. Reopening with a different
configuration raises and names the parts that differ, instead of mixing results. While a
:class:`Store` is open it holds an exclusive ``flock`` on its file, so a second writer is
refused; the lock dies with its process, so a killed run leaves nothing to clean up. A line
that is not a JSON record raises with the file and line number.
"""

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

FORMAT = "actlens.results/2"
OLD_FORMATS = ("actlens.results/1",)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a second writer is not detected there
    fcntl = None


def config_hash(config: Mapping) -> str:
    """sha256 of the canonical JSON of ``config`` (first 16 hex digits).

    >>> config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1})
    True
    """
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(stored: object, current: object, where: str = "") -> list[str]:
    """Dotted paths where two JSON values differ, with both values (short).

    >>> differences({"model": {"dtype": "float32", "n": 1}}, {"model": {"dtype": "bfloat16", "n": 1}})
    ["model.dtype ('float32' in the file, 'bfloat16' now)"]
    """
    if isinstance(stored, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(stored) | set(current), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in stored or key not in current:
                out.append(f"{path} ({'only now' if key not in stored else 'only in the file'})")
            else:
                out += differences(stored[key], current[key], path)
        return out
    if stored == current:
        return []
    shown = [repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..." for v in (stored, current)]
    return [f"{where or 'configuration'} ({shown[0]} in the file, {shown[1]} now)"]


class Store:
    """``records()`` already in ``path`` (by key) and ``append(records)``; ``close()`` (or ``with``) releases it."""

    def __init__(self, path: str | os.PathLike, config: Mapping, *, key: Callable[[Mapping], tuple]):
        self.path = Path(path)
        self.config = json.loads(json.dumps(config, sort_keys=True, default=str))
        self.hash = config_hash(self.config)
        self.key = key
        if self.path.suffix != ".jsonl":
            raise ValueError(f"out must be a .jsonl file, got {str(self.path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b")  # held open: the lock lives as long as the store
        if fcntl is not None:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.close()
                raise ValueError(
                    f"{self.path} is being written by another process (it holds the file's lock); wait for that "
                    "run to finish, or pass another out= path"
                ) from None
        if os.fstat(self._file.fileno()).st_size == 0:
            self._write([{"format": FORMAT, "config_hash": self.hash, "config": self.config}])

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()  # releases the lock

    def records(self) -> dict[tuple, dict]:
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):  # torn final line from an interrupted write
            raw = raw[:raw.rfind(b"\n") + 1]
            self._file.truncate(len(raw))
        lines = raw.decode("utf-8", errors="replace").splitlines()
        header = self._parse(lines[0], 1) if lines else {}
        if header.get("format") in OLD_FORMATS:
            raise ValueError(
                f"{self.path} was written by an older actlens that did not record the model's identity, so its "
                "results cannot be checked against this run; delete it (or pass another out= path) to start afresh")
        if header.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not an actlens results file (first line {lines[:1]}); "
                             "pass another out= path")
        if header.get("config_hash") != self.hash:
            diffs = differences(header.get("config"), self.config) or ["its configuration hash"]
            raise ValueError(
                f"{self.path} holds results of a different configuration: {'; '.join(diffs[:6])}"
                f"{f' and {len(diffs) - 6} more' if len(diffs) > 6 else ''}. Delete it or pass another out= path "
                "to start afresh")
        out: dict[tuple, dict] = {}
        for number, line in enumerate(lines[1:], start=2):
            if line.strip():
                record = self._parse(line, number)
                try:
                    out[self.key(record)] = record
                except (KeyError, TypeError) as err:
                    raise ValueError(f"{self.path}, line {number}: a record without its key fields ({err}); the "
                                     "file is corrupt: delete that line (or the file) and run again") from err
        return out

    def _parse(self, line: str, number: int) -> dict:
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{self.path}, line {number}: not a JSON record ({type(err).__name__}: {err}); the "
                             "file is corrupt: delete that line (or the file) and run again") from err
        if not isinstance(value, dict):
            raise ValueError(f"{self.path}, line {number}: expected a JSON object, got {type(value).__name__}; the "
                             "file is corrupt: delete that line (or the file) and run again")
        return value

    def append(self, records: list[Mapping]) -> None:
        self._write(records)

    def _write(self, records: list[Mapping]) -> None:
        self._file.write("".join(json.dumps(r, default=_plain) + "\n" for r in records).encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())


def _plain(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in a results file")
