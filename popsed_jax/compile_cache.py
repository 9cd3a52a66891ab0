"""JAX's persistent compilation cache for the command line and the tests.

Every ``popsed-jax`` command compiles the same forward model, flow and loss again. With the
cache warm, the test suite's tiny end-to-end fit took 74 s of CPU instead of 152 s, and
``popsed-jax plot`` 39 s instead of 44 s. With the cache on, a
compiled program whose HLO, compile options and jax/jaxlib versions match one compiled before is
read back from disk instead (the key covers all of these, so a code change or an upgrade simply
misses). The results are the same executables, bit for bit.

The cache lives in ``<popsed-jax cache>/jax-compile`` (see :func:`popsed_jax.physics.ssp.cache_dir`).
``POPSED_JAX_COMPILE_CACHE=0`` switches it off; a cache directory already set for JAX (the
``JAX_COMPILATION_CACHE_DIR`` variable or ``jax.config``) is left as it is. The library never turns
it on by itself on import: only :func:`popsed_jax.cli.main` and the test suite call
:func:`enable_compile_cache`.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["enable_compile_cache", "MIN_COMPILE_SECONDS", "MAX_BYTES"]

MIN_COMPILE_SECONDS = 0.5  # programs that compile faster than this are not worth a file
MAX_BYTES = 1 << 30  # least recently used programs are dropped beyond 1 GiB (the test suite writes ~100 MB)


def enable_compile_cache(path: str | os.PathLike | None = None, min_compile_seconds: float = MIN_COMPILE_SECONDS) -> Path | None:
    """Turn on JAX's persistent compilation cache at ``path`` (default: the popsed-jax cache
    directory's ``jax-compile``). Returns the directory in use, or None when it is switched off
    (``POPSED_JAX_COMPILE_CACHE=0``). Programs that compile in less than ``min_compile_seconds``
    are not stored. Call it before the first computation."""
    import jax

    if os.environ.get("POPSED_JAX_COMPILE_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:  # the user's own choice wins
        return Path(current)
    if path is None:
        from .physics.ssp import cache_dir

        path = cache_dir() / "jax-compile"
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path
