"""The persistent compilation cache: on where asked, off on request, the user's own choice kept."""
from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys, jax, jax.numpy as jnp
from popsed_jax.compile_cache import enable_compile_cache
hits = []
jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
print(enable_compile_cache(sys.argv[1], min_compile_seconds=0.0))
f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) ** 2, axis=0) @ jnp.cos(x).T)
print(float(f(jnp.ones((64, 64))).sum()), len(hits) > 0)
"""


def _probe(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    e.update(env or {})
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env=e, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_a_compiled_program_is_written_and_read_back_with_the_same_result(tmp_path):
    d = tmp_path / "jc"
    first = _probe(str(d))
    assert first[0] == str(d) and first[2] == "False" and any(d.iterdir())  # compiled, written
    second = _probe(str(d))
    assert second[2] == "True" and second[:2] == first[:2]  # read back: the same result


def test_switched_off_and_the_users_own_directory_kept(tmp_path):
    assert _probe(str(tmp_path / "jc"), env={"POPSED_JAX_COMPILE_CACHE": "0"})[0] == "None"
    assert not (tmp_path / "jc").exists()
    mine = tmp_path / "mine"
    assert _probe(str(tmp_path / "jc"), env={"JAX_COMPILATION_CACHE_DIR": str(mine)})[0] == str(mine)
