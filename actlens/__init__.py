"""actlens: activation engineering (ActAdd, arXiv 2308.10248) on TransformerLens 4.

The data flow: prompts -> activations -> vectors -> intervene / generation -> analysis.
"""

from actlens.activations import resid_pre
from actlens.generation import Generation, PairedGeneration, generate, steered_logits
from actlens.intervene import steer
from actlens.model import ModelIdentity, forward, hook_name, load_model
from actlens.vectors import SteeringVector, actadd_vector, mean_diff_vector, random_like

__version__ = "0.1.0"

__all__ = [
    "Generation",
    "ModelIdentity",
    "PairedGeneration",
    "SteeringVector",
    "__version__",
    "actadd_vector",
    "forward",
    "generate",
    "hook_name",
    "load_model",
    "mean_diff_vector",
    "random_like",
    "resid_pre",
    "steer",
    "steered_logits",
]
