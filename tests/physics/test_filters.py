"""The SDSS 2001 response curves shipped with popsed-jax: provenance and what they change."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from popsed_jax.physics import photometry, ssp

ROOT = Path(__file__).resolve().parents[2]
SDSS2001 = tuple(f"sdss2001-{b}" for b in "ugriz")


def _maker():
    spec = importlib.util.spec_from_file_location("mkf", ROOT / "scripts" / "make_sdss2001_filters.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    return mk


def test_shipped_curves_are_kcorrects_1p3_airmass_responses():
    pytest.importorskip("kcorrect")
    mk = _maker()
    for (name, w, r), b in zip(photometry.load_filter_curves(SDSS2001), "ugriz"):
        w0, r0 = mk.read_kcorrect_response(mk.kcorrect_responses_dir() / f"sdss_{b}0.dat")
        np.testing.assert_array_equal(w, w0)
        np.testing.assert_allclose(r, r0, rtol=1e-5, atol=0)
        assert name == f"sdss2001-{b}"


def test_known_names_and_refusal():
    names = photometry.filter_names()
    assert set(SDSS2001) <= set(names) and "sdss2010-r" in names
    assert photometry.validate_filter_names(SDSS2001) == SDSS2001
    with pytest.raises(ValueError, match="sdss2001-q.*close matches: sdss2001-"):
        photometry.validate_filter_names(["sdss2001-q"])


def _ab_mag(curve, wave, lnu):
    _, w, r = curve
    t = np.interp(wave, w, r, left=0.0, right=0.0)
    return -2.5 * np.log10(np.trapezoid(t * lnu / wave, wave) / np.trapezoid(t / wave, wave))


def test_old_populations_redder_in_u_minus_g_than_with_speclite_2010_u():
    """The two u curves differ by 34 A in mean wavelength; for an old solar SSP that is 0.05-0.11
    mag in u - g at z = 0-0.15 (the 2001 u is bluer, so it sees less light blueward of the
    4000 A break), while g - r, r - i and i - z agree to 0.01 mag."""
    g = ssp.load_ssp_grid(nebular=False)
    im = int(np.argmin(np.abs(g.lgmet - np.log10(0.02))))
    ia = int(np.argmin(np.abs(10**g.lg_age_gyr - 10.0)))
    new = photometry.load_filter_curves(SDSS2001)
    old = photometry.load_filter_curves([f"sdss2010-{b}" for b in "ugriz"])
    d_ug = []
    for z in (0.0, 0.05, 0.1, 0.15):
        wave, lnu = g.wave * (1 + z), g.flux[im, ia]
        m1 = np.array([_ab_mag(c, wave, lnu) for c in new])
        m0 = np.array([_ab_mag(c, wave, lnu) for c in old])
        dcol = np.diff(-m1) - np.diff(-m0)  # (u-g, g-r, r-i, i-z) new - old
        d_ug.append(dcol[0])
        assert np.all(np.abs(dcol[1:]) < 0.015), dcol
    assert 0.04 < d_ug[0] < 0.07 and 0.09 < d_ug[-1] < 0.13 and np.all(np.diff(d_ug) > -0.01), d_ug
