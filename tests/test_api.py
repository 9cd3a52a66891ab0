"""The public surface: ``import popsed_jax as pj`` gives the version and the names of the tour."""
from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys

import numpy as np
import pytest

import popsed_jax as pj


def test_version_is_the_installed_distributions():
    assert pj.__version__ == importlib.metadata.version("popsed-jax")


def test_import_is_cheap_and_names_resolve():
    # importing the package does not import jax (names load on first use) nor switch on x64
    code = "import sys, popsed_jax as pj; print(pj.__version__, 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [pj.__version__, "False"]
    for name in pj.__all__:
        assert getattr(pj, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        pj.nonexistent  # noqa: B018


@pytest.mark.parametrize("module", [
    "popsed_jax.physics.ssp", "popsed_jax.physics.sfh", "popsed_jax.physics.dust", "popsed_jax.physics.cosmology",
    "popsed_jax.physics.photometry", "popsed_jax.physics.params", "popsed_jax.physics.forward",
    "popsed_jax.physics.relations", "popsed_jax.physics.nebular", "popsed_jax.survey.catalog", "popsed_jax.survey.noise",
    "popsed_jax.survey.selection", "popsed_jax.survey.features", "popsed_jax.survey.observation",
    "popsed_jax.survey.mock", "popsed_jax.survey.independent", "popsed_jax.inference.flows",
    "popsed_jax.inference.loss", "popsed_jax.inference.config", "popsed_jax.inference.fit",
    "popsed_jax.products.runfolder", "popsed_jax.products.runs", "popsed_jax.products.evaluate",
    "popsed_jax.products.science", "popsed_jax.products.plots", "popsed_jax.products.report",
    "popsed_jax.testing.reference", "popsed_jax.errors", "popsed_jax.cli",
])
def test_every_public_module_declares_all(module):
    m = importlib.import_module(module)
    assert m.__all__ and all(hasattr(m, n) for n in m.__all__), [n for n in m.__all__ if not hasattr(m, n)]


def test_tour_forward_and_mock_from_top_level_names():
    model = pj.build_forward_model(filters=pj.SDSS_UGRIZ, z_max=0.3)
    theta = np.array([[0.1, 10.8, 0.4, 0.6, 0.3, 2.0, 0.1, -0.4, -0.5, 0.5, 0.4]])
    flux = np.asarray(pj.forward_fluxes(model, theta))
    assert flux.shape == (1, 5) and np.all(flux > 0)
    # 10x the mass formed is 10x the flux in every band
    brighter = theta.copy()
    brighter[0, 1] += 1.0
    np.testing.assert_allclose(np.asarray(pj.forward_fluxes(model, brighter)), 10 * flux, rtol=1e-5)
    mock = pj.draw_mock(50, seed=1, model=pj.build_forward_model(filters=pj.SDSS_UGRIZ, z_max=0.4))
    assert len(mock) == 50 and np.all(22.5 - 2.5 * np.log10(np.asarray(mock["flux_sdss2001-r"])) < 17.77)
    cat = pj.mock_to_catalog(mock)
    assert isinstance(cat, pj.Catalog) and cat.n == 50


def test_compute_fluxes_is_the_checked_entry_point():
    model = pj.build_forward_model(filters=pj.SDSS_UGRIZ, z_max=0.3)
    good = np.array([[0.1, 10.8, 0.4, 0.6, 0.3, 2.0, 0.1, -0.4, -0.5, 0.5, 0.4]])
    np.testing.assert_allclose(pj.compute_fluxes(model, good), np.asarray(pj.forward_fluxes(model, good)), rtol=1e-6)
    for j, value, match in ((0, -0.1, "'z' = -0.1 in row 1"), (2, 1.3, "'kappa1' = 1.3 in row 1"),
                            (10, -0.2, "'tau2' = -0.2 in row 1 must be >= 0")):
        bad = np.repeat(good, 2, axis=0)
        bad[1, j] = value
        with pytest.raises(ValueError, match=match):
            pj.compute_fluxes(model, bad)
