"""Rows for analysis modules written alongside the core (per-token KL, sweeps).

Each is registered as optional: when its module is missing the row is listed under
"skipped" with the reason instead of failing the run.
"""
