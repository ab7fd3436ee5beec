"""actlens: activation engineering (ActAdd, arXiv 2308.10248) on TransformerLens 4.

The data flow, and the subpackages in layers (each imports only from those before it):
core (prompts, positions, metrics) -> models -> vectors -> steering (hooks, generation) -> analysis ->
experiments (sweeps) -> plots -> figures -> cli and bench. This face re-exports the public API.
"""

import sys

from actlens import _compat
from actlens.analysis.calibrate import calibrate
from actlens.analysis.cosine import cosine_across_layers
from actlens.analysis.kl import kl_per_token
from actlens.analysis.klcurve import kl_curve
from actlens.analysis.logit_lens import logit_lens
from actlens.analysis.mediation import mediation
from actlens.analysis.norms import coeff_from_units, norm_profile
from actlens.analysis.propagation import propagation, transfer_matrix
from actlens.analysis.sinks import sink_aware_actadd, sinks
from actlens.analysis.steerability import steerability
from actlens.core.sampling import Sampling
from actlens.experiments.distributed import RayWorkers
from actlens.experiments.grid import Grid
from actlens.experiments.sweeps import sweep
from actlens.models.activations import resid_pre
from actlens.models.model import ModelIdentity, forward, hook_name, load_model
from actlens.steering.conditional import conditional
from actlens.steering.generation import Generation, PairedGeneration, generate, steered_logits
from actlens.steering.intervene import steer
from actlens.vectors import SteeringVector, actadd_vector, mean_diff_vector, random_like
from actlens.vectors.chat import chat_actadd_vector, chat_mean_diff_vector
from actlens.vectors.pca import pca_vector
from actlens.vectors.probe import probe_vector
from actlens.vectors.specs import mean_diff_spec, pair_spec

_compat.install(sys.modules[__name__])  # old module paths (actlens.analysis.kl, actlens.experiments.sweeps, ...) keep importing, with a DeprecationWarning

__version__ = "0.1.0"
"""The installed actlens version (also `actlens --version`)."""

__all__ = [
    "Grid",
    "Sampling",
    "Generation",
    "ModelIdentity",
    "PairedGeneration",
    "RayWorkers",
    "SteeringVector",
    "__version__",
    "actadd_vector",
    "calibrate",
    "chat_actadd_vector",
    "chat_mean_diff_vector",
    "conditional",
    "coeff_from_units",
    "cosine_across_layers",
    "forward",
    "generate",
    "hook_name",
    "kl_curve",
    "kl_per_token",
    "logit_lens",
    "load_model",
    "mean_diff_spec",
    "mean_diff_vector",
    "mediation",
    "norm_profile",
    "pair_spec",
    "pca_vector",
    "probe_vector",
    "propagation",
    "random_like",
    "resid_pre",
    "steer",
    "steered_logits",
    "sink_aware_actadd",
    "sinks",
    "steerability",
    "sweep",
    "transfer_matrix",
]
