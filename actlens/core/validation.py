"""Checks that raise errors saying what was expected, what came, and how to fix it."""

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence


def choice(name: str, value: object, options: Sequence[str]) -> str:
    if value not in options:
        close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}{hint}")
    return str(value)


def layer(value: object, n_layers: int, *, name: str = "layer") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in [0, {n_layers}), got {value!r}")
    if not 0 <= value < n_layers:
        raise ValueError(
            f"{name} must be in [0, {n_layers}) for this {n_layers}-layer model, got {value}; "
            f"the residual stream entering block L is blocks.L.hook_resid_pre"
        )
    return value


def layers(values: object, total: int, *, name: str = "layers") -> list[int]:
    """Layers in ``[0, total)`` in the order given, without repeats; ``None`` means all of them.

    >>> layers([3, 1], 4), layers(None, 2)
    ([3, 1], [0, 1])
    """
    if values is None:
        return list(range(total))
    if isinstance(values, int | str) or not isinstance(values, Sequence | range):
        raise TypeError(f"{name} must be a list of ints (or None for all {total} layers), got {values!r}")
    out = [layer(value, total, name=f"{name}[{i}]") for i, value in enumerate(values)]
    if not out:
        raise ValueError(f"{name} is empty; pass at least one layer in [0, {total}) or None for all")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated layers {out}; pass each layer once")
    return out


def pair(value: object, *, name: str = "pair") -> tuple[str, str]:
    """A ``(plus, minus)`` pair of strings (the minus prompt may be empty, as in " weddings" - "")."""
    if not (isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(p, str) for p in value)):
        raise TypeError(f"{name} must be a (plus, minus) tuple of two strings such as ('Love', 'Hate'), got {value!r}")
    plus, minus = value
    if not plus and not minus:
        raise ValueError(f"{name} has two empty strings; at least the plus prompt needs text")
    return str(plus), str(minus)


def actadd_pair(plus: str, minus: str) -> None:
    """An ActAdd pair needs text on at least one side, and two sides that differ."""
    if not plus and not minus:
        raise ValueError(f"the ActAdd pair ({plus!r}, {minus!r}) is empty: its vector would be zero; pass a plus "
                         "prompt such as 'Love' (the minus prompt may be empty or ' ')")
    if plus == minus:
        raise ValueError(f"the ActAdd pair has the same text on both sides ({plus!r}): its vector would be zero; "
                         "pass two different prompts such as ('Love', 'Hate')")


def distinct_tokens(plus: str, minus: str, plus_ids: Sequence[int], minus_ids: Sequence[int]) -> None:
    """The two sides of an ActAdd pair, tokenised and padded, must differ (else the vector is zero)."""
    if list(plus_ids) == list(minus_ids):
        raise ValueError(f"the ActAdd pair ({plus!r}, {minus!r}) tokenises identically ({list(plus_ids)} after "
                         "padding the shorter side), so its vector would be zero; pass prompts that differ in tokens")


def finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}; pass a finite number such as 4.0")
    return float(value)


def texts(name: str, values: object, *, allow_empty_string: bool = False) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(values).__name__}")
    out = list(values)
    if not out:
        raise ValueError(f"{name} is empty; pass at least one string")
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(text).__name__} {text!r}")
        if not text and not allow_empty_string:
            raise ValueError(f"{name}[{i}] is an empty string; pass some text (e.g. 'I think')")
        encodable(f"{name}[{i}]", text)
    return out


def encodable(name: str, text: str) -> str:
    """Text a tokenizer can encode: no lone surrogates (e.g. ``"caf\\udce9"`` from bytes decoded with
    ``errors="surrogateescape"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{name} is not valid text: it holds {text[err.start:err.end]!r} at index {err.start}, a lone surrogate "
            f"that no tokenizer can encode; decode the source bytes with their real encoding (e.g. "
            f"data.decode('latin-1')) or drop those characters with text.encode('utf-8', 'ignore').decode()"
        ) from None
    return text


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {type(value).__name__} {value!r}; pass e.g. 8")
    return value


def batch_size(value: object, *, name: str = "batch_size") -> int | None:
    """A positive int, or None for "all at once"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(
            f"{name} must be a positive int or None (all in one batch), got {type(value).__name__} {value!r}; "
            "pass e.g. 8"
        )
    return int(value)


def seed(value: object, *, name: str = "seed") -> int:
    """A non-negative int (a bool, a string or a float is refused: ``seed=-1`` would wrap to 2**64-1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy ints are fine
        raise TypeError(f"{name} must be a non-negative int, got {type(value).__name__} {value!r}; pass e.g. 0")
    if value < 0 or value >= 2**63:
        raise ValueError(f"{name} must be in [0, 2**63), got {value}; pass e.g. 0")
    return int(value)
