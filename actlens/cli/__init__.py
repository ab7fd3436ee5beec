"""The ``actlens`` command: ``steer``, ``demo``, ``diagnose``, ``bench`` and ``figures``.

This package is the top layer: it may import every other. :data:`OWN_FLAGS` is the explicit table of the commands
that parse their own flags; ``steer`` and ``demo`` (:mod:`actlens.cli.demo`) are parsed here.
"""

import argparse
import os
import re
import sys
from pathlib import Path

# A negative number as a flag's value: -3, -1.5, -.5, -1e3, -2.5E-4, -inf. argparse takes "-1e3" for a
# flag (its own pattern knows only -3 and -1.5), so such values are joined to their flag ("--coeff=-1e3").
_NEGATIVE = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)
MAX_SEED = 2**63 - 1


def join_negative_values(argv: list[str]) -> list[str]:
    """``["--coeff", "-1e3"]`` -> ``["--coeff=-1e3"]``, for every ``--flag`` followed by a negative number.

    >>> join_negative_values(["steer", "--coeff", "-1e3", "--layer", "3", "--prompt", "-x"])
    ['steer', '--coeff=-1e3', '--layer', '3', '--prompt', '-x']
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if (arg.startswith("--") and "=" not in arg and arg != "--" and i + 1 < len(argv)
                and _NEGATIVE.match(argv[i + 1])):
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        if arg == "--":  # everything after is positional
            out.extend(argv[i:])
            break
        out.append(arg)
        i += 1
    return out


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {value}")
        return value

    return parse


def _output_path(flag: str, value: str | None, suffixes: tuple[str, ...]) -> None:
    """Check where ``flag`` will write before any model is loaded: a writable folder, the right suffix."""
    if value is None:
        return
    path = Path(value).expanduser()
    if path.is_dir():
        raise ValueError(f"{flag} {value!r} is a folder; pass a file name inside it")
    if suffixes and path.suffix not in suffixes:
        raise ValueError(f"{flag} {value!r} must end with {' or '.join(suffixes)}")
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag} {value!r}: the folder {folder} does not exist; create it (mkdir -p {folder}) "
                                "or pass another path")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{flag} {value!r}: the folder {folder} is not writable; pass another path")


def _steer_args(p: argparse.ArgumentParser, *, demo: bool) -> None:
    from actlens.cli import demo as d

    s = d.DEMO
    p.add_argument("--plus", default=s.plus, help="positive prompt of the pair")
    p.add_argument("--minus", default=s.minus, help="negative prompt of the pair")
    p.add_argument("--layer", type=_int_at_least(0), default=None,
                   help="inject at blocks.LAYER.hook_resid_pre (demo default: the model's measured setting)")
    p.add_argument("--coeff", type=float, default=None, help="coefficient (demo default: the measured setting)")
    p.add_argument("--prompt", action="append", default=None, help="user prompt (repeatable)")
    p.add_argument("--kind", choices=("actadd", "mean_diff"), default=None,
                   help="ActAdd pair difference, or mean difference over the built-in sentiment pairs")
    p.add_argument("--align", choices=("front", "mid", "back", "all"), default=None,
                   help="default: front for actadd, all for mean_diff")
    p.add_argument("--model", default="smollm2-135m", help="an embedded model (smollm2-135m, gemma-3-270m), a "
                   "GGUF file or a model folder")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--n", type=_int_at_least(1), default=1, help="completions per prompt (seeds seed..seed+n-1)")
    p.add_argument("--max-new-tokens", type=_int_at_least(1), default=s.max_new_tokens)
    p.add_argument("--save", default=None, help="write the vector here (.safetensors)")
    p.add_argument("--phase", choices=("both", "prompt", "generation"), default="both",
                   help="with --align all: steer prompt and generated tokens, the prompt only, or generated tokens only")
    p.add_argument("--chat", action="store_true",
                   help="prompts are user turns, wrapped in the model's chat template; print the assistant's replies")
    if demo:
        p.add_argument("--measure", action="store_true",
                       help="measure VADER sentiment of the candidate settings (24 prompts x 3 seeds, random control); "
                            "with --chat: the demo vector, raw-text and chat-formatted, per phase, in chat mode")
        p.add_argument("--measure-out", default=None, help="with --measure: write every completion here (JSON)")


def _bench():
    from actlens.bench import main

    return main


def _figures():
    from actlens.figures.build import main

    return main


def _diagnose():
    from actlens.cli.diagnose import main

    return main


# Commands that parse their own flags -> their main(argv), imported only when the command runs (the figures and the
# bench pull in plotly, pandas and every analysis; `actlens steer` needs none of that).
OWN_FLAGS = {"bench": _bench, "figures": _figures, "diagnose": _diagnose}


def _check_flags(args: argparse.Namespace) -> None:
    """Numeric ranges and flags that need another flag, checked before any model loads."""
    measure = getattr(args, "measure", False)
    if getattr(args, "measure_out", None) is not None and not measure:
        raise ValueError("--measure-out writes the completions of --measure; pass --measure as well, or drop "
                         "--measure-out")
    if measure:
        for flag, value in (("--save", args.save), ("--prompt", args.prompt)):
            if value is not None:
                raise ValueError(f"{flag} does nothing with --measure (it uses its own prompts and vectors); drop it")
    rows = 3 if measure else args.n  # --measure samples seeds seed..seed+2
    if args.seed > MAX_SEED - (rows - 1):
        raise ValueError(f"--seed {args.seed} with {rows} completion(s) per prompt needs seeds up to "
                         f"{args.seed + rows - 1}, beyond the largest seed {MAX_SEED} (2**63-1); pass --seed at most "
                         f"{MAX_SEED - (rows - 1)}")
    if not args.model.strip():
        from actlens.models import embedded

        raise ValueError(f"--model is empty; pass an embedded model {embedded.names()}, a GGUF file or a model folder")


def main(argv: list[str] | None = None) -> int:
    argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
    from actlens import __version__
    from actlens.core.helptext import plain

    parser = argparse.ArgumentParser(prog="actlens", description=plain(__doc__.split("\n\n")[0]))
    parser.add_argument("--version", action="version", version=f"actlens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _steer_args(sub.add_parser("steer", help="print paired unsteered/steered completions"), demo=False)
    from actlens.cli.demo import DEMOS
    from actlens.core.corpora import SENTIMENT_PAIRS

    demo_help = (f"paired unsteered/steered completions with the demo's vector: the mean difference of "
                 f"{len(SENTIMENT_PAIRS)} positive/negative sentence pairs, added at every position at the model's "
                 f"measured layer and coefficient (" +
                 "; ".join(f"{name}: layer {r.layer}, c {r.coeff:g}" for name, r in DEMOS.items()) + ")")
    _steer_args(sub.add_parser("demo", help=demo_help), demo=True)
    sub.add_parser("bench", help="throughput benchmark (see actlens bench --help)", add_help=False)
    sub.add_parser("figures", help="regenerate figures/ (see actlens figures --help)", add_help=False)
    sub.add_parser("diagnose", help="norms, sinks, calibrated strength and steerability of a vector "
                   "(see actlens diagnose --help)", add_help=False)
    if argv and argv[0] in OWN_FLAGS:
        return int(OWN_FLAGS[argv[0]]()(argv[1:]) or 0)
    args = parser.parse_args(argv)
    from actlens.cli import demo

    try:  # anticipated errors (bad input, files, the cache) are one line and exit code 2; others keep a traceback
        _check_flags(args)
        _output_path("--save", args.save, (".safetensors",))
        _output_path("--measure-out", getattr(args, "measure_out", None), ())
        return demo.run(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"actlens {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
