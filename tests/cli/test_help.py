"""`actlens --help` and each command's help read as plain text, say what they do, and `actlens --version` works."""

import re

import pytest

import actlens
from actlens.cli import main
from actlens.cli.demo import DEMOS

MARKUP = re.compile(r"``|`|:(?:func|class|meth|mod|data|attr|exc|obj):")


def help_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["steer"], ["demo"], ["bench"], ["figures"], ["diagnose"]],
                         ids=lambda c: c[0] if c else "actlens")
def test_help_has_no_restructuredtext_markup(command, capsys):
    text = help_of(command, capsys)
    assert text.startswith("usage: actlens"), text[:200]
    found = MARKUP.findall(text)
    assert not found, f"`actlens {' '.join(command)} --help` shows markup {found}:\n{text}"


def test_demo_help_names_the_demo_vector(capsys):
    text = " ".join(help_of([], capsys).split())
    assert "Love - Hate" not in text and "Love − Hate" not in text
    assert "mean difference of 12 positive/negative sentence pairs" in text
    for name, recipe in DEMOS.items():
        assert recipe.kind == "mean_diff", "the help says the demo uses a mean-difference vector"
        assert f"{name}: layer {recipe.layer}, c {recipe.coeff:g}" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"actlens {actlens.__version__}"
