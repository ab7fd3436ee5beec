"""Checks of what is read back from files (vector metadata, GGUF provenance): nothing is trusted.

Every failure is a ``ValueError`` that names the file and the field, says what was expected
and what came. Sizes are bounded so a hostile file cannot exhaust memory or the stack.
"""

import json
import os
from collections.abc import Callable

MAX_JSON_CHARS = 16 << 20  # metadata larger than this is refused before parsing
MAX_DEPTH = 8  # the deepest legitimate metadata is a list of token lists (depth 3)
MAX_ITEMS = 1 << 20  # texts, token lists, tokens per list
MAX_TEXT = 1 << 20  # characters in one string


def parse_json(path: os.PathLike | str, field: str, text: object) -> object:
    """``json.loads`` with size and depth bounds; a ``ValueError`` naming ``path`` and ``field``."""
    if not isinstance(text, str):
        raise ValueError(f"{path}: {field} must be a JSON string, got {type(text).__name__}")
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"{path}: {field} has {len(text)} characters, more than the {MAX_JSON_CHARS} allowed")
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: {field} is not valid JSON ({type(err).__name__}: {err})") from err
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"{path}: {field} is nested deeper than {MAX_DEPTH} levels; not written by actlens")
    return value


def _depth(value: object) -> int:
    stack, deepest = [(value, 1)], 0
    while stack:
        item, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, d + 1) for v in item)
    return deepest


class Fields:
    """Typed access to a JSON object read from ``path``; each getter raises a ``ValueError`` naming the field."""

    def __init__(self, path: os.PathLike | str, where: str, obj: object):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: {where} must be a JSON object, got {type(obj).__name__}")
        self.path, self.where, self.obj, self.used = path, where, obj, set()

    def _fail(self, key: str, expected: str, got: object) -> ValueError:
        shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
        return ValueError(f"{self.path}: {self.where}[{key!r}] must be {expected}, got {type(got).__name__} {shown}")

    def get(self, key: str, check: Callable[[object], bool], expected: str, *, default: object = ..., ) -> object:
        self.used.add(key)
        if key not in self.obj:
            if default is ...:
                raise ValueError(f"{self.path}: {self.where} lacks the required field {key!r} ({expected})")
            return default
        value = self.obj[key]
        if not check(value):
            raise self._fail(key, expected, value)
        return value

    def integer(self, key: str, *, low: int = 0, high: int | None = None, default: object = ..., none: bool = False):
        bound = f"an int >= {low}" + (f" and < {high}" if high is not None else "")
        return self.get(key, lambda v: (v is None and none) or (is_int(v) and v >= low and (high is None or v < high)),
                        bound + (" or null" if none else ""), default=default)

    def boolean(self, key: str, *, default: object = ...) -> bool:
        return self.get(key, lambda v: isinstance(v, bool), "true or false (a JSON boolean)", default=default)

    def text(self, key: str, *, default: object = ..., none: bool = False):
        return self.get(key, lambda v: (v is None and none) or (isinstance(v, str) and len(v) <= MAX_TEXT),
                        f"a string of at most {MAX_TEXT} characters" + (" or null" if none else ""), default=default)

    def strings(self, key: str, *, default: object = ...) -> tuple[str, ...]:
        value = self.get(key, lambda v: isinstance(v, list) and len(v) <= MAX_ITEMS
                         and all(isinstance(s, str) and len(s) <= MAX_TEXT for s in v),
                         "a list of strings", default=default)
        return tuple(value)

    def int_lists(self, key: str, high: int | None = None, *, default: object = ...) -> tuple[tuple[int, ...], ...]:
        """A list of lists of ints in ``[0, high)`` (token ids, positions)."""
        value = self.get(key, lambda v: isinstance(v, list) and len(v) <= MAX_ITEMS and all(
            isinstance(row, list) and len(row) <= MAX_ITEMS
            and all(is_int(t) and 0 <= t and (high is None or t < high) for t in row)
            for row in v), "a list of lists of ints " + (f"in [0, {high})" if high else ">= 0"), default=default)
        return tuple(tuple(row) for row in value)

    def no_others(self) -> None:
        unknown = sorted(set(self.obj) - self.used)
        if unknown:
            raise ValueError(
                f"{self.path}: {self.where} has unknown fields {unknown}; expected only {sorted(self.used)}")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
