"""Literature relations: values at known points, limits and unit conversions."""
import numpy as np
import pytest

from popsed_jax.physics import relations


def test_baldry12_reference_function():
    p = dict(logMstar=10.66, phi1=3.96e-3, alpha1=-0.35, phi2=0.79e-3, alpha2=-1.47)
    # at M = M* (h = 0.7): ln10 e^-1 (phi1 + phi2)
    assert relations.baldry12_smf(p["logMstar"], h=0.7) == pytest.approx(np.log(10) / np.e * (p["phi1"] + p["phi2"]), rel=1e-12)
    # low-mass slope -> alpha2 + 1 per dex (the steeper component dominates)
    lo = np.log10(relations.baldry12_smf([7.0, 7.5], h=0.7))
    assert (lo[1] - lo[0]) / 0.5 == pytest.approx(p["alpha2"] + 1, abs=0.05)
    # h conversion: masses ~ h^-2, densities ~ h^3
    h = 0.6774
    np.testing.assert_allclose(relations.baldry12_smf(np.array([9.0, 10.5]) + 2 * np.log10(0.7 / h), h=h),
                               relations.baldry12_smf([9.0, 10.5], h=0.7) * (h / 0.7) ** 3, rtol=1e-6)


def test_sfms_relations_at_known_points():
    # Speagle+14 eq. 28 at log M = 10, t = 13.0 Gyr: (0.84 - 0.338) 10 - (6.51 - 1.43) = -0.06
    assert relations.speagle14_sfms(10.0, 13.0) == pytest.approx(-0.06, abs=1e-12)
    # slope at t = 0: 0.84; intercept shift 0.11 per Gyr at log M = 0
    assert relations.speagle14_sfms(11.0, 0.0) - relations.speagle14_sfms(10.0, 0.0) == pytest.approx(0.84)
    assert relations.speagle14_sfms(0.0, 1.0) - relations.speagle14_sfms(0.0, 0.0) == pytest.approx(0.11)
    # Chabrier: M and SFR both 0.03 dex lower than Kroupa
    k = relations.speagle14_sfms(10.03, 13.0)
    assert relations.speagle14_sfms(10.0, 13.0, chabrier=True) == pytest.approx(k - 0.03, abs=1e-12)
    assert relations.renzini_peng15_sfms(10.0) == pytest.approx(-0.04, abs=1e-12)
    assert relations.renzini_peng15_sfms(11.0) - relations.renzini_peng15_sfms(10.0) == pytest.approx(0.76)


def test_gallazzi05_mzr_table_points_and_shape():
    p16, p50, p84 = relations.gallazzi05_mzr([10.47, 11.07])
    np.testing.assert_allclose(p50, [-0.01, 0.10])
    assert np.all(p16 < p50) and np.all(p50 < p84)
    lo, mid, hi = relations.gallazzi05_mzr(np.linspace(9.0, 11.8, 50))
    assert np.all(np.diff(mid[10:]) >= 0)  # metallicity rises with mass above ~1e9.5 Msun, then flattens
    assert relations.gallazzi05_mzr(13.0)[1] == pytest.approx(0.15)  # flat beyond the table

