"""Scores of a recovered population against a truth (popsed_jax.products.evaluate)."""
from __future__ import annotations

import numpy as np
import pytest

from popsed_jax.products import evaluate as ev


@pytest.fixture(scope="module")
def sdss():
    from popsed_jax.survey.catalog import read_sdss_main
    from popsed_jax.survey.noise import fit_noise_model
    from popsed_jax.survey.selection import select_catalog
    from popsed_jax.survey.features import softening_from_noise

    cat = read_sdss_main()
    return select_catalog(cat, "r<17.77").flux, softening_from_noise(fit_noise_model(cat))


def test_distinguishability_permutation_test_on_real_photometry(sdss):
    """Real SDSS fluxes: a disjoint part of the same catalog is not told apart from the truth
    (|z| small, p above the minimum); the same galaxies with g fainter by 0.2 mag are."""
    flux, soft = sdss
    perm = np.random.default_rng(3).permutation(len(flux))
    truth, other = flux[perm[:5000]], flux[perm[5000:]]
    kw = dict(epsilon=0.1, n_max=1000, n_permutations=9)
    same = ev.photometric_distinguishability(other, truth, soft, **kw)
    assert same["converged"] and same["n"] == 1000
    assert same["z"] < 3 and same["p"] > 0.1, same
    shifted = other.copy()
    shifted[:, 1] *= 10 ** (-0.4 * 0.2)
    diff = ev.photometric_distinguishability(shifted, truth, soft, **kw)
    assert diff["z"] > 5 and diff["p"] == pytest.approx(0.1), diff
    assert diff["ratio"] > same["ratio"]
    with pytest.raises(ValueError, match="too few rows"):
        ev.photometric_distinguishability(other[:10], truth, soft)


def test_normalized_w1_scale_and_limits():
    """0 for the truth itself, 1 for the prior, and W1 of a shift is the shift."""
    rng = np.random.default_rng(0)
    t = {"z": rng.normal(0.1, 0.03, 4000)}
    p = {"z": rng.uniform(0, 0.6, 4000)}
    assert ev.normalized_w1(p, t, p)["z"] == pytest.approx(1.0)
    assert ev.normalized_w1({"z": t["z"] + 0.01}, t, p)["z"] == pytest.approx(0.01 / ev.w1(p, t, "z"), rel=1e-6)
    assert ev.w1({"z": t["z"] + 0.01}, t, "z") == pytest.approx(0.01, rel=1e-6)
