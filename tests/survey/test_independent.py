"""kcorrect stellar masses of real SDSS galaxies: physics and behaviour checks."""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("kcorrect")

from astropy.cosmology import Planck15, Planck18  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from popsed_jax.survey.catalog import Catalog, catalog_subset, load_catalog  # noqa: E402
from popsed_jax.survey.independent import (compare_mass_distributions,  # noqa: E402
                                    kcorrect_masses, write_kcorrect_masses)
from popsed_jax.survey.selection import select_catalog  # noqa: E402

N_SUB = 300


@pytest.fixture(scope="module")
def sdss_sub():
    """Every 30th galaxy of the r < 17.77 SDSS main sample (~330 real galaxies)."""
    cat = select_catalog(load_catalog("sdss"), "r<17.77")
    return catalog_subset(cat, np.arange(cat.n) % 30 == 0)


@pytest.fixture(scope="module")
def base(sdss_sub):
    return kcorrect_masses(sdss_sub)


def _scaled(cat, factor):
    return Catalog(flux=cat.flux * factor, flux_err=cat.flux_err * factor, bands=cat.bands,
                   z_spec=cat.z_spec, ids=cat.ids)


def test_fits_succeed_and_outputs_shaped(sdss_sub, base):
    n = sdss_sub.n
    for key in ("logM_surviving_kc", "logM_formed_kc", "z", "chi2", "ok", "ids"):
        assert base[key].shape == (n,), key
    assert base["ok"].mean() > 0.99
    np.testing.assert_array_equal(base["z"], sdss_sub.z_spec)
    # five bands, five templates: a reasonable fit has chi2 of order the band count
    assert np.median(base["chi2"][base["ok"]]) < 10


def test_flux_times_ten_adds_one_dex(sdss_sub, base):
    """Mass is linear in flux at fixed z (NNLS and fractional error floors are scale-free)."""
    r10 = kcorrect_masses(_scaled(sdss_sub, 10.0))
    ok = base["ok"] & r10["ok"]
    assert ok.sum() > 0.99 * sdss_sub.n
    for key in ("logM_surviving_kc", "logM_formed_kc"):
        np.testing.assert_allclose(r10[key][ok] - base[key][ok], 1.0, atol=0.01)


def test_mass_scales_with_luminosity_distance(sdss_sub, base):
    """Same photometry at 1.5x the redshift: Delta log M ~ 2 log10(d_L ratio), up to
    K-correction (the colours are then read at bluer rest-frame wavelengths)."""
    z2 = 1.5 * sdss_sub.z_spec
    far = kcorrect_masses(sdss_sub, redshift=z2)
    ok = base["ok"] & far["ok"]
    dlm = far["logM_surviving_kc"][ok] - base["logM_surviving_kc"][ok]
    pred = 2 * np.log10(Planck15.luminosity_distance(z2[ok]).value
                        / Planck15.luminosity_distance(sdss_sub.z_spec[ok]).value)
    assert np.median(pred) > 0.3  # the test has leverage
    assert np.all(dlm > 0)
    resid = dlm - pred
    assert abs(np.median(resid)) < 0.2
    assert np.mean(np.abs(resid) < 0.3) > 0.9


def test_physical_range_and_luminosity_correlation(sdss_sub, base):
    ok = base["ok"]
    logm = base["logM_surviving_kc"][ok]
    assert 10.0 < np.median(logm) < 11.5
    assert np.all((logm > 7.0) & (logm < 12.8))
    # mass formed >= surviving mass, and stellar mass loss of a Chabrier population
    # is < ~60% (0.4 dex)
    dm = base["logM_formed_kc"][ok] - logm
    assert np.all(dm >= 0) and np.all(dm < 0.4)
    # absolute r magnitude computed independently of kcorrect (no K-correction)
    m_r = 22.5 - 2.5 * np.log10(sdss_sub.flux[ok, sdss_sub.bands.index("sdss2001-r")])
    abs_r = m_r - Planck15.distmod(sdss_sub.z_spec[ok]).value
    assert spearmanr(abs_r, logm).statistic < -0.8


def test_cosmology_enters_through_distance(sdss_sub, base):
    """popsed's PLANCK15 = astropy Planck15; another cosmology shifts the masses by exactly
    2 log10(d_L ratio) (the fit itself does not depend on the cosmology)."""
    from popsed_jax.physics.cosmology import PLANCK15

    same = kcorrect_masses(sdss_sub, cosmology=PLANCK15)
    np.testing.assert_allclose(same["logM_surviving_kc"], base["logM_surviving_kc"],
                               atol=1e-6, equal_nan=True)
    p18 = kcorrect_masses(sdss_sub, cosmology=Planck18)
    z = sdss_sub.z_spec
    expect = 2 * np.log10(Planck18.luminosity_distance(z).value
                          / Planck15.luminosity_distance(z).value)
    ok = base["ok"]
    np.testing.assert_allclose(p18["logM_surviving_kc"][ok] - base["logM_surviving_kc"][ok],
                               expect[ok], atol=1e-4)


def test_matches_kcorrect_derived(sdss_sub, base):
    """Our masses are kcorrect's own derived() mremain / intsfh with cosmo = Planck15."""
    import kcorrect.kcorrect

    sub = catalog_subset(sdss_sub, np.arange(sdss_sub.n) < 40)
    r = kcorrect_masses(sub)
    kc = kcorrect.kcorrect.Kcorrect(responses=["sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0",
                                               "sdss_z0"], redshift_range=[0.0, 0.5],
                                    nredshift=1000, cosmo=Planck15)
    d = kc.derived(redshift=r["z"].astype(np.float32), coeffs=r["coeffs"].astype(np.float32))
    np.testing.assert_allclose(np.log10(d["mremain"]), r["logM_surviving_kc"], atol=1e-4)
    np.testing.assert_allclose(np.log10(d["intsfh"]), r["logM_formed_kc"], atol=1e-4)


def test_bad_inputs(sdss_sub):
    small = catalog_subset(sdss_sub, np.arange(sdss_sub.n) < 5)
    with pytest.raises(ValueError, match="redshift"):
        kcorrect_masses(small, redshift=0.0)
    with pytest.raises(ValueError, match="z_spec"):
        kcorrect_masses(Catalog(flux=small.flux, flux_err=small.flux_err, bands=small.bands))
    odd = Catalog(flux=small.flux[:, :1], flux_err=small.flux_err[:, :1], bands=("bessell-V",),
                  z_spec=small.z_spec)
    with pytest.raises(ValueError, match="bessell-V"):
        kcorrect_masses(odd)


def test_missing_kcorrect_message(sdss_sub, monkeypatch):
    for mod in ("kcorrect", "kcorrect.kcorrect", "kcorrect.utils"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match="pip install kcorrect"):
        kcorrect_masses(sdss_sub)


def test_compare_mass_distributions(base):
    x = base["logM_surviving_kc"]
    same = compare_mass_distributions(x, x)
    assert same["median_offset"] == 0 and same["w1"] == 0
    shifted = compare_mass_distributions(x + 0.3, np.append(x, np.nan))
    assert shifted["median_offset"] == pytest.approx(0.3)
    assert shifted["w1"] == pytest.approx(0.3)  # a pure shift moves every quantile by 0.3
    assert shifted["p84_pop"] - shifted["p16_pop"] == pytest.approx(
        shifted["p84_kc"] - shifted["p16_kc"])
    assert shifted["n_kc"] == np.isfinite(x).sum()
    with pytest.raises(ValueError, match="finite"):
        compare_mass_distributions([np.nan], x)


def test_write_table_roundtrip(base, tmp_path):
    from astropy.table import Table

    path = tmp_path / "kc.fits"
    write_kcorrect_masses(base, path)
    tab = Table.read(path)
    np.testing.assert_array_equal(tab["id"], base["ids"])
    np.testing.assert_allclose(tab["logM_surviving_kc"], base["logM_surviving_kc"],
                               equal_nan=True)
    with pytest.raises(ValueError, match="ids"):
        write_kcorrect_masses({"z": base["z"]}, path)
