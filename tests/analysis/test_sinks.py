"""actlens.analysis.sinks: massive-activation positions, the rows a vector reads at them, sink-aware ActAdd."""

import pytest
import torch

from actlens.analysis.norms import residual_scales
from actlens.analysis.sinks import sink_aware_actadd, sinks, touched
from actlens.steering import generation
from actlens.vectors import actadd_vector

TEXTS = ["I think so", "The end of the story"]


def test_sinks_flags_exactly_the_positions_above_threshold(tiny_models):
    model = tiny_models["llama"]
    report = sinks(model, TEXTS, threshold=1.3)
    frame = report.to_frame()
    assert frame.columns.tolist()[:4] == ["layer", "position", "token", "ratio"]
    assert len(frame) > 0 and bool((frame.ratio >= 1.3).all())
    flagged = sum(int((r >= 1.3).sum()) for r in report.ratios)
    assert len(frame) == flagged  # every cell above threshold has a row, no other
    medians = residual_scales(model)
    row = frame.iloc[0]
    assert row.norm == pytest.approx(row.ratio * float(medians[int(row.layer)]), rel=1e-5)
    assert row.token == model.tokenizer.decode([model.tokenizer.encode(TEXTS[int(row.text)])[int(row.position)]])
    assert sinks(model, TEXTS, threshold=1e6).to_frame().empty


def test_sinks_bad_input(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(ValueError, match="threshold must be > 1"):
        sinks(model, TEXTS, threshold=0.5)
    with pytest.raises(ValueError, match="empty"):
        sinks(model, [])
    with pytest.raises(ValueError, match="layer"):
        sinks(model, TEXTS, layers=[99])


def test_sink_aware_vector_zeroes_bos_and_prefix_rows_and_steers(tiny_models):
    model = tiny_models["llama"]
    v = sink_aware_actadd(model, "Love", "Hate", 2)
    head = len(model.tokenizer.encode("\n"))  # BOS + prefix
    assert torch.equal(v.values[:head], torch.zeros(head, v.d_model))
    assert bool(v.norms()[head:].sum() > 0) and "sink-aware" in v.notes
    assert v.plus_tokens[0][:head] == v.minus_tokens[0][:head]
    logits, _ = generation.steered_logits(model, ["I think that you are nice"], v, 4.0)
    base, _ = generation.steered_logits(model, ["I think that you are nice"])
    assert torch.equal(logits[:, :head], base[:, :head]) and not torch.equal(logits, base)


def test_sink_aware_zeroes_sink_rows_and_refuses_an_all_sink_vector(tiny_models):
    model = tiny_models["llama"]
    v0 = sink_aware_actadd(model, "Love", "Hate", 2, threshold=1e6)  # nothing counts as a sink
    ratios = {t.position: max(t.plus_ratio, t.minus_ratio) for t in touched(model, v0, threshold=1.0000001)}
    nonzero = [p for p in range(v0.k) if float(v0.norms()[p]) > 0]
    assert len(ratios) >= 2 and set(ratios) <= set(nonzero)
    cut = sorted(ratios.values())[len(ratios) // 2]
    v1 = sink_aware_actadd(model, "Love", "Hate", 2, threshold=cut)
    for p in nonzero:
        expected = torch.zeros(v0.d_model) if ratios.get(p, 0.0) >= cut else v0.values[p]
        assert torch.equal(v1.values[p], expected)
    if set(ratios) == set(nonzero):  # every content row is above some threshold > 1: that threshold empties it
        with pytest.raises(ValueError, match="every row of the sink-aware vector"):
            sink_aware_actadd(model, "Love", "Hate", 2, threshold=min(ratios.values()))
    with pytest.raises(ValueError, match="both empty"):
        sink_aware_actadd(model, "", "", 2)


def test_touched_lists_rows_read_at_sinks(tiny_models):
    model = tiny_models["gpt2"]
    v = actadd_vector(model, "Love", "Hate", 2)
    assert touched(model, v, threshold=1e6) == []
    hits = touched(model, v, threshold=1.0001)
    assert hits and all(max(t.plus_ratio, t.minus_ratio) >= 1.0001 and t.position > 0 for t in hits)
    from actlens.vectors import mean_diff_vector

    with pytest.raises(ValueError, match="per-position vector of one prompt pair"):
        touched(model, mean_diff_vector(model, [("a b", "c d")], 2))


@pytest.mark.slow
def test_smollm2_sinks_bos_and_first_token(smol):
    report = sinks(smol, ["I hate you because", "Love is here"], layers=[6])
    frame = report.to_frame()
    assert 0 in set(frame.position) and frame[frame.position == 0].ratio.min() > 5  # BOS: 8x here, ~180x at layers 2-4
    faithful = touched(smol, actadd_vector(smol, "Love", "Hate", 6))
    assert [t.position for t in faithful] == [1, 2]
    assert touched(smol, sink_aware_actadd(smol, "Love", "Hate", 6)) == []
