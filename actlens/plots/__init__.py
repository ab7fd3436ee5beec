"""Plot functions: each takes a result object and returns a ``plotly.graph_objects.Figure``.

They never show or write a figure; only ``actlens figures`` (and ``actlens bench``) write
files. Shared conventions live here: one template, a diverging scale centred at 0 for
signed quantities, sequential scales for norms and KL.
"""

TEMPLATE = "plotly_white"
DIVERGING = "RdBu"  # signed: cosine, logit-lens scores (zmid=0)
SEQUENTIAL = "Viridis"  # norms, KL
