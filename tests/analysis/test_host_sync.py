"""The per-token analyses never make the host wait for the device inside their loops.

On a GPU every ``.item()``, ``bool(tensor)``, ``.tolist()``, ``.cpu()``, ``nonzero`` or boolean
index of a device tensor waits until the device has finished everything queued before it, so a
loop that does one per block runs at the speed of the round trips (``kl_per_token`` ran at 0.57×
its raw forwards on an H200 before issue 21). No GPU is needed to catch one creeping back in:
:class:`SyncCounter` follows every tensor computed from the model's weights (a torch function
mode tags the outputs of any op with a tagged input) and counts the calls that would wait on
such a tensor if it lived on a GPU. The analyses may copy their results to the host once at the
end, so the tests assert that the count does not grow with the number of chunks and blocks, and
stays small. The ``gpu`` tests repeat this on CUDA with torch's own sync detector.
"""

import warnings
import weakref

import pytest
import torch
from torch.overrides import TorchFunctionMode

import actlens
from actlens.analysis import kl as kl_module
from actlens.analysis import klcurve as klcurve_module
from actlens.vectors import actadd_vector

# Tensor methods that copy to the host or read values there (wait for the device on a GPU).
SYNCING = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "numpy", "nonzero", "cpu",
           "masked_select", "argwhere", "unique", "equal", "allclose"}
INDEXING = {"__getitem__", "__setitem__", "index_put_", "index_put"}

TEXTS = ["I think that you are a nice person and", "The weather is", "Hello there my good old friend of mine",
         "Once upon a time in a land far away"]


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


class SyncCounter(TorchFunctionMode):
    """Counts host-syncing calls on tensors computed from ``model``'s weights (``self.calls``: name -> count).

    ``.cpu()`` returns a copy, as it does from a GPU, so what is done to the result afterwards (on the
    host) is not counted.
    """

    def __init__(self, model):
        super().__init__()
        self._tagged: dict[int, weakref.ref] = {}
        self._written: dict[int, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        for t in (*model.parameters(), *model.buffers()):
            self._tag(t)

    def _tag(self, t: torch.Tensor) -> None:
        self._tagged[id(t)] = weakref.ref(t)

    def _is_tagged(self, t: torch.Tensor) -> bool:
        ref = self._tagged.get(id(t))
        if ref is not None and ref() is t:
            return True
        return bool(self._written) and t.device.type != "meta" and t.untyped_storage().data_ptr() in self._written

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs = list(_tensors(args)) + list(_tensors(kwargs))
        tagged = any(self._is_tagged(t) for t in inputs)
        if tagged:
            index = list(_tensors(args[1:2])) if name in INDEXING else []
            bool_index = any(t.dtype == torch.bool for t in index)
            # .to("cpu") spelt out (a device object cannot be told apart from a GPU's on this CPU-only run)
            to_host = name == "to" and "cpu" in (*args[1:], kwargs.get("device"))
            if name in SYNCING or bool_index or to_host:
                self.calls[name] = self.calls.get(name, 0) + 1
        out = func(*args, **kwargs)
        if tagged and name in ("cpu", "to") and isinstance(out, torch.Tensor) and out is args[0]:
            return out.clone()  # a host copy, as from a GPU: later host-side work is not counted
        if tagged:
            for t in _tensors(out):
                self._tag(t)
            if (name == "__setitem__" or name.endswith("_")) and args and isinstance(args[0], torch.Tensor):
                # written in place, maybe through a view (whose base inference mode does not record): every
                # tensor on that storage now holds tagged values. The view is kept, so the storage stays.
                self._written[args[0].untyped_storage().data_ptr()] = args[0]
        return out


def _count(model, fn):
    with SyncCounter(model) as counter:
        fn()
    return counter


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 4 positions, so that a few short texts make many blocks per chunk."""
    monkeypatch.setattr(kl_module, "block_rows", lambda device, vocab: 4)
    monkeypatch.setattr(klcurve_module, "block_rows", lambda device, vocab: 4)


def _both(model, run):
    """Counts for 1 chunk of 1 text and for 4 chunks of 2 texts (many blocks each)."""
    run(TEXTS[:1], 1)  # first use per model and layer checks the unembedding split and the resumed forward
    few = _count(model, lambda: run(TEXTS[:1], 1))
    many = _count(model, lambda: run(TEXTS * 2, 2))
    return few, many


def test_the_counter_sees_syncs(tiny_models):
    model = tiny_models["llama"]
    weight = next(model.parameters())

    def leaky():
        x = weight * 2
        _ = x.sum().item(), bool(x.any()), x[x > 0], x.tolist()
        torch.ones(3)[torch.ones(3) > 0].sum().item()  # untagged: not counted

    assert _count(model, leaky).calls == {"item": 1, "__bool__": 1, "__getitem__": 1, "tolist": 1}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("control", [True, False])
def test_kl_per_token_syncs_once_at_the_end(tiny_models, small_blocks, arch, control):
    model = tiny_models[arch]
    v = actadd_vector(model, "Love", "Hate", 1)
    few, many = _both(model, lambda texts, b: actlens.kl_per_token(model, texts, v, 4.0, batch_size=b,
                                                                    control=control))
    assert few.calls == many.calls, (few.calls, many.calls)
    assert set(many.calls) <= {"cpu"} and many.total == 1 + 3 * (1 + control)  # the final copies


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3", "native"])
def test_kl_curve_syncs_once_at_the_end(tiny_models, small_blocks, arch):
    model = tiny_models[arch]
    v = actadd_vector(model, "Love", "Hate", 1)
    few, many = _both(model, lambda texts, b: actlens.kl_curve(model, texts, v, [0.5, 2.0, 8.0], batch_size=b))
    assert few.calls == many.calls, (few.calls, many.calls)
    assert many.calls == {"cpu": 1}


def test_propagation_and_transfer_sync_once_at_the_end(tiny_models, small_blocks):
    from actlens.analysis.propagation import propagation, transfer_matrix

    model = tiny_models["llama"]
    v = actadd_vector(model, "Love", "Hate", 1)
    few, many = _both(model, lambda texts, b: propagation(model, v, 4.0, texts, batch_size=b))
    assert few.calls == many.calls and set(many.calls) <= {"cpu"}, (few.calls, many.calls)
    few, many = _both(model, lambda texts, b: transfer_matrix(model, ("Love", "Hate"), [1, 2], 4.0, texts,
                                                               batch_size=b))
    assert few.calls == many.calls, (few.calls, many.calls)


def test_steering_hooks_do_not_read_the_vector(tiny_models):
    """Building and running steer / steer_rows hooks reads nothing back (Addition.key of a device vector)."""
    from actlens.models.model import hook_name, padding
    from actlens.steering.batched import Request, steer_rows

    model = tiny_models["llama"]
    v = actadd_vector(model, "Love", "Hate", 1)
    w = actadd_vector(model, "Up", "Down", 1)
    resid = torch.zeros(3, 9, int(model.cfg.d_model))
    point = model.hook_dict[hook_name(1)]

    def run():
        with padding(model, [2, 0, 1], [7, 9, 8]):
            with actlens.steer(model, v, 3.0):
                point(resid)
            with steer_rows(model, [Request(v, 2.0), None, Request(w, 1.0, "all", 1)]):
                point(resid)

    counter = SyncCounter(model)
    counter._tag(resid)
    with counter:
        run()
    assert counter.calls.get("numpy", 0) == 0
    # on the CPU, equal vectors still share a hook term: Addition.key compares values there
    from actlens.steering.intervene import additions

    a, b = (additions(model, v.with_values(v.values.clone()), 2.0)[hook_name(1)][0] for _ in range(2))
    assert a.key() == b.key()


# --- on a GPU (.ci/gpu) ---------------------------------------------------------------------------
def _cuda_syncs(fn) -> int:
    """Synchronising CUDA calls made by ``fn`` (torch's sync debug mode, counted as warnings)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_cuda_analyses_do_not_sync_per_block(arch, monkeypatch):
    """On CUDA, extra chunks and blocks add the forwards' own syncs (Hugging Face's mask checks) and no more."""
    from actlens.models.model import forward
    from actlens.models.tiny import tiny_hf

    hf, tok = tiny_hf(arch)
    model = actlens.load_model(hf, tokenizer=tok, device="cuda")
    v = actadd_vector(model, "Love", "Hate", 1)
    monkeypatch.setattr(kl_module, "block_rows", lambda device, vocab: 4)
    monkeypatch.setattr(klcurve_module, "block_rows", lambda device, vocab: 4)
    few, many = TEXTS[:1], TEXTS * 2

    def forwards(texts, n):  # the forwards an analysis makes: n per chunk of 2 texts
        for i in range(0, len(texts), 2):
            batch = actlens.core.prompts.encode_batch(model, texts[i:i + 2])
            with actlens.models.model.padding(model, batch.starts, batch.lengths):
                for _ in range(n):
                    forward(model, batch.tokens, batch.attention_mask)

    runs = {
        "kl_per_token": (lambda t: actlens.kl_per_token(model, t, v, 4.0, batch_size=2), 3),
        "kl_curve": (lambda t: actlens.kl_curve(model, t, v, [0.5, 2.0, 8.0], batch_size=2), 2),
    }
    for name, (fn, n) in runs.items():
        fn(few)  # first use checks the unembedding split and the resumed forward (once per model)
        extra = {key: _cuda_syncs(lambda t=t: fn(t)) - _cuda_syncs(lambda t=t: forwards(t, n))
                 for key, t in (("few", few), ("many", many))}
        assert extra["many"] <= extra["few"] + 2, (name, extra)  # nothing per chunk or block beyond the forwards'
        assert extra["many"] <= 24, (name, extra)  # the final copies and the per-call checks of the vector
