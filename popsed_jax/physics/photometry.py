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

import numpy as np

AB0_LSUN_HZ = 1.13492e-13  # 3631 Jy at 10 pc [Lsun/Hz] (DSPS's AB0)
DEFAULT_FILTERS = ("sdss2010-u", "sdss2010-g", "sdss2010-r", "sdss2010-i", "sdss2010-z")
NMGY_ZP = 22.5


def available_filter_names() -> list[str]:
    import speclite.filters as sf

    names = []
    for group in sf.filter_group_names:
        try:
            names += list(sf.load_filters(group + "-*").names)
        except Exception:  # noqa: BLE001 - a broken group must not hide the others
            pass
    return names


def load_filter_curves(names) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Load speclite filters by name -> list of (name, wavelength [A], response).

    An item may also be a (name, wavelength, response) tuple, used as it is."""
    import speclite.filters as sf

    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        if isinstance(n, tuple):  # (name, wavelength [A], response) given directly
            out.append((n[0], np.asarray(n[1], float), np.asarray(n[2], float)))
            continue
        try:
            f = sf.load_filter(n)
        except Exception as err:  # speclite raises ValueError/RuntimeError/FileNotFoundError
            close = difflib.get_close_matches(n, available_filter_names(), n=5)
            raise ValueError(f"unknown filter {n!r}" + (f"; did you mean {', '.join(close)}?" if close else "")) from err
        out.append((n, np.asarray(f.wavelength, float), np.asarray(f.response, float)))
    return out


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


def flux_to_mag(flux_nmgy):
    return NMGY_ZP - 2.5 * np.log10(flux_nmgy)


def mag_to_flux(mag):
    return 10 ** (-0.4 * (np.asarray(mag) - NMGY_ZP))
