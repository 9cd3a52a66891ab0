"""The "bc03+emiles" stellar library: E-MILES SSPs read from the ppxf source distribution on
PyPI (cached by ``popsed-jax ssp build``) and put into the BC03 grid (physics/emiles.py)."""
from __future__ import annotations

import numpy as np
import pytest

from popsed_jax.physics import emiles, ssp


@pytest.fixture(scope="module")
def emiles_sdist():
    return emiles.read_emiles_sdist(emiles._ppxf_sdist(ssp.cache_dir() / "downloads", None, quiet=True))


@pytest.fixture(scope="module")
def bc03():
    return ssp.load_ssp_grid(nebular=False)


@pytest.fixture(scope="module")
def hybrid(bc03):
    return emiles.with_emiles(bc03, emiles.load_emiles_cube(bc03.wave))


def _miuscat_table():
    """The MILES team's SDSS colours of their MIUSCAT SSPs (same IMF, isochrones and optical
    stars as E-MILES), shipped in the same sdist: rows [M/H], age, u-g, g-r, r-i."""
    import tarfile

    path = emiles._ppxf_sdist(ssp.cache_dir() / "downloads", None, quiet=True)
    with tarfile.open(path, "r:gz") as tf:
        text = tf.extractfile("ppxf-8.2.6/ppxf/miles_models/Vazdekis2012_ssp_sdss_miuscat_UN1.30_v9.txt").read().decode()
    rows = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return np.array([[float(r[2]), float(r[3]), float(r[8]), float(r[9]), float(r[10])] for r in rows])


def test_emiles_colours_match_the_miles_teams_own_sdss_colours(emiles_sdist):
    """Read right (wavelength scale, per-A units, metallicity and age labels): rest-frame SDSS
    colours of the E-MILES spectra, integrated by speclite with the 2010 curves, agree with the
    MILES team's tabulated MIUSCAT colours at every metallicity and age >= 0.1 Gyr. The two SSP
    sets share isochrones and optical stars; their near-IR stars and the curves differ, hence
    tolerances of a few hundredths (measured: g - r 0.00-0.025, r - i 0.00-0.008)."""
    import speclite.filters as sf

    mh, ages, wave, llam = emiles_sdist
    assert mh.size == 6 and ages.size == 25 and wave[0] == pytest.approx(1680.2) and wave[-1] > 49_990
    assert np.isclose(np.log10(ages[1:] / ages[:-1]), 0.1, atol=0.002).all()
    tab = _miuscat_table()
    filt = sf.load_filters("sdss2010-g", "sdss2010-r", "sdss2010-i")
    n = 0
    for i, m in enumerate(mh):
        for j, a in enumerate(ages):
            row = tab[(np.abs(tab[:, 0] - m) < 0.02) & np.isclose(tab[:, 1], a, rtol=2e-3)]
            if a < 0.1 or not len(row):
                continue
            g, r, ii = (filt.get_ab_magnitudes(llam[i, j], wave)[b][0] for b in ("sdss2010-g", "sdss2010-r", "sdss2010-i"))
            assert g - r == pytest.approx(row[0, 3], abs=0.03), (m, a)
            assert r - ii == pytest.approx(row[0, 4], abs=0.015), (m, a)
            n += 1
    assert n >= 100


def test_library_keeps_bc03_luminosity_masses_and_young_ssps(bc03, hybrid):
    """Each SSP keeps BC03's luminosity at 5,000-6,000 A (so BC03's Chabrier M/L), the mass
    fractions are BC03's, SSPs younger than 63 Myr are untouched."""
    l0, l1 = _window_luminosity(bc03, bc03.flux), _window_luminosity(bc03, hybrid.flux)
    np.testing.assert_allclose(l1, l0, rtol=2e-4)
    young = 10**bc03.lg_age_gyr < emiles.EMILES_MIN_AGE_GYR
    assert young.sum() > 10
    np.testing.assert_array_equal(hybrid.flux[:, young], bc03.flux[:, young])
    assert not np.array_equal(hybrid.flux[:, ~young], bc03.flux[:, ~young])


def _window_luminosity(grid, flux):
    """Integral of L_lambda over 5,000-6,000 A (cells uniform in ln lambda: width = lambda dlnlam)."""
    w = np.asarray(grid.wave, float)
    win = (w >= emiles.NORM_WINDOW_A[0]) & (w <= emiles.NORM_WINDOW_A[1])
    return (np.asarray(flux, float) * ssp.C_ANGSTROM_S / w**2 * w)[..., win].sum(-1)


def _rest_band(grid, flux, band):
    """Rest-frame photon-counting flux of SEDs (..., n_wave) through a speclite band."""
    from popsed_jax.physics.photometry import load_filter_curves

    (_, cw, cr), = load_filter_curves([band])
    w = np.asarray(grid.wave, float)
    r = np.interp(w, cw, cr, left=0.0, right=0.0)
    return (np.asarray(flux, float) * r / w).sum(-1)  # L_nu R / lambda on cells of width ~ lambda: sum of L_nu R dlnlam


def test_library_keeps_the_near_ir_of_ssps_that_emiles_stops_at_8950a(bc03, hybrid):
    """26 E-MILES SSPs (63-251 Myr at [M/H] = -1.71 down to 63-79 Myr at solar) have no data
    beyond 8,950 A (zeros in the files). The library holds the E-MILES/BC03 ratio there: every
    SSP keeps 1-2 micron light within a factor 3 of BC03's at the same 5,000-6,000 A
    luminosity (measured 0.88-2.0; at >= 5 Gyr 0.96-1.17), and the SDSS z band (rest frame) has no step
    between the last SSP left as BC03 (57 Myr) and the first one given E-MILES's shape (64 Myr)."""
    w = np.asarray(bc03.wave, float)
    nir = (w >= 1.0e4) & (w <= 2.0e4)
    dl = w  # cells uniform in ln lambda
    lnir = lambda f: (np.asarray(f, float) * ssp.C_ANGSTROM_S / w**2 * dl)[..., nir].sum(-1)
    old = 10**bc03.lg_age_gyr >= emiles.EMILES_MIN_AGE_GYR
    ratio = lnir(hybrid.flux[:, old]) / lnir(bc03.flux[:, old])
    assert ratio.min() > 1 / 3 and ratio.max() < 3, (ratio.min(), ratio.max())
    ages = 10**bc03.lg_age_gyr
    before = int(np.nonzero(ages < emiles.EMILES_MIN_AGE_GYR)[0][-1])
    zb = _rest_band(bc03, hybrid.flux[:, [before, before + 1]], "sdss2001-z")
    zb_bc = _rest_band(bc03, bc03.flux[:, [before, before + 1]], "sdss2001-z")
    # the step across the join is the library's own age dependence, not a jump: as BC03's within 5%
    np.testing.assert_allclose(zb[:, 1] / zb[:, 0], zb_bc[:, 1] / zb_bc[:, 0], rtol=0.05)


def test_library_takes_emiles_shapes_and_joins_bc03_continuously(bc03, hybrid):
    """From 100 Myr on and inside E-MILES's metallicities its SED is E-MILES's shape (ratio
    constant in wavelength over 1,680 A-5 micron); outside E-MILES's wavelengths the factor
    applied to BC03 is the one at the nearest covered cell (no jump at 1,680 A)."""
    cube = emiles.load_emiles_cube(bc03.wave)
    c, w = ssp.C_ANGSTROM_S, bc03.wave
    lnw = np.log(w)
    n_short = 0
    for im in np.nonzero((bc03.lgmet - np.log10(0.019) > cube.mh[0]) & (bc03.lgmet - np.log10(0.019) < cube.mh[-1]))[0]:
        for age in (0.2, 1.0, 5.0, 11.0):
            ia = int(np.argmin(np.abs(bc03.lg_age_gyr - np.log10(age))))
            mh, a = bc03.lgmet[im] - np.log10(0.019), 10 ** bc03.lg_age_gyr[ia]
            em = emiles.emiles_llam(cube, mh, a)
            cov = np.nonzero(emiles.emiles_covered(cube, mh, a))[0]
            n_short += w[cov[-1]] < 1e4
            inner = cov[5:-5]
            ratio = (np.asarray(hybrid.flux[im, ia], float) * c / w**2)[inner] / em[inner]
            np.testing.assert_allclose(ratio, np.median(ratio), rtol=1e-4)
            f = np.asarray(hybrid.flux[im, ia], float) / np.asarray(bc03.flux[im, ia], float)
            edge_lo = f[cov[0]:cov[-1] + 1][lnw[cov[0]:cov[-1] + 1] <= lnw[cov[0]] + 0.03]
            edge_hi = f[cov[0]:cov[-1] + 1][lnw[cov[0]:cov[-1] + 1] >= lnw[cov[-1]] - 0.03]
            np.testing.assert_allclose(f[: cov[0]], np.median(edge_lo), rtol=1e-5)
            np.testing.assert_allclose(f[cov[-1] + 1:], np.median(edge_hi), rtol=1e-5)
    assert n_short > 0  # some 200 Myr SSPs stop at 8,950 A and are held there


def _band_fluxes(grid, ims, ias, zs, curves):
    """Photon-counting AB fluxes (arbitrary common unit) of SSPs (im, ia) seen at redshifts zs:
    (n_ssp, n_z, n_band)."""
    c, w = ssp.C_ANGSTROM_S, grid.wave
    out = np.empty((len(ims), zs.size, len(curves)))
    for k, (im, ia) in enumerate(zip(ims, ias)):
        lam = np.asarray(grid.flux[im, ia], float) * c / w**2
        for j, z in enumerate(zs):
            wo = w * (1 + z)
            for b, (_, cw, cr) in enumerate(curves):
                r = np.interp(wo, cw, cr, left=0.0, right=0.0)
                out[k, j, b] = np.trapezoid(lam * r * wo, wo) / np.trapezoid(r * c / wo, wo)
    return out


def test_library_places_quenched_red_sdss_galaxies_at_their_spec_z(bc03, hybrid):
    """On real data, never used to build the library: 400 red SDSS galaxies (g - r >= 0.75)
    fitted with dust-free old composites only (two SSPs of one metallicity, >= 5 Gyr plus 0-20%
    of 1-3 Gyr; 2% floor, free amplitude) get their spec-z back with the library, median
    dz/(1+z) within 0.01, where BC03's own old populations place them too near (measured here:
    -0.013 against +0.0075; on 2,500 galaxies with ages up to 15.8 Gyr -0.014 against +0.004,
    docs/validation.md)."""
    from popsed_jax.physics.photometry import flux_to_mag, load_filter_curves
    from popsed_jax.survey.catalog import load_catalog

    cat = load_catalog("sdss")
    m = flux_to_mag(cat.flux)
    red = np.nonzero((m[:, 1] - m[:, 2] >= 0.75) & (cat.z_spec > 0.02) & (cat.z_spec < 0.2))[0]
    idx = np.random.default_rng(3).choice(red, 400, replace=False)
    f, e, zs = cat.flux[idx], cat.flux_err[idx], cat.z_spec[idx]
    iv = 1.0 / (e**2 + (0.02 * f) ** 2)
    curves = load_filter_curves(list(cat.bands))
    zg = np.arange(0.005, 0.3, 0.0025)
    ages = 10 ** bc03.lg_age_gyr
    old = [int(np.argmin(np.abs(ages - a))) for a in (5.0, 8.0, 10.0, 12.5)]
    young = [int(np.argmin(np.abs(ages - a))) for a in (1.0, 2.0, 3.0)]
    bias = {}
    for name, g in (("bc03", bc03), ("library", hybrid)):
        temps = []
        for im in range(bc03.lgmet.size):
            F = _band_fluxes(g, [im] * 7, old + young, zg, curves)
            Fo, Fy = F[:4], F[4:]
            for o in range(4):
                temps.append(Fo[o])
                for y in range(3):
                    for fr in (0.05, 0.2):  # mass fractions; the SSPs are per unit mass formed
                        temps.append((1 - fr) * Fo[o] + fr * Fy[y])
        T = np.stack(temps)  # (n_t, n_z, B)
        a = (f**2 * iv).sum(1)
        chi = a[:, None, None] - np.einsum("gb,tzb->gtz", f * iv, T) ** 2 / np.einsum("gb,tzb->gtz", iv, T**2)
        zp = zg[np.argmin(chi.min(1), 1)]
        bias[name] = float(np.median((zp - zs) / (1 + zs)))
    assert abs(bias["library"]) < 0.01, bias
    assert bias["library"] - bias["bc03"] > 0.01, bias


def test_fit_config_chooses_the_library():
    """``FitConfig.ssp_library`` reaches the forward model of a fit: its SSP spectra of the
    youngest ages (the birth-cloud SSPs, with the nebular emission) are the same with either
    library, the older ones differ; a wrong name is refused naming the key."""
    from popsed_jax.errors import ConfigError
    from popsed_jax.inference import fit as fitlib
    from popsed_jax.inference.config import FitConfig
    from popsed_jax.physics.photometry import SDSS_UGRIZ

    m = {lib: fitlib.forward_model_for(FitConfig(ssp_library=lib), SDSS_UGRIZ) for lib in ("bc03", "bc03+emiles")}
    np.testing.assert_array_equal(np.asarray(m["bc03"].ssp_young), np.asarray(m["bc03+emiles"].ssp_young))
    n_met = m["bc03"].lgmet.size
    a, b = (np.asarray(m[k].ssp_all).reshape(n_met, -1, m[k].ssp_all.shape[-1]) for k in ("bc03", "bc03+emiles"))
    age = 10 ** ssp.load_ssp_grid(nebular=False).lg_age_gyr[: a.shape[1]]
    differs = np.any(a != b, axis=-1)  # (n_met, n_age)
    np.testing.assert_array_equal(differs, np.broadcast_to(age >= emiles.EMILES_MIN_AGE_GYR, differs.shape))
    with pytest.raises(ConfigError, match="ssp_library"):
        FitConfig(ssp_library="emiles")


def test_library_works_on_another_grids_wavelength_cells(bc03):
    """A grid on other cells (here BC03 rebinned to R = 500) gets an E-MILES cube rebinned for
    it, not the cached one: the library keeps its window luminosity there too."""
    import dataclasses

    edges = ssp.log_wave_edges(1000.0, 40000.0, 2e-3)
    wave, flux = ssp.rebin_lnu(bc03.wave, np.asarray(bc03.flux, float), edges)
    coarse = dataclasses.replace(bc03, wave=wave, flux=flux)
    cube = emiles.load_emiles_cube(coarse.wave)
    assert cube.wave.shape == wave.shape
    assert emiles.emiles_cube_path(coarse.wave) != emiles.emiles_cube_path(bc03.wave)
    # per spectrum: the files' youngest SSPs at each [M/H] stop at 8,950 A (the oldest such age here)
    last_short = {-1.71: 0.2512, -1.31: 0.1995, -0.71: 0.1585, -0.40: 0.1259, 0.00: 0.0794, 0.22: 0.0794}
    full = (edges[:-1] >= 1680.2) & (edges[1:] <= 49999.4)
    short = (edges[:-1] >= 1680.2) & (edges[1:] <= 8950.4)
    for i, m in enumerate(cube.mh):
        for j, a in enumerate(cube.age_gyr):
            np.testing.assert_array_equal(cube.covered[i, j], short if a <= last_short[round(m, 2)] + 1e-4 else full)
    lib = emiles.with_emiles(coarse, cube)
    np.testing.assert_allclose(_window_luminosity(coarse, lib.flux), _window_luminosity(coarse, flux), rtol=2e-4)
    with pytest.raises(ValueError, match="uniform in ln"):
        emiles.emiles_cube(wave * np.exp(2e-4 * np.arange(wave.size) ** 2 / wave.size))  # steps 2e-3 to 2.4e-3


def test_forward_model_refuses_a_library_it_cannot_apply(bc03):
    """``library="bc03+emiles"`` with a ready-made plain BC03 grid is refused (it is applied when
    the grid is loaded), rather than silently fitting BC03 while the run records E-MILES."""
    from popsed_jax.physics.forward import build_forward_model

    with pytest.raises(ValueError, match="bc03\\+emiles"):
        build_forward_model(grid=bc03, library="bc03+emiles")
