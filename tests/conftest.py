"""Shared fixtures: the real BC03 grid (built on first use), bases, models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

def pytest_configure(config):
    """Compiled programs are shared by tests that build the same model and step (XLA compile
    is a large share of the suite's time on CPU); ``POPSED_JAX_COMPILE_CACHE=0`` turns it off."""
    from popsed_jax.compile_cache import enable_compile_cache

    enable_compile_cache()


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NMF_DIR = SHARED / "nmf_sfh"


@pytest.fixture(scope="session")
def grid():
    from popsed_jax.physics import ssp

    return ssp.load_ssp_grid()


@pytest.fixture(scope="session")
def bases():
    from popsed_jax.physics import sfh

    return sfh.load_sfh_bases()


@pytest.fixture(scope="session")
def model(grid, bases):
    from popsed_jax.physics.forward import build_forward_model

    return build_forward_model(grid=grid, bases=bases)


@pytest.fixture(scope="session")
def provabgs_bases():
    from popsed_jax.physics import sfh

    if not NMF_DIR.exists():
        pytest.skip("../shared/data/nmf_sfh not present")
    return sfh.load_sfh_bases(NMF_DIR / "NMF_2basis_SFH_components_nowgt_lin_Nc4.txt", NMF_DIR / "sfh_t_int.txt")


def random_theta(n, seed=0, z_lo=0.01, z_hi=0.8, snap_burst_to=None):
    """Uniform draws over the whole parameter box (docs/design.md section 2)."""
    from popsed_jax.physics.forward import PARAM_BOUNDS, PARAM_NAMES

    rng = np.random.default_rng(seed)
    lo = np.array([PARAM_BOUNDS[n][0] for n in PARAM_NAMES])
    hi = np.array([PARAM_BOUNDS[n][1] for n in PARAM_NAMES])
    lo[0], hi[0] = z_lo, z_hi
    th = lo + (hi - lo) * rng.random((n, len(PARAM_NAMES)))
    if snap_burst_to is not None:
        ages = 10 ** np.asarray(snap_burst_to)
        th[:, 5] = ages[np.argmin(np.abs(np.log10(ages)[None] - np.log10(th[:, 5])[:, None]), 1)]
    return th
