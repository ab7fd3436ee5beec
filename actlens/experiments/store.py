"""Append-only JSON-lines result files that make long runs resumable.

The first line is a header with the run's configuration (for a sweep: the grid, the sampling
and its sampler version, the metrics, and the model's identity from
:func:`actlens.models.model.fingerprint`: architecture, shape, dtype, device type and a checksum of
every parameter and buffer) and its hash; each later line is one finished record. Records are
appended, flushed and fsynced batch by batch, so an interrupted run loses at most the batch in
flight. The header is read and accepted before anything is written: a file that is not an
actlens store of this configuration (another program's ``.jsonl``, a binary file, a store of
another run) is refused and left byte for byte as it was; an empty file is adopted (it holds
nothing to lose). Only then is a torn last line (killed mid-write) dropped. Reopening with a
different configuration raises and names the parts that differ, instead of mixing results.
While a :class:`Store` is open it holds an exclusive ``flock`` on its file, so a second writer
is refused; the lock dies with its process, so a killed run leaves nothing to clean up. Each
record is checked on reading (JSON object, key fields, the caller's schema); a bad one raises
with the file, line and field; a second record for a key must repeat the first exactly (it is
then dropped), otherwise it is an error."""

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

FORMAT = "actlens.results/2"
OLD_FORMATS = ("actlens.results/1",)
MAX_HEADER = 64 << 20  # a first line longer than this is not an actlens header

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

    def __init__(self, path: str | os.PathLike, config: Mapping, *, key: Callable[[Mapping], tuple],
                 check: Callable[[dict, str], None] | None = None, legacy: Mapping | None = None):
        """``check(record, where)`` raises a ``ValueError`` for a record that does not fit the schema
        (``where`` names the file and line); ``legacy`` is this run's configuration as an older
        actlens recorded it: a file written with it is accepted, with a one-line notice."""
        self.path = Path(path)
        self.config = json.loads(json.dumps(config, sort_keys=True, default=str))
        self.hash = config_hash(self.config)
        self.key, self.check = key, check
        if self.path.suffix != ".jsonl":
            raise ValueError(f"out must be a .jsonl file, got {str(self.path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # "a+b" creates a missing file and changes nothing in an existing one; nothing is written,
        # repaired or truncated until the header has been read and accepted below.
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
        try:
            self._open(legacy)
        except BaseException:
            self._file.close()
            raise

    def _header_bytes(self) -> bytes:
        return (json.dumps({"format": FORMAT, "config_hash": self.hash, "config": self.config}) + "\n").encode()

    def _open(self, legacy: Mapping | None) -> None:
        """Accept the file's header (or write one into an empty file); refuse anything else untouched."""
        self._file.seek(0)
        first = self._file.readline(MAX_HEADER + 1)
        ours = self._header_bytes()
        if not first or (not first.endswith(b"\n") and ours.startswith(first)
                         and os.fstat(self._file.fileno()).st_size == len(first)):
            # empty (nothing to lose), or our own header torn by a kill mid-write: start it afresh
            self._file.truncate(0)
            self._write([json.loads(ours)])
            return
        header = self._header(first)
        if header.get("format") in OLD_FORMATS:
            raise ValueError(
                f"{self.path} was written by an older actlens that did not record the model's identity, so its "
                "results cannot be checked against this run; delete it (or pass another out= path) to start afresh")
        if header.get("config_hash") == self.hash and header.get("config") == self.config:
            return
        if legacy is not None and header.get("config") == json.loads(json.dumps(legacy, sort_keys=True, default=str)):
            print(f"actlens: {self.path} was written by an older actlens whose model fingerprint sampled 3 weight "
                  "tensors and did not record the device; it matches on those. Delete the file to record the full "
                  "fingerprint.", file=sys.stderr)
            return
        diffs = differences(header.get("config"), self.config) or ["its configuration hash"]
        raise ValueError(
            f"{self.path} holds results of a different configuration: {'; '.join(diffs[:6])}"
            f"{f' and {len(diffs) - 6} more' if len(diffs) > 6 else ''}. Delete it or pass another out= path "
            "to start afresh")

    def _header(self, first: bytes) -> dict:
        """The parsed header line, or a refusal that leaves the file as it was."""
        shown = repr(first[:60]) + ("..." if len(first) > 60 else "")
        foreign = (f"{self.path} is not an actlens results file (its first line is {shown}); it was left as it "
                   "is. Pass another out= path")
        if not first.endswith(b"\n"):
            raise ValueError(foreign)
        try:
            header = json.loads(first.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ValueError(foreign) from None
        if not isinstance(header, dict) or header.get("format") not in (FORMAT, *OLD_FORMATS):
            raise ValueError(foreign)
        return header

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()  # releases the lock

    def records(self) -> dict[tuple, dict]:
        """The records after the header (accepted when the store opened), each checked; by key."""
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):  # torn final line of our own store, from an interrupted write
            raw = raw[:raw.rfind(b"\n") + 1]
            self._file.truncate(len(raw))
        lines = raw.decode("utf-8", errors="replace").splitlines()
        out: dict[tuple, dict] = {}
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            record = self._parse(line, number)
            where = f"{self.path}, line {number}"
            if self.check is not None:
                try:
                    self.check(record, where)
                except ValueError as err:
                    raise ValueError(f"{err}; the file is corrupt: delete that line (or the file) and run "
                                     "again") from err
            try:
                key = self.key(record)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{where}: a record without its key fields ({type(err).__name__}: {err}); the "
                                 "file is corrupt: delete that line (or the file) and run again") from err
            if key in out and _canonical(out[key]) != _canonical(record):  # canonical text: NaN equals NaN
                raise ValueError(f"{where}: a second record for {key} that differs from the first "
                                 f"({'; '.join(differences(out[key], record)[:3])}); the file is corrupt: delete "
                                 "the wrong line (or the file) and run again")
            out[key] = record  # an exact duplicate (e.g. a batch written twice) is dropped
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


def _canonical(record: Mapping) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def _plain(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} {value!r} in a results file")
