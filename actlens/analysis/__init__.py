"""What explains a steering vector: norms, cosine across layers, logit lens, per-token KL and KL curves,
propagation, attention sinks, steerability, calibration to a KL budget, and layer ablation.
May import core, models, vectors and steering."""
