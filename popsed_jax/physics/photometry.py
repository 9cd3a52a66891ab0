"""Filters and AB photometry on a uniform ln(lambda) grid.

Fluxes are in nanomaggies (AB, m = 22.5 - 2.5 log10 f). For a rest-frame spectrum
L_nu [Lsun/Hz] at redshift z (DSPS's calc_obs_mag convention):

    f / f_AB = (1+z) (10 pc / d_L)^2 int T(lam) L_nu(lam/(1+z)) dln(lam) / (AB0 int T dln(lam)),

AB0 = 3631 Jy placed at 10 pc, in Lsun/Hz. Integrals over ln(lambda) are sums on the
model's uniform grid; the filter normalisation uses the same sum, so a flat f_nu spectrum
gives its exact AB magnitude.
"""
from __future__ import annotations

import difflib
import functools
import os
from importlib import resources

import numpy as np

__all__ = [
    "ZP_NMGY", "F0_NMGY", "AB0_LSUN_HZ", "SDSS_UGRIZ", "DEFAULT_FILTERS",
    "mag_to_flux", "flux_to_mag", "magerr_to_fluxerr", "filter_names", "validate_filter_names",
    "load_filter_curves", "speclite_filters", "filter_support", "filter_matrix",
]

# --------------------------------------------------------------------------
# conventions: the one home of the zero point, flux <-> magnitude and the default bands
# --------------------------------------------------------------------------
ZP_NMGY = 22.5  # AB magnitude of 1 nanomaggy
F0_NMGY = 10.0 ** (0.4 * ZP_NMGY)  # 1 maggie in nanomaggies (1e9)
AB0_LSUN_HZ = 1.13492e-13  # 3631 Jy at 10 pc [Lsun/Hz] (DSPS's AB0)
# SDSS ugriz: the 2.5m imager's responses at 1.3 airmasses as measured in 2001 (shipped in
# popsed_jax/data/filters, from kcorrect), the curves the SDSS -> AB offsets (u -0.04, z +0.02)
# and kcorrect were derived with. speclite's later in-situ measurement, 'sdss2010-*' (Doi et al.
# 2010), has a u band 34 A redder: old populations come out 0.04-0.11 mag bluer in u - g, and
# the SDSS population fit places red galaxies ~0.015 too near (docs/physics.md#filter-curves).
SDSS_UGRIZ = ("sdss2001-u", "sdss2001-g", "sdss2001-r", "sdss2001-i", "sdss2001-z")
DEFAULT_FILTERS = SDSS_UGRIZ  # the forward model's and the mock's default bands


def mag_to_flux(mag, zero_point=ZP_NMGY):
    """AB magnitude -> flux in units of the zero point (nanomaggies by default)."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - zero_point))


def flux_to_mag(flux, zero_point=ZP_NMGY):
    """Flux (nanomaggies) -> AB magnitude; NaN for non-positive flux."""
    f = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, zero_point - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


def magerr_to_fluxerr(flux, mag_err):
    """1-sigma magnitude error -> flux error, sigma_f = (0.4 ln 10) |f| sigma_m."""
    return 0.4 * np.log(10.0) * np.abs(flux) * np.asarray(mag_err, dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _project_filter_files() -> dict:
    """Filter curves shipped with popsed-jax (name -> path): the SDSS 2001 responses."""
    root = resources.files("popsed_jax").joinpath("data").joinpath("filters")
    return {p.name[:-5]: str(p) for p in root.iterdir() if p.name.endswith(".ecsv")}


def filter_names() -> tuple:
    """All known filter names: speclite's (e.g. 'sdss2010-r') and popsed-jax's own
    ('sdss2001-u' ... 'sdss2001-z', the curves the SDSS AB offsets were derived with)."""
    root = resources.files("speclite").joinpath("data").joinpath("filters")
    names = {p.name[:-5] for p in root.iterdir() if p.name.endswith(".ecsv")}
    return tuple(sorted(names | set(_project_filter_files())))


def _close_matches(name) -> list:
    known = filter_names()
    close = difflib.get_close_matches(str(name), known, n=5, cutoff=0.5)
    return close or [k for k in known if str(name).lower() in k.lower()][:5]


def validate_filter_names(names) -> tuple:
    """Check names against the known filters (or existing .ecsv files); ValueError lists close matches."""
    known = filter_names()
    for name in names:
        if name in known or (str(name).endswith(".ecsv") and os.path.exists(name)):
            continue
        close = _close_matches(name)
        raise ValueError(
            f"unknown filter name {name!r}: not a speclite or popsed-jax filter"
            + (f"; close matches: {', '.join(close)}" if close else "")
            + "; see speclite.filters.filter_group_names for groups")
    return tuple(names)


def load_filter_curves(names) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Load filters by name -> list of (name, wavelength [A], response per photon).

    Names are speclite's, popsed-jax's own (``sdss2001-*``) or paths of speclite .ecsv files.
    An item may also be a (name, wavelength, response) tuple, used as it is."""
    import speclite.filters as sf

    own = _project_filter_files()
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        if isinstance(n, tuple):  # (name, wavelength [A], response) given directly
            out.append((n[0], np.asarray(n[1], float), np.asarray(n[2], float)))
            continue
        try:
            f = sf.load_filter(own.get(n, n))
        except Exception as err:  # speclite raises ValueError/RuntimeError/FileNotFoundError
            close = _close_matches(n)
            raise ValueError(f"unknown filter {n!r}" + (f"; did you mean {', '.join(close)}?" if close else "")) from err
        out.append((n, np.asarray(f.wavelength, float), np.asarray(f.response, float)))
    return out


def speclite_filters(names):
    """A speclite FilterSequence of the named filters (speclite's or popsed-jax's own), for
    speclite's tools (effective wavelengths, AB magnitudes of spectra)."""
    import speclite.filters as sf

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    own = _project_filter_files()
    validate_filter_names(names)
    return sf.load_filters(*[own.get(n, n) for n in names])


def filter_support(curves) -> tuple[float, float]:
    """Smallest and largest wavelength [A] with nonzero response over all filters."""
    lo = min(w[np.nonzero(r)[0][0] - 1 if np.nonzero(r)[0][0] > 0 else 0] for _, w, r in curves)
    hi = max(w[min(np.nonzero(r)[0][-1] + 1, w.size - 1)] for _, w, r in curves)
    return lo, hi


def filter_matrix(curves, wave_obs: np.ndarray) -> np.ndarray:
    """(n_obs, n_bands) responses sampled on a uniform ln(lambda) grid, each column divided
    by its sum: then sum_k L_nu[k] M[k, b] = int T L_nu dlnlam / int T dlnlam."""
    m = np.stack([np.interp(wave_obs, w, r, left=0.0, right=0.0) for _, w, r in curves], axis=1)
    if np.any(m.sum(0) <= 0):
        bad = [curves[i][0] for i in np.nonzero(m.sum(0) <= 0)[0]]
        raise ValueError(f"filters {bad} have no response on the model's wavelength grid")
    return m / m.sum(0, keepdims=True)
