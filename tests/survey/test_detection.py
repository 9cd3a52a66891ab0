"""Selections of several limits and completeness clauses: the shipped SDSS sample is r < 17.77
AND 2MASS-detected, and its 2MASS Ks serves the selection without being fitted."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popsed_jax.inference import fit as fitlib
from popsed_jax.inference.config import FitConfig
from popsed_jax.physics import photometry
from popsed_jax.products.runs import survey_selection
from popsed_jax.survey import catalog as C
from popsed_jax.survey import features, noise, selection
from popsed_jax.survey.observation import features as obs_features
from popsed_jax.survey.observation import is_selected, make_observation, selection_log_weights

UGRIZ = tuple(f"sdss2001-{b}" for b in "ugriz")


@pytest.fixture(scope="module")
def sdss_ks():
    return C.load_catalog("sdss", extra=("twomass-Ks",))


def test_parse_limits_clauses_and_completeness():
    bands = UGRIZ + ("twomass-Ks",)
    assert selection.parse_limits("r<17.77", bands) == [("sdss2001-r", 17.77, None)]
    assert selection.parse_limits(" r<17.77 & Ks < 15.9 ~ 0.1", bands) == [("sdss2001-r", 17.77, None),
                                                                           ("twomass-Ks", 15.9, 0.1)]
    with pytest.raises(ValueError, match="empty clause"):
        selection.parse_limits("r<17.77 &", bands)
    with pytest.raises(ValueError, match="must be > 0"):
        selection.parse_limits("Ks<15.9~0", bands)
    with pytest.raises(ValueError, match="'J' not among"):
        selection.parse_limits("r<17.77 & J<16", bands)


def test_select_catalog_cuts_every_limit_but_not_a_completeness(sdss_ks):
    r = photometry.flux_to_mag(sdss_ks.flux[:, 2])
    ks = photometry.flux_to_mag(sdss_ks.flux[:, 5])
    both = selection.select_catalog(sdss_ks, "r<17.5 & Ks<15.5")
    assert both.n == int(np.sum((r < 17.5) & (ks < 15.5))) > 0
    assert both.meta["dropped"]["selection: not twomass-Ks < 15.5"] > 0
    # a completeness is what the catalog already went through: not applied to it
    assert selection.select_catalog(sdss_ks, "r<17.5 & Ks<15.5~0.1").n == int(np.sum(r < 17.5))


def test_completeness_draws_follow_the_logistic(sdss_ks):
    n = 200_000
    mags = np.linspace(15.0, 16.8, n)
    flux = np.ones((n, 2)) * photometry.mag_to_flux(17.0)
    flux[:, 1] = photometry.mag_to_flux(mags)
    obs = make_observation(noise.fit_noise_model(C.catalog_bands(sdss_ks, ("sdss2001-r", "twomass-Ks"))), "r<17.77 & Ks<15.9~0.1")
    sel = np.asarray(is_selected(obs, jnp.asarray(flux, jnp.float32), jax.random.PRNGKey(3)))
    for m0 in (15.6, 15.9, 16.1):
        near = np.abs(mags - m0) < 0.02
        expect = 1.0 / (1.0 + np.exp(-(15.9 - m0) / 0.1))
        assert abs(sel[near].mean() - expect) < 0.03, (m0, sel[near].mean(), expect)
    # without a key the completeness acts as a cut at its 50% point; the r cut always holds
    hard = np.asarray(is_selected(obs, jnp.asarray(flux, jnp.float32)))
    assert np.array_equal(hard, mags < 15.9)
    # training weights: the completeness's own width, the cut's selection_width
    logw = np.asarray(selection_log_weights(obs, jnp.asarray(flux, jnp.float32)))
    expect = -np.logaddexp(0, -(15.9 - mags) / 0.1) - np.logaddexp(0, -(17.77 - 17.0) / 0.05)
    assert np.max(np.abs(logw - expect)[mags < 16.5]) < 5e-3  # asinh vs Pogson mags, < 0.0004 mag here


def test_selection_band_stays_out_of_the_features(sdss_ks):
    nm = noise.fit_noise_model(sdss_ks)
    obs = make_observation(nm, "r<17.77 & Ks<15.9~0.1", feature_bands=UGRIZ)
    flux = jnp.asarray(sdss_ks.flux[:100], jnp.float32)
    soft = jnp.asarray(features.softening_from_noise(nm), jnp.float32)
    expect = features.make_features(flux[:, :5], soft[:5], colours=True)
    got = obs_features(obs, flux)
    assert got.shape == (100, 5)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expect), rtol=0, atol=1e-6)
    # the Ks column does not move the features
    moved = flux.at[:, 5].multiply(3.0)
    np.testing.assert_array_equal(np.asarray(obs_features(obs, moved)), np.asarray(got))
    cfg = dataclasses.replace(FitConfig(), selection_bands=("twomass-Ks",))
    assert fitlib.fit_bands(cfg, sdss_ks.bands) == UGRIZ
    with pytest.raises(ValueError, match="not among the catalog's bands"):
        fitlib.fit_bands(cfg, UGRIZ)


def test_shipped_ks_limit_is_the_edge_of_the_file_s_counts(sdss_ks):
    """The shipped completeness (SHIPPED_SDSS_SELECTION) is the edge the file's own Ks counts
    show (refitted here from the data: midpoint and width within 0.02 mag), less the light
    2MASS misses, in the model's total Ks."""
    r_sel = selection.select_catalog(sdss_ks, "r<17.77")
    edge = C.detection_edge(photometry.flux_to_mag(r_sel.flux[:, 5]))
    assert abs(edge["m_lim"] - C.TWOMASS_KS_EDGE) < 0.02 and abs(edge["width"] - C.TWOMASS_KS_WIDTH) < 0.02, edge
    (band, lim, width), = [c for c in selection.parse_limits(C.SHIPPED_SDSS_SELECTION["limit"], sdss_ks.bands)
                           if c[0] == "twomass-Ks"]
    assert lim == pytest.approx(C.TWOMASS_KS_EDGE - C.TWOMASS_KS_MISSED_MAG)
    # widened by the 2MASS scatter: a logistic of that width has the variance of the two together
    assert (width * np.pi / np.sqrt(3)) ** 2 == pytest.approx((C.TWOMASS_KS_WIDTH * np.pi / np.sqrt(3)) ** 2
                                                              + C.TWOMASS_KS_SCATTER**2, rel=0.1)
    # and the sample is not r-limited: its counts per mag fall toward r = 17.77 (an r-limited one's rise)
    r = photometry.flux_to_mag(r_sel.flux[:, 2])
    assert np.sum((r > 17.5) & (r < 17.77)) / 0.27 < 0.7 * np.sum((r > 17.0) & (r < 17.3)) / 0.3


def test_detection_edge_recovers_a_known_edge():
    rng = np.random.default_rng(0)
    u = rng.random(200_000)  # counts exp(1.4 m) on [10, 18] (inverse CDF), thinned by the logistic
    m = 18.0 + np.log(np.exp(1.4 * (10.0 - 18.0)) + u * (1.0 - np.exp(1.4 * (10.0 - 18.0)))) / 1.4
    keep = rng.random(m.size) < 1.0 / (1.0 + np.exp(-(15.0 - m) / 0.15))
    edge = C.detection_edge(m[keep], lo=10.0, hi=18.0)
    assert abs(edge["m_lim"] - 15.0) < 0.02 and abs(edge["width"] - 0.15) < 0.02 and abs(edge["slope"] - 1.4) < 0.1


def test_fit_sdss_uses_the_sample_s_own_selection():
    cfg = FitConfig()
    got = survey_selection("sdss", cfg)
    assert got.limit == C.SHIPPED_SDSS_SELECTION["limit"] and got.selection_bands == ("twomass-Ks",)
    assert survey_selection("sdss+2mass", cfg).selection_bands == ()  # its Ks is fitted already
    mine = dataclasses.replace(cfg, limit="r<17.5")
    assert survey_selection("sdss", mine) is mine  # a limit of the user's own is kept
    assert survey_selection("mock.fits", cfg) is cfg


def test_selection_probability_of_an_unfitted_band_matches_noisy_draws(sdss_ks):
    """unfitted_selection_log_probability (a logistic widened by the Ks noise) against the
    fraction of noisy Ks draws (the file's noise model) that pass the completeness: within 0.03
    from Ks = 15.2 to 16.4; zero for a selection on fitted bands only."""
    from popsed_jax.survey.observation import noisy_fluxes, unfitted_selection_log_probability

    nm = noise.fit_noise_model(sdss_ks)
    obs = make_observation(nm, "r<17.77 & Ks<15.9~0.1", feature_bands=UGRIZ)
    ks = np.linspace(15.2, 16.4, 13)
    flux = np.tile(np.median(sdss_ks.flux, 0), (ks.size, 1))
    flux[:, 5] = photometry.mag_to_flux(ks)
    p = np.exp(np.asarray(unfitted_selection_log_probability(obs, jnp.asarray(flux, jnp.float32))))
    reps = 20_000
    big = jnp.asarray(np.repeat(flux, reps, 0), jnp.float32)
    noisy, _ = noisy_fluxes(obs, big, jax.random.PRNGKey(0))
    det = np.asarray(is_selected(dataclasses.replace(obs, limits=obs.limits[1:]), noisy, jax.random.PRNGKey(1)))
    frac = det.reshape(ks.size, reps).mean(1)
    assert np.max(np.abs(p - frac)) < 0.03, np.c_[ks, p, frac]
    assert p[0] > 0.9 and p[-1] < 0.1
    r_only = make_observation(nm, "r<17.77", feature_bands=UGRIZ)
    assert np.all(np.asarray(unfitted_selection_log_probability(r_only, jnp.asarray(flux, jnp.float32))) == 0)


def test_a_mock_draws_the_completeness(sdss_ks):
    """draw_mock with a completeness clause: every returned galaxy passes the cut, and the share
    of galaxies passing the Ks completeness is its logistic's expectation over their noisy Ks (to
    0.02); the clause's draws are reproducible with the seed."""
    from popsed_jax.physics.forward import PARAM_BOUNDS, PARAM_NAMES
    from popsed_jax.survey.mock import draw_mock

    nm = noise.fit_noise_model(sdss_ks)
    rng = np.random.default_rng(2)
    n = 3000
    lo = np.array([PARAM_BOUNDS[p][0] for p in PARAM_NAMES])
    hi = np.array([PARAM_BOUNDS[p][1] for p in PARAM_NAMES])
    th = lo + (hi - lo) * rng.random((n, lo.size))
    th[:, 0] = rng.uniform(0.02, 0.12, n)
    th[:, 1] = rng.uniform(9.8, 11.2, n)
    from astropy.table import Table

    params = Table(th, names=PARAM_NAMES)
    kw = dict(filters=sdss_ks.bands, noise_model=nm, params_table=params, return_all=True, seed=3)
    t = draw_mock(limit="r<17.77 & Ks<15.80~0.14", **kw)
    sel = np.asarray(t["selected"], bool)
    r = photometry.flux_to_mag(np.asarray(t["flux_sdss2001-r"]))
    assert np.all(r[sel] < 17.77)
    passed_r = r < 17.77
    # the completeness of each noisy Ks (an asinh magnitude: some noisy fluxes are <= 0)
    f_ks = jnp.asarray(np.asarray(t["flux_twomass-Ks"])[passed_r, None], jnp.float32)
    expect = np.asarray(selection.soft_selection_weights(f_ks, 0, 15.80, 0.14))
    assert 100 < passed_r.sum() and abs(sel[passed_r].mean() - expect.mean()) < 0.02
    # a completeness, not a cut: some fainter than the limit pass, some brighter do not
    with np.errstate(invalid="ignore"):
        ks = photometry.flux_to_mag(np.asarray(t["flux_twomass-Ks"]))
    assert sel[passed_r & (ks > 15.95)].any() and not sel[passed_r & (ks < 15.65)].all()
    again = draw_mock(limit="r<17.77 & Ks<15.80~0.14", **kw)
    np.testing.assert_array_equal(np.asarray(again["selected"]), sel)
