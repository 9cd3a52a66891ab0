"""Stellar remnants: the Chabrier IMF, turn-off masses from the BC03 living fractions,
remnant mass fractions (FSPS's Renzini & Ciotti 1993 prescription), and the stellar
masses that ``derived_quantities`` reports (living + remnants, and living only).

External reference: FSPS's own Chabrier-IMF mass tables, living stars with and without
remnants (``add_stellar_remnants``), as shipped in the installed ``dsps`` package
(dsps/imf/tests/testing_data, generated with FSPS for ArgonneCPAC/dsps PR #7)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy.integrate import quad

from popsed_jax.physics import ssp
from popsed_jax.physics.forward import IDX, derived_quantities

SOLAR = 4  # index of Z = 0.02 (BC03 solar) in the BC03 grid


def _fsps_chabrier_tables():
    spec = importlib.util.find_spec("dsps")  # locate without importing (import dsps turns on x64)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("dsps not installed")
    d = Path(list(spec.submodule_search_locations)[0]) / "imf" / "tests" / "testing_data"
    if not (d / "chabrier_mstar_surviving_norem.txt").exists():
        pytest.skip("dsps FSPS mass tables not present")
    lg_age_yr = np.loadtxt(d / "lg_ages_mstar_surviving.txt")
    total = np.loadtxt(d / "chabrier_mstar_surviving.txt")  # living + remnants
    living = np.loadtxt(d / "chabrier_mstar_surviving_norem.txt")
    return lg_age_yr - 9.0, living, total


def _at(grid, age_gyr):
    return int(np.argmin(np.abs(grid.lg_age_gyr - np.log10(age_gyr))))


# ------------------------------------------------------------------------------------
# IMF
# ------------------------------------------------------------------------------------
def test_chabrier_imf_normalisation_by_quadrature():
    """1 Msun formed: int m phi dm = 1 over 0.1-100 Msun, and the closed-form cumulative
    number and mass integrals agree with adaptive quadrature of phi itself."""
    phi = ssp.chabrier_imf
    pts = [1.0, 8.5, 40.0]
    mass = quad(lambda m: m * phi(m), 0.1, 100.0, points=pts, limit=200, epsabs=0, epsrel=1e-11)[0]
    assert mass == pytest.approx(1.0, rel=1e-8)
    for m in (0.15, 0.5, 1.0, 2.0, 8.5, 40.0, 100.0):
        brk = [p for p in pts if p < m]
        n_q = quad(phi, 0.1, m, points=brk or None, limit=200, epsabs=0, epsrel=1e-11)[0]
        m_q = quad(lambda x: x * phi(x), 0.1, m, points=brk or None, limit=200, epsabs=0, epsrel=1e-11)[0]
        assert float(ssp.imf_number_below(m)) == pytest.approx(n_q, rel=1e-8)
        assert float(ssp.imf_mass_below(m)) == pytest.approx(m_q, rel=1e-8)
    assert phi(0.09) == 0.0 and phi(101.0) == 0.0
    # continuous at 1 Msun, and shaped as Chabrier (2003, PASP 115, 763, Table 1):
    # dN/dlog m = 0.158 exp(-(log m - log 0.079)^2 / (2 0.69^2)) below 1 Msun, 4.43e-2 m^-1.3
    # above (BC03 rounds m_c to 0.08); compare shapes through ratios, to 2%
    assert phi(1.0 - 1e-9) == pytest.approx(phi(1.0 + 1e-9), rel=1e-6)

    def chabrier03(m):
        return np.where(m <= 1, 0.158 * np.exp(-np.log10(m / 0.079) ** 2 / (2 * 0.69**2)), 4.43e-2 * m**-1.3)

    ms = np.array([0.12, 0.3, 0.7, 1.5, 5.0, 30.0, 90.0])
    mine = phi(ms) * ms  # proportional to dN/dlog m
    np.testing.assert_allclose(mine / mine[1], chabrier03(ms) / chabrier03(ms[1]), rtol=0.02)
    # ~40% of the mass is in stars below 1 Msun and ~23% above 8 Msun for this IMF
    assert 0.38 < float(ssp.imf_mass_below(1.0)) < 0.43
    assert 0.20 < 1 - float(ssp.imf_mass_below(8.0)) < 0.25


def test_remnant_mass_fraction_limits_and_pieces():
    # nothing has died at m_TO = 100; all stars above 40 Msun -> half their mass in BHs
    assert float(ssp.remnant_mass_fraction(100.0)) == 0.0
    bh = 0.5 * (1 - float(ssp.imf_mass_below(40.0)))
    assert float(ssp.remnant_mass_fraction(40.0)) == pytest.approx(bh, rel=1e-12)
    ns = 1.4 * float(ssp.imf_number_below(40.0) - ssp.imf_number_below(8.5))
    assert float(ssp.remnant_mass_fraction(8.5)) == pytest.approx(bh + ns, rel=1e-12)
    # remnants grow as m_TO falls, and each dead star (m > 0.52) leaves less than it had
    m = np.geomspace(0.6, 100, 400)
    r = ssp.remnant_mass_fraction(m)
    assert np.all(np.diff(r) <= 0)
    assert np.all(r + ssp.imf_mass_below(m) <= 1.0 + 1e-12)


# ------------------------------------------------------------------------------------
# the turn-off-mass approximation, checked against FSPS
# ------------------------------------------------------------------------------------
def test_prescription_reproduces_fsps_remnants():
    """FSPS knows its true turn-off masses (isochrones); we infer m_TO from the living
    fraction assuming living stars keep their initial mass. Fed FSPS's living fractions,
    our remnant fractions match FSPS's to < 0.005 (absolute) from 5 Myr to 14 Gyr; before
    5 Myr, wind mass loss of living O stars makes ours high by up to ~0.015."""
    lg_age, living, total = _fsps_chabrier_tables()
    rem, m_to = ssp.remnant_fractions(living)
    fsps_rem = total - living
    late = lg_age >= np.log10(0.005)
    assert np.abs(rem - fsps_rem)[late].max() < 0.005
    assert np.abs(rem - fsps_rem).max() < 0.02
    # FSPS's living fraction yields the lifetime-scaling turn-off masses at 1-10 Gyr
    t = 10**lg_age
    mid = (t >= 1.0) & (t <= 10.0)
    ratio = m_to[mid] / (t[mid] / 10.0) ** (-1 / 2.5)
    assert np.all((ratio > 1 / 1.15) & (ratio < 1.15)), ratio


def test_bc03_turnoff_masses_follow_stellar_lifetimes(grid):
    m_to = grid.m_turnoff
    assert np.all(np.diff(m_to, axis=1) <= 0)  # the turn-off mass falls with age
    assert np.all(m_to[:, 0] > 95)  # at 1e5 yr essentially nothing has died
    t = 10**grid.lg_age_gyr
    mid = (t >= 1.0) & (t <= 10.0)
    for k in range(1, 6):  # 0.02-2.5 Zsun (the 5 Zsun BC03 tracks lose mass much faster)
        ratio = m_to[k, mid] / (t[mid] / 10.0) ** (-1 / 2.5)
        assert np.all((ratio > 1 / 1.3) & (ratio < 1.3)), (k, ratio.min(), ratio.max())
    # solar metallicity: ~2-2.8 Msun at 1 Gyr, ~1-1.3 Msun at 10 Gyr
    assert 2.0 < m_to[SOLAR, _at(grid, 1.0)] < 2.8
    assert 1.0 < m_to[SOLAR, _at(grid, 10.0)] < 1.3


# ------------------------------------------------------------------------------------
# the remnant fractions of the BC03 grid
# ------------------------------------------------------------------------------------
def test_bc03_remnants_start_at_zero_and_grow(grid):
    rem = grid.remnant
    assert rem.shape == grid.surviving.shape
    assert np.all(rem[:, 0] < 1e-3)  # 1e5 yr: no star has died yet
    assert np.all(rem[:, _at(grid, 1e-3)] < 0.005)  # 1 Myr: only the most massive few
    assert np.all(np.diff(rem, axis=1) >= 0)
    assert np.all(rem[:, _at(grid, 1.0)] > 0.05)
    total = grid.surviving + rem
    assert np.all(rem >= 0) and np.all(total >= grid.surviving)
    assert np.all(total <= 1.0 + 1e-12)


def test_bc03_old_stellar_mass_matches_published_values(grid):
    """Living + remnants per Msun formed at 10-13 Gyr: 0.5-0.65 for a Chabrier IMF
    (FSPS: 0.567 at 12.6 Gyr; BC03's LIV_MSTAR_FRAC alone is 0.36-0.44 at 13 Gyr).
    At solar metallicity the BC03 totals lie within 4% of FSPS's at 1-14 Gyr."""
    t = 10**grid.lg_age_gyr
    old = (t >= 10.0) & (t <= 13.0)
    total = grid.surviving + grid.remnant
    assert np.all((total[:, old] > 0.5) & (total[:, old] < 0.65))
    assert np.all(grid.surviving[:, old] < 0.47)  # living alone is not the stellar mass
    lg_age, living_f, total_f = _fsps_chabrier_tables()
    sel = (lg_age >= 0.0) & (lg_age <= np.log10(14.0))
    ours = np.interp(lg_age[sel], grid.lg_age_gyr, total[SOLAR])
    np.testing.assert_allclose(ours, total_f[sel], rtol=0.04)


def test_grid_file_without_remnants_computes_them_on_load(grid, tmp_path):
    """Cached grids from before remnants existed (no ssp_remnant_frac) still load, with
    remnants computed from the living fractions; a stored table is used as is."""
    import h5py

    keep = slice(3, 6)
    base = dict(ssp_lgmet=grid.lgmet[keep], ssp_lg_age_gyr=grid.lg_age_gyr, ssp_wave=grid.wave[:50],
                ssp_flux=grid.flux[keep, :, :50], ssp_surviving_frac=grid.surviving[keep])
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        for k, v in base.items():
            f[k] = v
    g = ssp.load_ssp_grid(old)
    np.testing.assert_array_equal(g.remnant, grid.remnant[keep])
    own = tmp_path / "own.h5"
    with h5py.File(own, "w") as f:
        for k, v in base.items():
            f[k] = v
        f["ssp_remnant_frac"] = np.full(grid.surviving[keep].shape, 0.1)
    assert np.all(ssp.load_ssp_grid(own).remnant == 0.1)
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        for k, v in base.items():
            f[k] = v
        f["ssp_remnant_frac"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match="ssp_remnant_frac"):
        ssp.load_ssp_grid(bad)


# ------------------------------------------------------------------------------------
# populations: derived_quantities
# ------------------------------------------------------------------------------------
def _bursts(t_burst, logz=(-1.0, -0.3, 0.0, 0.2), z=0.05, logm=10.5):
    th = np.zeros((len(logz), 11))
    th[:, IDX["z"]] = z
    th[:, IDX["logM"]] = logm
    th[:, 2:5] = 0.5
    th[:, IDX["t_burst"]] = t_burst
    th[:, IDX["f_burst"]] = 1.0
    th[:, IDX["logZ"]] = logz
    return th


def test_population_stellar_mass_includes_remnants(model, grid):
    old = derived_quantities(model, _bursts(10.0))
    off = np.asarray(old["logM_surviving"] - old["logM_living"])
    assert np.all((off > 0.05) & (off < 0.2)), off
    frac = 10 ** (np.asarray(old["logM_surviving"]) - 10.5)
    assert np.all((frac > 0.5) & (frac < 0.65))
    # a pure 10 Gyr burst keeps what the two neighbouring grid ages keep (living + remnants)
    i = np.searchsorted(grid.lg_age_gyr, 1.0) - 1
    near = (grid.surviving + grid.remnant)[:, i : i + 2]
    assert np.all((frac >= near.min() - 1e-5) & (frac <= near.max() + 1e-5))
    young = derived_quantities(model, _bursts(0.003))
    off_young = np.asarray(young["logM_surviving"] - young["logM_living"])
    assert np.all((off_young >= 0) & (off_young < 0.02))
    assert np.all(off_young < off)
    # sSFR is per unit living + remnant mass
    cont = _bursts(0.05)
    cont[:, IDX["f_burst"]] = 0.2
    d = derived_quantities(model, cont)
    np.testing.assert_allclose(np.asarray(d["log_ssfr_100myr"]),
                               np.log10(np.asarray(d["sfr_100myr"])) - np.asarray(d["logM_surviving"]), atol=2e-5)


def test_derived_masses_are_float32_and_jittable(model):
    th = _bursts(3.0)
    d = derived_quantities(model, th)
    dj = jax.jit(derived_quantities)(model, th)
    for k in ("logM_surviving", "logM_living"):
        assert d[k].dtype == np.float32
        np.testing.assert_allclose(np.asarray(dj[k]), np.asarray(d[k]), rtol=1e-6)
