"""The ``actlens`` command: ``steer``, ``demo``, ``bench`` and ``figures``."""

import argparse
import sys


def _steer_args(p: argparse.ArgumentParser, *, demo: bool) -> None:
    from actlens import demo as d

    s = d.DEMO
    p.add_argument("--plus", default=s.plus, help="positive prompt of the pair")
    p.add_argument("--minus", default=s.minus, help="negative prompt of the pair")
    p.add_argument("--layer", type=int, default=s.layer, help="inject at blocks.LAYER.hook_resid_pre")
    p.add_argument("--coeff", type=float, default=s.coeff)
    p.add_argument("--prompt", action="append", default=None, help="user prompt (repeatable)")
    p.add_argument("--kind", choices=("actadd", "mean_diff"), default="actadd" if not demo else s.kind,
                   help="ActAdd pair difference, or mean difference over the built-in sentiment pairs")
    p.add_argument("--align", choices=("front", "mid", "back", "all"), default=None,
                   help="default: front for actadd, all for mean_diff")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1, help="completions per prompt (seeds seed..seed+n-1)")
    p.add_argument("--max-new-tokens", type=int, default=s.max_new_tokens)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="actlens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _steer_args(sub.add_parser("steer", help="print paired unsteered/steered completions"), demo=False)
    _steer_args(sub.add_parser("demo", help="the README example: Love - Hate on the embedded model"), demo=True)
    sub.add_parser("bench", help="throughput benchmark (see `actlens bench --help`)", add_help=False)
    sub.add_parser("figures", help="regenerate figures/ (see `actlens figures --help`)", add_help=False)
    if argv and argv[0] in ("bench", "figures"):  # these own their flags
        module = __import__(f"actlens.{'bench' if argv[0] == 'bench' else 'figures'}", fromlist=["main"])
        return int(module.main(argv[1:]) or 0)
    args = parser.parse_args(argv)
    from actlens import demo

    try:
        return demo.run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"actlens {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
