"""The 'physical' mock population (popsed_jax.survey.mock.sample_physical): its metallicities,
quenched fractions, star-formation rates and dust follow the relations it cites."""
from __future__ import annotations

import json

import numpy as np
import pytest

from popsed_jax.cli import build_parser
from popsed_jax.physics.forward import PARAM_NAMES, check_theta
from popsed_jax.physics.params import IDX, PARAM_BOUNDS
from popsed_jax.physics.photometry import SDSS_UGRIZ
from popsed_jax.physics.relations import gallazzi05_mzr, speagle14_sfms
from popsed_jax.survey import mock as M

OFF = M.FORMED_MINUS_SURVIVING_DEX


def _fixed(z, logm_surviving):
    """zlogm sampler at one redshift and one surviving mass (formed = surviving + 0.23 dex)."""
    return lambda n, rng: (np.full(n, z), np.full(n, logm_surviving + OFF))


@pytest.fixture(scope="module")
def fwd():
    from popsed_jax.physics.forward import build_forward_model

    return build_forward_model(filters=list(SDSS_UGRIZ), z_max=M.Z_RANGE[1])


def _derived(model, th):
    from popsed_jax.physics.forward import derived_quantities

    return {k: np.asarray(v, float) for k, v in derived_quantities(model, th).items()}


def test_physical_draws_in_the_box_and_reproducible():
    th, info = M.sample_physical(4000, 7, return_info=True)
    assert th.shape == (4000, len(PARAM_NAMES))
    check_theta(th)
    for j, name in enumerate(PARAM_NAMES):
        lo, hi = PARAM_BOUNDS[name]
        assert th[:, j].min() >= lo and th[:, j].max() <= hi, name
    assert th[:, IDX["logZ"]].min() >= M.LOGZ_BOX[0] and th[:, IDX["logZ"]].max() <= M.LOGZ_BOX[1]
    assert np.all(th[:, IDX["f_burst"]] == 0.0)  # no bursts
    assert th[:, 0].min() >= M.Z_RANGE[0] and th[:, 0].max() <= M.Z_RANGE[1]
    np.testing.assert_allclose(info["logm_surviving"], th[:, 1] - OFF)
    np.testing.assert_array_equal(th, M.sample_physical(4000, 7))
    assert not np.array_equal(th, M.sample_physical(4000, 8))
    th2 = M.sample_physical(10, 0, _fixed(0.1, 10.0))
    assert np.all(th2[:, 0] == 0.1) and np.allclose(th2[:, 1], 10.0 + OFF)


@pytest.mark.parametrize("logm_surv", [9.27, 10.07, 10.68, 11.27])
def test_metallicity_percentiles_follow_gallazzi05(logm_surv):
    """Median and 16th percentile of log Z at fixed surviving mass are Gallazzi et al.'s (Zsun 0.02
    -> 0.019), at logM - 0.23, not at the formed mass (0.23 dex apart is 0.1-0.2 dex in Z at
    10-10.5); the 84th only drops where the box edge 0.3 trims the upper half."""
    th = M.sample_physical(6000, 3, _fixed(0.1, logm_surv))
    lz = th[:, IDX["logZ"]]
    p16, p50, p84 = (float(v) + np.log10(0.02 / 0.019) for v in gallazzi05_mzr(logm_surv))
    g16, g50, g84 = np.percentile(lz, [16, 50, 84])
    assert abs(g50 - p50) < 0.03 and abs(g16 - p16) < 0.04, (g16, g50, p16, p50)
    assert p50 + 0.4 * (p84 - p50) < g84 < p84 + 0.02, (g84, p84)
    assert lz.max() <= M.LOGZ_BOX[1]
    assert np.mean(lz > M.LOGZ_BOX[1] - 0.005) < 0.01  # truncated, not piled up at the edge


def test_quenched_fraction_rises_with_mass_as_peng10(fwd):
    """The fraction of draws more than 0.6 dex below the Speagle+14 main sequence (measured from
    the SFHs with the forward model's derived quantities) is Peng et al.'s mass-quenched fraction,
    1 - exp(-(M*/10^10.56)^0.8): 1 - 1/e at 10^10.56."""
    assert M.quiescent_fraction_peng10(10.56) == pytest.approx(1 - np.exp(-1))
    fracs = []
    for lm in (9.5, 10.0, 10.56, 11.0, 11.5):
        th = M.sample_physical(2000, 11, _fixed(0.08, lm))
        d = _derived(fwd, th)
        ms = speagle14_sfms(d["logM_surviving"], d["t_universe"], chabrier=True) - d["logM_surviving"]
        f = float(np.mean(d["log_ssfr_100myr"] < ms - 0.6))
        expect = float(M.quiescent_fraction_peng10(lm))
        sig = np.sqrt(expect * (1 - expect) / 2000)
        assert abs(f - expect) < 4 * sig + 0.02, (lm, f, expect)
        fracs.append(f)
    assert np.all(np.diff(fracs) > 0), fracs
    assert fracs[0] < 0.2 and fracs[-1] > 0.9


@pytest.mark.parametrize("z", [0.05, 0.25])
def test_ssfr_star_forming_on_main_sequence_quenched_below(fwd, z):
    """At log M* = 10: star-forming draws' median 100-Myr sSFR (forward model) lies within 0.1 dex
    of Speagle+14 at the draw's cosmic time, quenched ones 1.2-1.8 dex below it; quenched SFHs
    put (almost) nothing in the recent basis and are older."""
    th, info = M.sample_physical(3000, 5, _fixed(z, 10.0), return_info=True)
    d = _derived(fwd, th)
    q = info["quiescent"]
    assert 200 < q.sum() < 2800
    ms = float(np.median(speagle14_sfms(d["logM_surviving"], d["t_universe"], chabrier=True) - d["logM_surviving"]))
    s = d["log_ssfr_100myr"]
    assert abs(np.median(s[~q]) - ms) < 0.1, (np.median(s[~q]), ms)
    assert 0.15 < np.std(s[~q]) < 0.3  # the 0.2 dex scatter (+ the surviving-mass spread)
    assert 1.2 < ms - np.median(s[q]) < 1.8, (np.median(s[q]), ms)
    assert np.median(d["beta1"][q]) < 0.01 < np.median(d["beta1"][~q])
    assert np.median(d["age_mw"][q]) > np.median(d["age_mw"][~q]) + 1.0
    # the logM - logM_surviving the SFH solve assumes is the forward model's to 0.06 dex
    assert np.all(np.abs(th[:, 1] - d["logM_surviving"] - OFF) < 0.06)


def test_dust_follows_garn_best10():
    """tau2 of star-forming galaxies reproduces the Garn & Best (2010) H-alpha attenuation at their
    mass through the model's own curves (birth cloud + diffuse), rises with mass, exceeds the
    quenched galaxies'; tau1 = tau2 (1 - mu) / mu with mu = 0.3."""
    from popsed_jax.physics.dust import LAM_V, RV_C00, calzetti00_k

    med_tau2 = []
    for lm in (9.5, 10.5, 11.0):
        th, info = M.sample_physical(4000, 2, _fixed(0.1, lm), return_info=True)
        sf = ~info["quiescent"]
        tau1, tau2, nd = th[:, IDX["tau1"]], th[:, IDX["tau2"]], th[:, IDX["n_dust"]]
        ok = tau1 < 3.0
        np.testing.assert_allclose(tau1[ok], tau2[ok] * (1 - M.CF00_MU) / M.CF00_MU, rtol=1e-9)
        x = 0.65628 / LAM_V
        a_ha = 1.0857 * (tau1 / x + tau2 * float(calzetti00_k(0.65628)) / RV_C00 * x ** nd)
        assert abs(np.median(a_ha[sf]) - M.garn_best10_a_halpha(lm)) < 0.05, lm
        assert 0.2 < np.std(a_ha[sf]) < 0.35
        med_tau2.append(np.median(tau2[sf]))
        if info["quiescent"].sum() > 100:
            assert np.median(tau2[info["quiescent"]]) < np.median(tau2[sf])
        assert np.all((nd >= -1.0) & (nd <= 0.4))
    assert np.all(np.diff(med_tau2) > 0), med_tau2


def test_draw_mock_physical_meta_and_cli(fwd):
    from popsed_jax.survey.catalog import read_sdss_main
    from popsed_jax.survey.noise import fit_noise_model

    nm = fit_noise_model(read_sdss_main())
    t = M.draw_mock(256, seed=3, noise_model=nm, model=fwd, population="physical", return_all=True)
    meta = json.loads(t.meta["PSMETA"])
    assert meta["population"] == "physical" and "Gallazzi" in meta["population_detail"]
    assert np.all(np.asarray(t["f_burst"]) == 0.0)
    t2 = M.draw_mock(256, seed=3, noise_model=nm, model=fwd, return_all=True)
    assert json.loads(t2.meta["PSMETA"])["population"] == "table2"  # the default is unchanged
    with pytest.raises(ValueError, match="population"):
        M.draw_mock(5, noise_model=nm, model=fwd, population="gama")
    ap = build_parser()
    assert ap.parse_args(["mock", "--n", "5", "--population", "physical", "--out", "x.fits"]).population == "physical"
    assert ap.parse_args(["mock", "--n", "5", "--out", "x.fits"]).population == "table2"
