"""Docstrings as plain text for ``--help``: the commands use their module docstrings as descriptions.

Docstrings keep two reStructuredText habits, double backticks and Sphinx roles (the docs site renders them as
Markdown); a terminal shows them literally, so the command line drops them.

>>> plain("The ``actlens`` command: see :mod:`actlens.cli.demo` and :func:`~actlens.steer`.")
'The actlens command: see actlens.cli.demo and steer.'
"""

import re

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const|type)?:`(~?)([^`]+)`")
_DOUBLE = re.compile(r"``(.+?)``")


def plain(text: str) -> str:
    """``text`` without reStructuredText markup: ``x`` becomes x, :role:`a.b` a.b and :role:`~a.b` b."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return _DOUBLE.sub(r"\1", text)
