"""popsed-jax: the population distribution of galaxy properties from survey photometry (PopSED).

    import popsed_jax as pj
    model = pj.build_forward_model(filters=pj.SDSS_UGRIZ)      # exact, differentiable SPS
    flux = pj.compute_fluxes(model, theta)                      # (N, 11) -> (N, B) nanomaggies, checked
    mock = pj.draw_mock(2000, seed=1)                           # astropy Table with the truth
    res = pj.run_fit("sdss", pj.FitConfig(steps=300), "runs/quick")
    pj.make_science_products("runs/quick"); pj.write_report("runs/quick")

Subpackages, by role: ``physics`` (SSP grids, SFHs, dust, cosmology, photometry, the forward
model, literature relations), ``survey`` (catalogs, noise, selection, features, the observation
operator, mocks, independent masses), ``inference`` (flows, losses, the configuration, the pure
fit step), ``products`` (run folders, the fit driver, samples, evaluation, science products,
plots, the report), ``testing`` (the DSPS reference oracle). The names below are loaded on first
use, so ``import popsed_jax`` stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    # physics
    "build_forward_model": "physics.forward", "forward_fluxes": "physics.forward", "compute_fluxes": "physics.forward",
    "forward_mags": "physics.forward", "derived_quantities": "physics.forward", "check_theta": "physics.forward",
    "PARAM_NAMES": "physics.params", "PARAM_BOUNDS": "physics.params",
    "theta_from_columns": "physics.params", "theta_to_columns": "physics.params",
    "load_ssp_grid": "physics.ssp", "build_bc03_grid": "physics.ssp", "SDSS_UGRIZ": "physics.photometry",
    # survey
    "Catalog": "survey.catalog", "load_catalog": "survey.catalog", "read_table": "survey.catalog",
    "read_catalog": "survey.catalog", "write_catalog": "survey.catalog", "read_sdss_main": "survey.catalog",
    "fit_noise_model": "survey.noise", "Observation": "survey.observation", "make_observation": "survey.observation",
    "draw_mock": "survey.mock", "mock_to_catalog": "survey.mock",
    # inference
    "FitConfig": "inference.config", "FitProblem": "inference.fit", "FitState": "inference.fit",
    "prepare": "inference.fit",
    # products
    "run_fit": "products.runs", "evaluate_run": "products.runs", "RunFolder": "products.runfolder",
    "make_science_products": "products.science", "write_report": "products.report",
    # errors
    "PopsedError": "errors", "ConfigError": "errors", "CatalogError": "errors", "FitDiverged": "errors",
    "FitInterrupted": "errors", "RunFolderError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'popsed_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
