"""SFH bases, Dirichlet map, age weights, SSP grid building and loading."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from popsed_jax.physics import sfh, ssp

ROOT = Path(__file__).resolve().parents[2]


def test_kappa_beta_round_trip_and_flat_dirichlet():
    rng = np.random.default_rng(0)
    kappa = rng.random((20000, 3))
    beta = np.asarray(sfh.kappa_to_beta(jnp.asarray(kappa)))
    np.testing.assert_allclose(beta.sum(-1), 1.0, atol=1e-6)
    assert beta.min() >= 0
    np.testing.assert_allclose(np.asarray(sfh.beta_to_kappa(beta)), kappa, atol=2e-4)
    # flat Dirichlet(1,1,1,1): every marginal is Beta(1, 3)
    for k in range(4):
        assert stats.kstest(beta[:, k], stats.beta(1, 3).cdf).pvalue > 1e-3


def test_default_bases_are_reproduced_by_the_script():
    spec = importlib.util.spec_from_file_location("mk", ROOT / "scripts" / "make_default_sfh_bases.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    t, b = mk.make_bases()
    arr = np.loadtxt(ROOT / "popsed_jax" / "data" / "sfh_bases_lognormal4.txt")
    np.testing.assert_allclose(arr[:, 0], t, rtol=1e-11)
    np.testing.assert_allclose(arr[:, 1:].T, b, rtol=1e-10, atol=1e-300)


def test_bases_normalised(bases, provabgs_bases):
    for bb in (bases, provabgs_bases):
        tt = np.linspace(0, sfh.T_LB_MAX, 20001)
        vals = np.array([np.interp(tt, bb.t_lb, bk) for bk in bb.sfr])
        np.testing.assert_allclose(np.trapezoid(vals, tt, axis=1), 1.0, rtol=1e-3)


def test_provabgs_bases_order(provabgs_bases):
    """After PROVABGS's reordering basis 1 is the recent one and basis 4 the oldest."""
    peaks = provabgs_bases.t_lb[np.argmax(provabgs_bases.sfr, axis=1)]
    assert np.all(np.diff(peaks) > 0), peaks


@pytest.mark.parametrize("which", ["default", "provabgs"])
def test_age_mass_fractions_exact(grid, bases, provabgs_bases, which):
    b = bases if which == "default" else provabgs_bases
    tab = sfh.make_sfh_tables(b, grid.lg_age_gyr, dtype=jnp.float32)
    rng = np.random.default_rng(1)
    n = 64
    beta = np.asarray(sfh.kappa_to_beta(jnp.asarray(rng.random((n, 3)))))
    t_u = rng.uniform(6.0, 13.8, n)
    tb = rng.uniform(0.01, 13.27, n)
    fb = rng.random(n)
    m = np.asarray(sfh.age_mass_fractions(jnp.asarray(beta), jnp.asarray(tb), jnp.asarray(fb), jnp.asarray(t_u), tab))
    np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-5)
    assert m.min() >= -1e-7
    # no mass in bins that start after the Big Bang
    edges = sfh.ssp_age_edges(grid.lg_age_gyr)
    late = edges[None, :-1] >= t_u[:, None]
    assert np.all(m[late] == 0)
    # the basis part matches a brute-force integral of the piecewise-linear SFH
    i = 0
    fine = np.linspace(0, t_u[i], 400001)
    sfr = (beta[i][:, None] * np.array([np.interp(fine, b.t_lb, bk) for bk in b.sfr])).sum(0)
    cum = np.concatenate([[0], np.cumsum(0.5 * (sfr[1:] + sfr[:-1]) * np.diff(fine))])
    mass_bins = np.diff(np.interp(np.minimum(edges, t_u[i]), fine, cum)) / cum[-1]
    m0 = np.asarray(sfh.age_mass_fractions(jnp.asarray(beta[:1]), jnp.asarray([20.0]), jnp.asarray([0.0]), jnp.asarray(t_u[:1]), tab))[0]
    np.testing.assert_allclose(m0, mass_bins, atol=2e-5)


def test_burst_between_ssp_ages_is_linear_in_log_age(grid, bases):
    tab = sfh.make_sfh_tables(bases, grid.lg_age_gyr, dtype=jnp.float32)
    lg = grid.lg_age_gyr
    tb = 10 ** (0.25 * lg[100] + 0.75 * lg[101])
    w = np.asarray(sfh.burst_weights(jnp.asarray([tb], jnp.float32), tab))[0]
    assert w[100] == pytest.approx(0.25, abs=1e-4) and w[101] == pytest.approx(0.75, abs=1e-4)
    assert w.sum() == pytest.approx(1.0, abs=1e-6)


def test_grid_is_dsps_readable_and_complete(grid):
    from popsed_jax.physics._dsps import import_dsps

    dsps = import_dsps("dsps")
    d = dsps.load_ssp_templates(fn=grid.source)
    np.testing.assert_array_equal(np.asarray(d.ssp_flux), ssp.load_ssp_grid(grid.source, nebular=False).flux)
    assert grid.flux.shape == (7, 220, grid.wave.size)
    assert grid.wave.min() <= 905 and grid.wave.max() >= 3.0e4  # 900 A .. beyond 3 micron
    np.testing.assert_allclose(10**grid.lgmet / 0.02, [0.005, 0.02, 0.2, 0.4, 1, 2.5, 5], rtol=1e-6)
    assert np.all(grid.surviving <= 1) and np.all(grid.surviving > 0.2)
    assert "n_met" in grid.info()


def test_rebin_conserves_energy():
    """Flux-conserving rebin of a real BC03 MILES spectrum: energy in every bin is kept."""
    from popsed_jax.physics import photometry

    g = ssp.load_ssp_grid()
    lam = g.wave
    lnu = g.flux[4, 100].astype(float)
    llam = lnu * ssp.C_ANGSTROM_S / lam**2
    edges = ssp.log_wave_edges(2000.0, 9000.0, 4e-3)
    mean = ssp.rebin_llambda(lam, llam, edges)
    # integral over the whole range agrees with the trapezoid of the input
    sel = (lam >= edges[0]) & (lam <= edges[-1])
    total_in = np.trapezoid(np.interp(np.linspace(edges[0], edges[-1], 200001), lam, llam), np.linspace(edges[0], edges[-1], 200001))
    assert np.sum(mean * np.diff(edges)) == pytest.approx(total_in, rel=1e-4)
    assert sel.sum() > 0 and photometry.AB0_LSUN_HZ > 0


def test_missing_grid_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        ssp.load_ssp_grid(tmp_path / "nope.h5")


def test_dsps_env_directory(monkeypatch, grid, tmp_path):
    import shutil

    shutil.copy(grid.source, tmp_path / ssp.DSPS_DEFAULT_BNAME)
    monkeypatch.setenv("DSPS_DRN", str(tmp_path))
    g = ssp.load_ssp_grid("dsps")
    assert g.flux.shape == grid.flux.shape
    monkeypatch.delenv("DSPS_DRN")
    with pytest.raises(FileNotFoundError, match="DSPS_DRN"):
        ssp.load_ssp_grid("dsps")
