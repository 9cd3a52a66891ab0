"""Physics tests of the batched forward model (issue 2)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import random_theta
from popsed_jax.physics import cosmology, photometry, sfh
from popsed_jax.physics.forward import (
    IDX,
    build_forward_model,
    check_theta,
    derived_quantities,
    forward_fluxes,
    forward_mags,
    rest_spectra,
    spectrum_fluxes,
    ssp_weights,
)


def test_importing_dsps_does_not_change_precision():
    code = (
        "import jax; from popsed_jax.testing import reference; from popsed_jax.physics import forward; "
        "import popsed_jax.physics._dsps as d; d.import_dsps('dsps.sed'); "
        "print(jax.config.jax_enable_x64)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_default_is_float32(model):
    f = forward_fluxes(model, random_theta(3))
    assert f.dtype == jnp.float32


@pytest.mark.parametrize("cosmo", [cosmology.PLANCK15])
def test_cosmology_matches_astropy_planck15(cosmo):
    from astropy.cosmology import Planck15

    tab = cosmology.make_cosmo_table(cosmo)
    z = np.array([0.003, 0.01, 0.05, 0.1, 0.237, 0.5, 0.8, 1.7])
    dl = np.asarray(cosmology.lum_distance(jnp.asarray(z), tab))
    age = np.asarray(cosmology.age_at_z(jnp.asarray(z), tab))
    np.testing.assert_allclose(dl, Planck15.luminosity_distance(z).value, rtol=1e-5)
    np.testing.assert_allclose(age, Planck15.age(z).value, rtol=1e-5)
    # the float64 table behind both (interval-wise Gauss-Legendre) and its numpy interpolation
    np.testing.assert_allclose(cosmology.age_gyr_f64(z, cosmo), Planck15.age(z).value, rtol=1e-6)
    z64 = np.arange(0, 3.0, 0.005)[::37]
    np.testing.assert_allclose(cosmology._cosmo_table_f64(cosmo, 3.0, 0.005)[1][::37],
                               Planck15.comoving_distance(z64).value, rtol=1e-9, atol=1e-9)


def test_dsps_flavour_cosmology_matches_astropy_and_dsps():
    """DSPS_PLANCK15 is exactly astropy's FlatLambdaCDM without radiation; DSPS's own
    numerical age integral is good to ~1e-4 only."""
    from astropy.cosmology import FlatLambdaCDM

    from popsed_jax.physics._dsps import import_dsps

    dc = import_dsps("dsps.cosmology")
    ref = FlatLambdaCDM(H0=67.74, Om0=0.3075, Tcmb0=0)
    tab = cosmology.make_cosmo_table(cosmology.DSPS_PLANCK15)
    for z in (0.02, 0.3, 0.8):
        dl = float(cosmology.lum_distance(jnp.asarray(z), tab))
        age = float(cosmology.age_at_z(jnp.asarray(z), tab))
        assert dl == pytest.approx(ref.luminosity_distance(z).value, rel=1e-5)
        assert age == pytest.approx(ref.age(z).value, rel=1e-5)
        assert dl == pytest.approx(float(dc.luminosity_distance_to_z(z, *dc.PLANCK15)), rel=1e-5)
        assert age == pytest.approx(float(dc.age_at_z(z, *dc.PLANCK15)[0]), rel=3e-4)


@pytest.mark.parametrize("met_mode", ["interp", "lognormal"])
def test_agrees_with_dsps_reference_path(grid, bases, met_mode):
    """Model (float32, R=500 trimmed grid) vs DSPS's calc_rest_sed_sfh_table_* + calc_obs_mag
    (float64, the R=1000 grid) over random parameters across the whole box: < 0.01 mag."""
    from popsed_jax.testing import reference

    model = build_forward_model(grid=grid, bases=bases, cosmology=cosmology.DSPS_PLANCK15, met_mode=met_mode)
    n = 24 if met_mode == "interp" else 8
    th = random_theta(n, seed=11 if met_mode == "interp" else 12, snap_burst_to=grid.lg_age_gyr)
    mine = np.asarray(forward_mags(model, th))
    curves = photometry.load_filter_curves(photometry.DEFAULT_FILTERS)
    with jax.enable_x64(True):
        ref = np.asarray(jax.jit(jax.vmap(reference.make_reference(grid, bases, curves, met_mode=met_mode)))(th))
    assert np.all(np.isfinite(mine)) and np.all(np.isfinite(ref))
    # bands fainter than 40 mag (1e-7 nmgy; e.g. u = 106 for a dusty z = 0.73 draw) carry no
    # information, only the float32 rounding of exp(-tau), and are left out
    diff = np.abs(mine - ref)
    faint = ref > 40.0
    assert diff[~faint].max() < 0.01, f"max |dmag| per band {np.where(faint, 0, diff).max(0)}"


def test_photometry_matches_speclite(model):
    """One model spectrum, observed at z, integrated by speclite: < 0.003 mag."""
    import astropy.units as u
    import speclite.filters as sf

    th = np.array([[0.15, 10.8, 0.4, 0.6, 0.3, 2.0, 0.1, -0.4, -0.5, 0.5, 0.4]])
    spec = np.asarray(rest_spectra(model, th))[0] * photometry.AB0_LSUN_HZ * 10**th[0, 1]  # Lsun/Hz
    z = th[0, 0]
    dl_cm = float(cosmology.lum_distance(jnp.asarray(z), model.cosmo)) * 3.0856775814913673e24
    wave_obs = np.asarray(model.wave_rest) * (1 + z)
    fnu = (1 + z) * spec * 3.828e33 / (4 * np.pi * dl_cm**2)  # erg/s/cm2/Hz
    flam = fnu * 2.99792458e18 / wave_obs**2
    filters = photometry.speclite_filters(photometry.DEFAULT_FILTERS)
    ref = np.array(filters.get_ab_magnitudes(flam * u.erg / u.s / u.cm**2 / u.AA, wave_obs * u.AA).as_array().tolist()[0])
    mine = np.asarray(forward_mags(model, th))[0]
    assert np.abs(mine - ref).max() < 0.003, (mine, ref)


def test_one_dex_in_mass_is_minus_2p5_mag(model):
    th = random_theta(20, seed=3)
    th[:, 1] = np.clip(th[:, 1], 7.5, 12.0)
    th2 = th.copy()
    th2[:, 1] += 1.0
    d = np.asarray(forward_mags(model, th2)) - np.asarray(forward_mags(model, th))
    np.testing.assert_allclose(d, -2.5, atol=2e-5)


def test_zero_dust_leaves_spectrum_unattenuated(model):
    th = random_theta(6, seed=4)
    th[:, IDX["tau1"]] = 0.0
    th[:, IDX["tau2"]] = 0.0
    wmet, mass, _ = ssp_weights(model, jnp.asarray(th, jnp.float32))
    w = (wmet[:, :, None] * mass[:, None, :]).reshape(6, -1)
    bare = np.asarray(w @ model.ssp_all)
    np.testing.assert_allclose(np.asarray(rest_spectra(model, th)), bare, rtol=1e-6)
    th_slope = th.copy()
    th_slope[:, IDX["n_dust"]] = -2.0  # the slope is irrelevant without dust
    np.testing.assert_allclose(np.asarray(forward_fluxes(model, th_slope)), np.asarray(forward_fluxes(model, th)), rtol=1e-6)
    dusty = th.copy()
    dusty[:, IDX["tau2"]] = 0.5
    assert np.all(np.asarray(forward_fluxes(model, dusty)) < np.asarray(forward_fluxes(model, th)))


def test_no_burst_older_than_the_universe(model):
    th = np.array([[0.5, 10.5, 0.5, 0.5, 0.5, 12.0, 0.6, -0.3, 0.0, 0.3, 0.3]])  # t_u(0.5) ~ 8.6 Gyr
    no_burst = th.copy()
    no_burst[:, IDX["f_burst"]] = 0.0
    np.testing.assert_array_equal(np.asarray(forward_fluxes(model, th)), np.asarray(forward_fluxes(model, no_burst)))
    young = th.copy()
    young[:, IDX["t_burst"]] = 0.5
    assert not np.allclose(np.asarray(forward_fluxes(model, young)), np.asarray(forward_fluxes(model, no_burst)), rtol=1e-3)


def test_fluxes_fall_with_redshift(model):
    th = np.tile([[0.01, 10.5, 0.5, 0.5, 0.5, 5.0, 0.05, -0.2, -0.3, 0.3, 0.3]], (40, 1))
    th[:, 0] = np.linspace(0.01, 0.8, 40)
    f = np.asarray(forward_fluxes(model, th))
    assert np.all(np.diff(f, axis=0) < 0)
    # inverse-square law: from z = 0.010 to 0.0105 the flux drops by ~10% while
    # f d_L^2 / (1+z) moves only by the tiny k-correction
    th2 = th[:2].copy()
    th2[:, 0] = [0.010, 0.0105]
    f2 = np.asarray(forward_fluxes(model, th2))
    dl = np.asarray(cosmology.lum_distance(jnp.asarray(th2[:, 0], jnp.float32), model.cosmo))
    s = f2 * (dl**2 / (1 + th2[:, 0]))[:, None]
    assert np.all(f2[1] / f2[0] < 0.93)
    np.testing.assert_allclose(s[1] / s[0], 1.0, atol=0.005)


def test_gradients_match_finite_differences(grid, bases):
    th = np.array([[0.213, 10.7, 0.37, 0.61, 0.42, 1.73, 0.12, -0.41, -0.63, 0.71, 0.44]])
    with jax.enable_x64(True):
        m64 = build_forward_model(grid=grid, bases=bases, dtype=jnp.float64)

        def f(t):
            return jnp.sum(jnp.log(forward_fluxes(m64, t[None]))) / 2.0

        g = np.asarray(jax.grad(f)(jnp.asarray(th[0])))
        fd = np.zeros(11)
        for j in range(11):
            h = 1e-6 * max(1.0, abs(th[0, j]))
            tp, tm = th[0].copy(), th[0].copy()
            tp[j] += h
            tm[j] -= h
            fd[j] = (float(f(jnp.asarray(tp))) - float(f(jnp.asarray(tm)))) / (2 * h)
    assert np.all(np.abs(g) > 0), g  # every parameter moves the photometry here
    np.testing.assert_allclose(g, fd, rtol=2e-4, atol=1e-7)


def test_fsps_spectra_give_fsps_lsst_magnitudes():
    """DSPS ships FSPS SSP spectra and FSPS's LSST magnitudes at 25 redshifts. Our photometry,
    applied to the same spectra, reproduces them to 0.006 mag in the median (FSPS's Lsun /
    AB constants differ from DSPS's by ~0.003 mag) and 0.05 mag at worst, in the u band of the
    young SSP, where the spectrum's coarse UV sampling is resampled onto our grid."""
    from importlib import resources

    d = Path(str(resources.files("dsps"))) / "tests" / "testing_data"
    z = np.load(d / "fsps_lsst_mags_zobs.npy")
    curves = [(f"lsst-{b}", np.load(d / f"lsst_{b}_transmission.npy")["wave"], np.load(d / f"lsst_{b}_transmission.npy")["transmission"]) for b in "ugrizy"]
    fsps_cosmo = cosmology.Cosmology(H0=72.0, Om0=0.27, Tcmb0=0.0, Neff=0.0, m_nu=(), name="FSPS default")
    for sp_name, mag_name in (("fsps_ssp_imet_20_iage_5.npy", "fsps_lsst_mags_zobs_imet_20_iage_5.npy"), ("fsps_ssp_imet_2_iage_90.npy", "fsps_lsst_mags_zobs_imet_2_iage_90.npy")):
        sp, md = np.load(d / sp_name), np.load(d / mag_name)
        mags = 22.5 - 2.5 * np.log10(np.asarray(spectrum_fluxes(sp["wave"], sp["flux"], z, curves, fsps_cosmo)))
        ref = np.stack([md[b] for b in "ugrizy"], -1)
        diff = mags - ref
        assert np.abs(np.median(diff)) < 0.006
        assert np.abs(diff).max() < 0.05


def test_chunked_equals_unchunked(model):
    th = random_theta(50, seed=5)
    np.testing.assert_allclose(np.asarray(forward_fluxes(model, th, chunk_size=16)), np.asarray(forward_fluxes(model, th)), rtol=1e-6)


def test_float64_on_request_needs_x64(grid, bases):
    with pytest.raises(ValueError, match="jax_enable_x64"):
        build_forward_model(grid=grid, bases=bases, dtype=jnp.float64)


def test_check_theta_names_the_fault(model):
    th = random_theta(4, seed=6)
    bad = th.copy()
    bad[2, IDX["f_burst"]] = 1.5
    with pytest.raises(ValueError, match="f_burst.*row 2"):
        check_theta(bad, model)
    bad = th.copy()
    bad[1, IDX["z"]] = 0.95
    with pytest.raises(ValueError, match="'z'.*z_max"):
        check_theta(bad, model)
    bad = th.copy()
    bad[0, IDX["tau2"]] = np.nan
    with pytest.raises(ValueError, match="tau2.*not finite"):
        check_theta(bad, model)
    with pytest.raises(ValueError, match="shape"):
        check_theta(th[:, :10], model)


def test_unknown_filter_is_named():
    with pytest.raises(ValueError, match="sdss2001-q.*did you mean"):
        photometry.load_filter_curves("sdss2001-q")


def test_derived_constant_sfh_gives_constant_sfr(grid):
    """Four identical flat bases = constant SFH over [0, t_u]: SFR = M / t_u."""
    flat = sfh.SFHBases(np.array([0.0, 20.0]), np.ones((4, 2)) / 13.8, "flat")
    m = build_forward_model(grid=grid, bases=flat)
    th = np.array([[0.05, 10.0, 0.3, 0.6, 0.2, 5.0, 0.0, -0.2, 0.0, 0.0, 0.0], [0.4, 11.0, 0.9, 0.1, 0.5, 5.0, 0.0, -1.0, 0.0, 0.0, 0.0]])
    d = derived_quantities(m, th)
    expect = 10 ** th[:, 1] / (np.asarray(d["t_universe"]) * 1e9)
    np.testing.assert_allclose(np.asarray(d["sfr_100myr"]), expect, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(d["sfr_10myr"]), expect, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(d["age_mw"]), np.asarray(d["t_universe"]) / 2, rtol=0.02)


def test_derived_old_burst_has_no_recent_sfr(model, grid):
    th = np.array([[0.05, 10.5, 0.5, 0.5, 0.5, 6.0, 1.0, -0.2, 0.0, 0.0, 0.0]])
    d = derived_quantities(model, th)
    assert float(d["sfr_100myr"][0]) == 0.0 and float(d["sfr_10myr"][0]) == 0.0
    living = 10 ** (float(d["logM_living"][0]) - th[0, 1])
    total = 10 ** (float(d["logM_surviving"][0]) - th[0, 1])
    assert grid.surviving.min() <= living <= grid.surviving.max()
    # a pure 6 Gyr burst keeps what the grid says SSPs of the two neighbouring ages keep:
    # living stars (BC03 LIV_MSTAR_FRAC) and, in logM_surviving, also their remnants
    i = np.searchsorted(grid.lg_age_gyr, np.log10(6.0)) - 1
    near = grid.surviving[:, i : i + 2]
    assert near.min() - 1e-6 <= living <= near.max() + 1e-6
    near_tot = (grid.surviving + grid.remnant)[:, i : i + 2]
    assert near_tot.min() - 1e-6 <= total <= near_tot.max() + 1e-6
    assert 0.1 < total - living < 0.16  # remnants of a 6 Gyr Chabrier population (FSPS: ~0.135)
    assert float(d["age_mw"][0]) == pytest.approx(6.0, rel=0.02)
