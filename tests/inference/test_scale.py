"""A training step's cost must not grow with the catalog (issue: survey-size catalogs)."""
from __future__ import annotations

import jax
import numpy as np

from popsed_jax.inference.fit import EXACT_MINIBATCH_MAX, minibatch_index


def _largest_intermediate(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.eqns for v in eqn.outvars if hasattr(v.aval, "shape")]
    return max(sizes)


def test_minibatch_has_no_catalog_sized_work():
    key = jax.random.PRNGKey(0)
    big = 10_000_000
    # above the threshold nothing of the catalog's size is made (no permutation of n)
    assert _largest_intermediate(lambda k: minibatch_index(k, big, 2048), key) < 10_000
    idx = np.asarray(minibatch_index(key, big, 2048))
    assert idx.min() >= 0 and idx.max() < big and len(np.unique(idx)) >= 2040
    # below it, the exact draw without replacement (the small-catalog behaviour)
    small = EXACT_MINIBATCH_MAX
    idx = np.asarray(minibatch_index(key, small, 2048))
    assert len(np.unique(idx)) == 2048 and idx.max() < small
    assert _largest_intermediate(lambda k: minibatch_index(k, small, 2048), key) >= small


def test_validation_split_is_capped(monkeypatch):
    """The validation split (whose divergence costs O(n_val) a validation) stops growing at VAL_MAX."""
    from popsed_jax.inference import fit as fitlib
    from popsed_jax.inference.config import FitConfig
    from popsed_jax.survey.catalog import load_catalog

    cat = load_catalog("sdss")
    monkeypatch.setattr(fitlib, "VAL_MAX", 500)
    p = fitlib.prepare(cat, FitConfig())
    assert p.obs_val.shape[0] == 500
    assert p.obs_train.shape[0] + 500 == int(np.sum(cat.flux[:, 2] > 10 ** (-0.4 * (17.77 - 22.5))))
