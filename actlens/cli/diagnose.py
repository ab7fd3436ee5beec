"""``actlens diagnose``: why a vector steers or not, in one report.

For an ActAdd pair (``--plus/--minus``) or a saved vector (``--vector``) at a layer it prints:

1. the vector's norm per position against the typical residual norm at its layer;
2. the sinks it touches (:func:`actlens.analysis.sinks.touched`): rows read where the plus or minus prompt
   carries a massive activation, or, for a one-row vector added everywhere, the sink tokens the
   model has at that layer;
3. the coefficient that meets a KL budget on neutral text (:func:`actlens.analysis.calibrate`, default
   :data:`actlens.analysis.calibrate.DEFAULT_KL` nats per token);
4. the steerability report (:func:`actlens.analysis.steerability`) for the pairs: ``--pairs FILE`` (one
   ``positive<TAB>negative`` per line), a built-in set (``--pairs sentiment|weddings``), or the
   vector's own pairs when it is a mean difference of several.
"""

import argparse
import sys
from pathlib import Path

from actlens.core.helptext import plain

PAIR_SETS = ("sentiment", "weddings")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plus", default=None, help="positive prompt of an ActAdd pair")
    p.add_argument("--minus", default=None, help="negative prompt of an ActAdd pair")
    p.add_argument("--vector", default=None, help="a vector saved with SteeringVector.save (.safetensors)")
    p.add_argument("--layer", type=int, default=None, help="layer of --plus/--minus (required with them)")
    p.add_argument("--model", default="smollm2-135m", help="model name (tiny, tiny-gpt2: random test models)")
    p.add_argument("--kl", type=float, default=None, help="KL budget in nats per token (default 0.1)")
    p.add_argument("--align", choices=("front", "mid", "back", "all"), default=None,
                   help="how the vector is added (default: front for per-position vectors, all for one row)")
    p.add_argument("--pairs", default=None, help=f"pairs for the steerability report: a file of "
                   f"'positive<TAB>negative' lines or one of {list(PAIR_SETS)}")
    p.add_argument("--threshold", type=float, default=None, help="sink threshold (x median residual norm, default 4)")


def _load(name: str):
    from actlens.models.tiny import load_named

    return load_named(name)


def _pairs(spec: str | None, vector) -> list[tuple[str, str]] | None:
    if spec is None:
        return list(zip(vector.plus, vector.minus, strict=True)) if len(vector.plus) >= 2 else None
    if spec == "sentiment":
        from actlens.core.corpora import SENTIMENT_PAIRS

        return list(SENTIMENT_PAIRS)
    if spec == "weddings":
        from actlens.core.corpora import WEDDING_PAIRS

        return list(WEDDING_PAIRS)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--pairs {spec!r} is neither a file nor one of {list(PAIR_SETS)}")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'positive<TAB>negative', got {line!r}")
        out.append((parts[0], parts[1]))
    return out


def _check_fits(model, vector, path) -> None:
    """Refuse, before anything is printed, a vector from another model (its diagnostics would mean nothing)."""
    from actlens.models.model import identity
    from actlens.vectors import check_vector

    name = identity(model).name
    if vector.model.name != name and not vector.model.shape_mismatch(identity(model)):
        raise ValueError(f"{path} was extracted on model {vector.model.name!r}, not {name!r} (same shape, but a "
                         f"residual direction rarely means the same in another model); pass --model "
                         f"{vector.model.name} or extract the vector on {name!r}")
    try:
        check_vector(model, vector, name="the vector")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def report(args: argparse.Namespace, out=None) -> int:
    from actlens.analysis.calibrate import DEFAULT_KL, calibrate
    from actlens.analysis.norms import residual_scale
    from actlens.analysis.sinks import DEFAULT_THRESHOLD, sinks, touched
    from actlens.analysis.steerability import steerability
    from actlens.vectors import SteeringVector, actadd_vector

    if args.vector is None and (args.plus is None or args.minus is None):
        raise ValueError("pass --plus and --minus (an ActAdd pair) with --layer, or --vector FILE")
    if args.vector is not None and (args.plus is not None or args.minus is not None):
        raise ValueError("pass either --vector or --plus/--minus, not both")
    if args.vector is None and args.layer is None:
        raise ValueError("--plus/--minus need --layer (the residual stream entering block LAYER)")
    budget = DEFAULT_KL if args.kl is None else args.kl
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    model = _load(args.model)
    if args.vector is not None:
        vector = SteeringVector.load(args.vector)
        _check_fits(model, vector, args.vector)
        if args.layer is not None and args.layer != vector.layer:
            raise ValueError(f"{args.vector} was extracted at layer {vector.layer}, not --layer {args.layer}; "
                             "drop --layer or extract the vector again at that layer")
    else:
        vector = actadd_vector(model, args.plus, args.minus, args.layer)
    align = args.align or ("all" if vector.k == 1 else "front")
    scale = residual_scale(model, vector.layer)
    out = sys.stdout if out is None else out  # looked up per call (tests and callers may redirect it)
    say = lambda s="": print(s, file=out)  # noqa: E731
    say(f"# {vector!r}, added with align={align!r}")
    say()
    say(f"## Norms against the residual stream (typical ‖resid_pre‖ at layer {vector.layer}: {scale:.3g})")
    for p, norm in enumerate(vector.norms().tolist()):
        say(f"row {p}: ‖Δ‖ = {norm:.3g} = {norm / scale:.2f} typical residual norms")
    say()
    say(f"## Sinks (‖resid‖ ≥ {threshold:g}× the layer's median)")
    if vector.k > 1 and len(vector.plus_tokens) == 1:
        hits = touched(model, vector, threshold=threshold)
        for t in hits:
            say(f"row {t.position} reads a sink: {t.plus_token!r} {t.plus_ratio:.1f}× / {t.minus_token!r} "
                f"{t.minus_ratio:.1f}×; the row is {t.row_ratio:.1f}× a typical residual norm. Try "
                "actlens.analysis.sinks.sink_aware_actadd.")
        if not hits:
            say("no row is read at a sink")
    else:
        tokens = sinks(model, layers=[vector.layer], threshold=threshold).tokens()
        found = ", ".join(f"{t!r} ({r:.1f}×)" for t, r in zip(tokens.token.head(8), tokens.max_ratio.head(8), strict=True))
        say(f"a one-row vector is added at every position after BOS, sinks included; sink tokens after BOS at layer "
            f"{vector.layer}: {found or 'none found in the reference texts'}")
    say()
    say(f"## Strength for a KL budget of {budget:g} nats/token (12 neutral texts)")
    try:
        cal = calibrate(model, vector, target_kl=budget, align=align)
        say(f"coeff {cal.coeff:.4g} (= {cal.units:.3g} typical residual norms at the largest row); measured mean KL "
            f"{cal.mean_kl:.4g} nats/token")
    except ValueError as err:
        say(f"not found: {err}")
    say()
    say(f"## Steerability at layer {vector.layer}")
    pairs = _pairs(args.pairs, vector)
    if pairs is None:
        say("needs at least 2 contrast pairs: pass --pairs FILE ('positive<TAB>negative' per line) or --pairs "
            "sentiment|weddings")
    else:
        from actlens.core.corpora import EVAL_PROMPTS

        result = steerability(model, pairs, vector.layer, prompts=list(EVAL_PROMPTS[:12]))
        say(f"{len(pairs)} pairs: consistency {result.consistency:.3f}, held-out separation AUROC "
            f"{result.separation:.3f} ({result.folds}-fold), anti-steerable {result.anti_steerable:.0%} of 12 prompts "
            f"(mean difference of the pairs at coeff {result.coeff:.3g}, every position)")
        say(f"verdict: {result.verdict}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="actlens diagnose", description=plain(__doc__.split("\n\n")[0]))
    add_arguments(p)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return report(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"actlens diagnose: error: {err}", file=sys.stderr)
        return 2


__all__ = ["add_arguments", "main", "report"]
