"""Import DSPS without letting it change the process's floating-point precision.

``import dsps`` runs ``dsps/sed/__init__.py``, which calls
``jax.config.update("jax_enable_x64", True)`` for the whole process. popsed-jax keeps
its hot path in float32, so every DSPS import in this package goes through
:func:`import_dsps`, which restores the flag the caller had.
"""
from __future__ import annotations

import importlib

import jax


def import_dsps(module: str = "dsps"):
    """Import ``module`` (a dsps module path) and restore ``jax_enable_x64``."""
    before = bool(jax.config.jax_enable_x64)
    try:
        mod = importlib.import_module(module)
    finally:
        jax.config.update("jax_enable_x64", before)
    return mod
