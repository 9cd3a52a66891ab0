"""Import DSPS without letting it change the process's floating-point precision.

``import dsps`` runs ``dsps/sed/__init__.py``, which calls
``jax.config.update("jax_enable_x64", True)`` for the whole process. popsed-jax keeps
its hot path in float32, so every DSPS import in this package goes through
:func:`import_dsps`, which restores the flag the caller had.
"""
from __future__ import annotations

import importlib

import jax


def _global_x64() -> bool:
    """The process-wide value of jax_enable_x64 (not a ``with jax.enable_x64()`` override)."""
    state = getattr(getattr(jax, "_src", None), "config", None)
    state = getattr(state, "enable_x64", None)
    if state is not None and hasattr(state, "get_global"):
        return bool(state.get_global())
    return bool(jax.config.jax_enable_x64)


def import_dsps(module: str = "dsps"):
    """Import ``module`` (a dsps module path) and restore the global ``jax_enable_x64``."""
    before = _global_x64()
    try:
        mod = importlib.import_module(module)
    finally:
        jax.config.update("jax_enable_x64", before)
    return mod
