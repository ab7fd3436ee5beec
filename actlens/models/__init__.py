"""Loading and running a model: the TransformerBridge and its fast Hugging Face tree (:mod:`~actlens.models.model`),
the embedded GGUF models and their cache, tiny random models for tests, the final-residual readout and residual
activations. May import :mod:`actlens.core`."""
