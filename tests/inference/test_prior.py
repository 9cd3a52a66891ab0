"""Population priors: normalised densities, the relation they encode, and the KL term they add."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popsed_jax.inference import fit as fitlib
from popsed_jax.inference.config import FitConfig
from popsed_jax.inference.prior import (MS_SPLIT_DEX, MS_SPLIT_WIDTH, UR_SPLIT_WIDTH, log_prior_ratio, log_ssfr_vs_main_sequence, mzr_log_density,
                                        smf_log_density, ssfr_log_density, ssfr_reference_table, typed_smf_log_density)
from popsed_jax.physics.relations import gallazzi05_mzr
from popsed_jax.survey.catalog import read_sdss_main


@pytest.mark.parametrize("log_m_surv", [9.0, 10.0, 10.5, 11.5])
def test_mzr_density_is_normalised_on_the_box_and_has_gallazzis_percentiles(log_m_surv):
    """Normalised on the box; the median is Gallazzi's (to 0.002 dex: the halves are joined by a
    0.02-dex logistic), and each half, truncated on its own side, holds 1/2: the CDF at p16 is (Phi(-1) - Phi(lo')) / (1/2 - Phi(lo')) / 2 and at p84
    1/2 + (Phi(1) - 1/2) / (Phi(hi') - 1/2) / 2 (widths floored at 0.1 dex). The physical mock
    (survey.mock.sample_logz_gallazzi05) draws the same distribution: their quantiles agree."""
    from scipy.stats import norm

    from popsed_jax.survey.mock import sample_logz_gallazzi05

    x = np.linspace(-2.27, 0.3, 40001)
    lp = np.asarray(mzr_log_density(jnp.asarray(x), jnp.full(x.shape, log_m_surv + 0.23), -2.27, 0.3))
    dens = np.exp(lp)
    assert np.trapezoid(dens, x) == pytest.approx(1.0, abs=1e-4)
    p16, g50, p84 = (float(v) + np.log10(0.02 / 0.019) for v in gallazzi05_mzr(log_m_surv))
    s1, s2 = max(g50 - p16, 0.1), max(p84 - g50, 0.1)
    f_lo, f_hi = norm.cdf((-2.27 - g50) / s1), norm.cdf((0.3 - g50) / s2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(x))])
    expected = {g50 - s1: 0.5 * (norm.cdf(-1.0) - f_lo) / (0.5 - f_lo), g50: 0.5,
                g50 + s2: 0.5 + 0.5 * (norm.cdf(1.0) - 0.5) / (f_hi - 0.5)}
    for point, p in expected.items():
        if point < 0.3:
            # the join keeps the median by moving the halves down by up to 2 ln2 x 0.02 dex: up to
            # 0.01 in probability at the 16 and 84% points (<= 0.028 dex)
            assert np.interp(point, x, cdf) == pytest.approx(p, abs=2e-3 if p == 0.5 else 1e-2), point
    draws = sample_logz_gallazzi05(np.full(200_000, log_m_surv), np.random.default_rng(0))
    for q in (0.16, 0.5, 0.84):
        assert np.quantile(draws, q) == pytest.approx(np.interp(q, cdf, x), abs=0.01 if q == 0.5 else 0.03), q


@pytest.mark.parametrize("log_m_surv", [10.3, 10.7, 11.1])
def test_mzr_gradient_through_samples_is_the_gradient_of_the_expectation(log_m_surv):
    """The KL term differentiates E_q[log prior] through the flow's samples, which cannot see a
    jump in the density: the MZR must be continuous in logZ. For q a normal of width 0.15 dex
    clipped to the box, d/dmu of the Monte Carlo mean (autodiff) equals the finite difference of
    the exact expectation (quadrature). With the halves joined by a hard step it was off by up to
    1.6 nats/dex, pulling the fit 0.1-0.2 dex below Gallazzi's median."""
    from scipy.stats import norm

    lo, hi = -2.27, 0.3
    x = np.linspace(lo, hi, 400_001)
    dx = x[1] - x[0]

    def f(z):
        return mzr_log_density(z, jnp.full_like(z, log_m_surv + 0.23), lo, hi)

    fx = np.asarray(f(jnp.asarray(x)), float)
    eps = jax.random.normal(jax.random.PRNGKey(0), (400_000,))
    for mu in (-0.2, 0.05):
        pathwise = float(jax.grad(lambda m: jnp.mean(f(jnp.clip(m + 0.15 * eps, lo, hi))))(jnp.float32(mu)))

        def exact(m):  # over the clipped normal: the inside, and point masses at the edges
            return np.sum(norm.pdf(x, m, 0.15) * dx * fx) + norm.sf(hi, m, 0.15) * fx[-1] + norm.cdf(lo, m, 0.15) * fx[0]

        fd = (exact(mu + 1e-3) - exact(mu - 1e-3)) / 2e-3
        assert pathwise == pytest.approx(fd, abs=0.05), (mu, pathwise, fd)


def test_flat_prior_ratio_is_zero_and_mzr_prefers_metal_rich_massive_galaxies():
    lo, hi = fitlib.box_bounds(FitConfig(logz_range=(-2.27, 0.3)))
    th = np.tile(np.array([0.1, 11.2, 0.5, 0.5, 0.5, 5.0, 0.1, 0.0, 0.0, 0.5, 0.5]), (2, 1))
    th[1, 7] = -1.8  # a metal-poor massive galaxy
    assert np.all(np.asarray(log_prior_ratio(jnp.asarray(th), "flat", lo, hi)) == 0)
    r = np.asarray(log_prior_ratio(jnp.asarray(th), "mzr", lo, hi))
    assert r[0] > 0 > r[1] and r[0] - r[1] > 10
    with pytest.raises(ValueError, match="prior must be one of"):
        log_prior_ratio(jnp.asarray(th), "gaussian", lo, hi)


def test_smf_prior_is_baldrys_mass_function_normalised_on_the_box():
    """Normalised on the box's formed masses; its log slope is the double Schechter's: (alpha2 + 1) ln10
    per dex far below M* (the faint-end slope), falling as -ln10 M/M* far above it; the gradient
    matches finite differences; the same density is what the mocks draw masses from (a sample's CDF)."""
    from popsed_jax.physics.relations import BALDRY12, H_SHIFT_DEX
    from popsed_jax.survey.mock import logm_baldry12_cdf

    from popsed_jax.physics.relations import baldry12_smf

    x = np.linspace(7.5, 13.0, 200_001)
    lp = np.asarray(smf_log_density(jnp.asarray(x), 7.5, 13.0))
    assert np.trapezoid(np.exp(lp), x) == pytest.approx(1.0, abs=1e-5)
    slope = np.gradient(np.log(baldry12_smf(x - 0.23)), x)  # float64 reference
    m_star = BALDRY12["logMstar"] + H_SHIFT_DEX + 0.23  # in formed mass
    faint = (BALDRY12["alpha2"] + 1) * np.log(10)
    assert slope[np.searchsorted(x, m_star - 2.5)] == pytest.approx(faint, rel=0.05)
    hi = np.searchsorted(x, m_star + 0.8)
    assert slope[hi] == pytest.approx(-np.log(10) * 10 ** 0.8 + (BALDRY12["alpha1"] + 1) * np.log(10), rel=0.05)
    g = jax.grad(lambda m: smf_log_density(m, 7.5, 13.0))(jnp.float32(10.8))
    assert float(g) == pytest.approx(np.interp(10.8, x, slope), rel=1e-3)
    ok = x < 12.5  # beyond, exp(-M/M*) underflows even in float64's reference; the log form stays finite
    np.testing.assert_allclose(lp[ok], np.log(baldry12_smf(x[ok] - 0.23)) - np.log(np.trapezoid(baldry12_smf(x - 0.23), x)),
                               atol=2e-4)
    assert np.all(np.isfinite(lp)) and np.isfinite(float(jax.grad(lambda m: smf_log_density(m, 7.5, 13.0))(jnp.float32(13.0))))
    # the mock's mass sampler inverts the same function (surviving masses)
    xs, cdf = logm_baldry12_cdf((7.5 - 0.23, 13.0 - 0.23))
    ours = np.concatenate([[0.0], np.cumsum(0.5 * (np.exp(lp[1:]) + np.exp(lp[:-1])) * np.diff(x))])
    np.testing.assert_allclose(np.interp(xs + 0.23, x, ours), cdf, atol=1e-4)


def test_mzr_smf_prior_adds_the_mass_function_to_the_mzr_and_prefers_lower_masses():
    lo, hi = fitlib.box_bounds(FitConfig())
    th = np.tile(np.array([0.1, 10.0, 0.5, 0.5, 0.5, 5.0, 0.1, 0.0, 0.0, 0.5, 0.5]), (3, 1))
    th[:, 1] = [9.5, 10.5, 11.8]
    th[:, 7] = [-0.2, 0.0, 0.1]
    both = np.asarray(log_prior_ratio(jnp.asarray(th), "mzr+smf", lo, hi))
    mzr = np.asarray(log_prior_ratio(jnp.asarray(th), "mzr", lo, hi))
    smf = np.asarray(smf_log_density(jnp.asarray(th[:, 1]), 7.5, 13.0)) + np.log(13.0 - 7.5)
    np.testing.assert_allclose(both - mzr, smf, rtol=1e-5)
    assert smf[0] > smf[1] > smf[2]
    assert FitConfig(prior="mzr+smf").prior == "mzr+smf"


def test_typed_smf_is_normalised_per_type_and_is_what_the_physical_mock_draws():
    """p(log M | offset from the main sequence) is a normalised density at every offset (quenched,
    star-forming, at the split); far below Peng's M_q the quenched/star-forming log ratio rises as
    p4 ln10 per dex (their quenched fraction ~ (M/M_q)^0.8); and the physical mock, which draws
    Baldry+12 masses, quenches them with Peng+10's f_q and puts them 1.5 +- 0.4 dex below the
    Speagle+14 main sequence, has the masses these densities give once its galaxies are typed the
    prior's way, by their sSFR offset (CDFs, on the mock's mass range)."""
    from popsed_jax.physics.relations import speagle14_sfms
    from popsed_jax.survey.mock import LOGM_RANGE, _age_gyr, sample_physical

    x = np.linspace(7.5, 13.0, 20001)
    dens = {}
    for d in (-5.0, MS_SPLIT_DEX, 3.0):
        lp = np.asarray(typed_smf_log_density(jnp.asarray(x), jnp.full(x.shape, d), 7.5, 13.0))
        assert np.all(np.isfinite(lp))
        assert np.trapezoid(np.exp(lp), x) == pytest.approx(1.0, abs=1e-4), d
        dens[d] = lp
    # typed by colour instead: the same densities at the same logistic argument
    for d, margin in ((-5.0, UR_SPLIT_WIDTH * (MS_SPLIT_DEX + 5.0) / MS_SPLIT_WIDTH), (3.0, UR_SPLIT_WIDTH * (MS_SPLIT_DEX - 3.0) / MS_SPLIT_WIDTH)):
        lc = np.asarray(typed_smf_log_density(jnp.asarray(x), None, 7.5, 13.0, red_margin=jnp.full(x.shape, margin)))
        np.testing.assert_allclose(lc, dens[d], rtol=1e-5, atol=1e-5)
    # at the split the two types weigh 1/2 each
    np.testing.assert_allclose(np.exp(dens[MS_SPLIT_DEX]), 0.5 * (np.exp(dens[-5.0]) + np.exp(dens[3.0])), rtol=1e-3, atol=1e-6)
    ratio = dens[-5.0] - dens[3.0]
    i, j = np.searchsorted(x, [8.0, 8.5])
    assert (ratio[j] - ratio[i]) / 0.5 == pytest.approx(0.8 * np.log(10.0), rel=0.02)
    assert x[np.argmax(dens[-5.0])] > 10.3 and x[np.argmax(dens[3.0])] < 8.0  # quenched turn over, star-forming rise
    # the mock's draws, typed by their sSFR offset as the prior types them
    th, info = sample_physical(100_000, 3, return_info=True)
    lms = info["logm_surviving"]
    d_ms = info["log_ssfr_target"] - (speagle14_sfms(lms, _age_gyr(th[:, 0]), chabrier=True) - lms)
    quenched = d_ms < MS_SPLIT_DEX
    assert np.mean(quenched != info["quiescent"]) < 0.01
    lo, hi = LOGM_RANGE
    xm = np.linspace(lo, hi, 4001)
    for q, d in ((True, -5.0), (False, 3.0)):
        lp = np.asarray(typed_smf_log_density(jnp.asarray(xm), jnp.full(xm.shape, d), lo, hi))
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (np.exp(lp[1:]) + np.exp(lp[:-1])) * np.diff(xm))])
        m = np.sort(th[quenched == q, 1])
        emp = np.arange(1, m.size + 1) / m.size
        assert np.max(np.abs(np.interp(m, xm, cdf) - emp)) < 0.015, q


def test_typed_smf_gradient_matches_finite_differences():
    f = lambda m, s: typed_smf_log_density(m, s, 7.5, 13.0)  # noqa: E731
    for m0, s0 in ((10.8, -0.8), (9.5, 0.1), (11.5, -1.5)):
        gm, gs = jax.grad(f, argnums=(0, 1))(jnp.float32(m0), jnp.float32(s0))
        assert gm.dtype == jnp.float32
        h = 1e-3
        fd_m = (float(f(jnp.float32(m0 + h), jnp.float32(s0))) - float(f(jnp.float32(m0 - h), jnp.float32(s0)))) / (2 * h)
        fd_s = (float(f(jnp.float32(m0), jnp.float32(s0 + h))) - float(f(jnp.float32(m0), jnp.float32(s0 - h)))) / (2 * h)
        assert float(gm) == pytest.approx(fd_m, rel=2e-2, abs=2e-2)
        assert float(gs) == pytest.approx(fd_s, rel=2e-2, abs=2e-2)


def test_typed_prior_uses_the_model_s_ssfr_and_disfavours_massive_star_forming_galaxies(model):
    """log_prior_ratio('mzr+smf-type') = the MZR term + the typed mass function at each galaxy's own
    100-Myr sSFR offset from the main sequence, from the forward model; a massive galaxy is a
    priori likelier quenched than star-forming, a dwarf the other way; it takes (K, n, 11) as the
    fit passes it, with finite float32 gradients; without the model it refuses with a clear error."""
    from popsed_jax.physics.forward import derived_quantities
    from popsed_jax.physics.relations import speagle14_sfms

    lo, hi = fitlib.box_bounds(FitConfig())
    base = np.array([0.1, 11.5, 0.9, 0.5, 0.5, 5.0, 0.0, 0.0, 0.0, 0.3, 0.3])
    th = np.tile(base, (4, 1))
    th[:, 1] = [11.5, 11.5, 9.0, 9.0]
    th[[0, 2], 2:5] = 1.0  # all mass in the oldest basis: quenched
    th[[1, 3], 2] = 0.001  # beta1 = 1 - kappa1^(1/3) = 0.9 in the most recent basis: star-forming
    thj = jnp.asarray(th, jnp.float32)
    d = derived_quantities(model, thj)
    lms = th[:, 1] - 0.23
    d_ms = np.asarray(d["log_ssfr_100myr"]) - (speagle14_sfms(lms, np.asarray(d["t_universe"]), chabrier=True) - lms)
    np.testing.assert_allclose(np.asarray(log_ssfr_vs_main_sequence(model, thj)), d_ms, atol=1e-4)
    assert d_ms[0] < -1.5 and d_ms[2] < -1.5 and d_ms[1] > -0.3 and d_ms[3] > -0.3
    typed = np.asarray(log_prior_ratio(thj, "mzr+smf-type", lo, hi, model))
    mzr = np.asarray(log_prior_ratio(thj, "mzr", lo, hi))
    m = fitlib.PARAM_NAMES.index("logM")
    # the same galaxy at other formed masses g: same sSFR and cosmic time, the main sequence at g
    t_u = np.asarray(d["t_universe"], float)
    lssfr = np.asarray(d["log_ssfr_100myr"], float)

    def d_ms_at(g):
        g = np.asarray(g, float)[None, :] - 0.23
        return jnp.asarray(lssfr[:, None] - (speagle14_sfms(g, t_u[:, None], chabrier=True) - g), jnp.float32)

    expect = np.asarray(typed_smf_log_density(thj[:, m], jnp.asarray(d_ms), lo[m], hi[m], type_at=d_ms_at)) + np.log(hi[m] - lo[m])
    np.testing.assert_allclose(typed - mzr, expect, rtol=1e-4, atol=1e-4)
    assert typed[0] > typed[1] + 5 and typed[3] > typed[2] + 0.5
    # the fit's (K, n, 11) layout: same values, finite float32 gradients
    th3 = jnp.stack([thj, thj[::-1]])
    ratio3 = jax.jit(lambda t: log_prior_ratio(t, "mzr+smf-type", lo, hi, model))  # jitted: eager, a new shape took 3x longer
    v3 = ratio3(th3)
    np.testing.assert_allclose(np.asarray(v3[1]), typed[::-1], rtol=1e-5, atol=1e-5)
    g = jax.jit(jax.grad(lambda t: jnp.sum(ratio3(t))))(th3.at[..., 2:5].set(0.5))
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))
    with pytest.raises(ValueError, match="needs the forward model"):
        log_prior_ratio(thj, "mzr+smf-type", lo, hi)
    assert FitConfig(prior="mzr+smf-type").prior == "mzr+smf-type"


def test_physical_ssfr_density_is_the_mocks_main_sequence_and_quenched_mixture():
    """g(d | M) is normalised in d at every mass, and the share below the split is Peng's f_q times
    the quenched Gaussian's N(-1.5, 0.4) share below it (plus the main sequence's N(0, 0.2) tail)."""
    from scipy.stats import norm

    from popsed_jax.physics.relations import peng10_log_quenched_fraction

    d = np.linspace(-6.0, 3.0, 18001)
    for lm in (9.0, 10.5, 11.5):
        g = np.exp(np.asarray(ssfr_log_density(jnp.asarray(d), jnp.full(d.shape, lm))))
        assert np.trapezoid(g, d) == pytest.approx(1.0, abs=1e-4)
        fq = float(np.exp(peng10_log_quenched_fraction(lm - 0.23)[0]))
        below = np.trapezoid(g[d < MS_SPLIT_DEX], d[d < MS_SPLIT_DEX])
        expect = fq * norm.cdf((MS_SPLIT_DEX + 1.5) / 0.4) + (1 - fq) * norm.cdf(MS_SPLIT_DEX / 0.2)
        assert below == pytest.approx(expect, abs=1e-3), lm  # 97% of the quenched Gaussian lies below the split


def test_physical_prior_gives_box_draws_the_quenched_fraction_of_peng(model):
    """Box draws weighted by the 'physical' prior ratio (its sSFR part: the MZR and mass terms do
    not involve the SFH) have, in each mass bin, the quenched share (sSFR offset below -0.75 dex)
    of Peng+10's f_q and star-forming galaxies centred on the main sequence, although the box
    itself has only 8-30% of its SFHs there above 10^10.5: the reference's own sSFR density is
    divided out (without that division the share would follow the box)."""
    from scipy.stats import norm

    from popsed_jax.physics.relations import peng10_log_quenched_fraction

    lo, hi = fitlib.box_bounds(FitConfig(prior="physical"))
    table = ssfr_reference_table(model, lo, hi, n_draws=10_000)
    rng = np.random.default_rng(1)
    n = 60_000
    th = lo + (hi - lo) * rng.random((n, 11))
    th[:, 0] = rng.uniform(0.02, 0.3, n)
    th[:, 1] = rng.uniform(10.0, 12.0, n)
    thj = jnp.asarray(th, jnp.float32)
    lr = np.asarray(log_prior_ratio(thj, "physical", lo, hi, model, table), float)
    lr -= np.asarray(log_prior_ratio(thj, "mzr+smf", lo, hi), float)
    d = np.asarray(log_ssfr_vs_main_sequence(model, thj), float)
    for a, b in ((10.0, 10.5), (10.5, 11.0), (11.0, 11.5)):
        m = (th[:, 1] >= a) & (th[:, 1] < b)
        w = np.exp(lr[m] - lr[m].max())
        w /= w.sum()
        grid = np.linspace(a, b, 11)
        fq = float(np.mean(np.exp(np.asarray(peng10_log_quenched_fraction(grid - 0.23)[0]))))
        expect = fq * norm.cdf((MS_SPLIT_DEX + 1.5) / 0.4) + (1 - fq) * norm.cdf(MS_SPLIT_DEX / 0.2)
        assert np.sum(w[d[m] < MS_SPLIT_DEX]) == pytest.approx(expect, abs=0.04), (a, b)
        assert abs(np.mean(d[m] < MS_SPLIT_DEX) - fq) > 0.1 or a == 10.0  # the box alone does not have it
        sf = d[m] > MS_SPLIT_DEX
        assert abs(np.sum(w[sf] * d[m][sf]) / np.sum(w[sf])) < 0.15  # star-forming ones on the main sequence
    with pytest.raises(ValueError, match="needs ssfr_table"):
        log_prior_ratio(thj[:4], "physical", lo, hi, model)


@pytest.mark.slow  # compiles the members' loss (~30 s); the default suite's KL test (test_fit.py) shares the path
@pytest.mark.parametrize("prior", ["mzr", "mzr+smf-type", "mzr+smf-colour", "physical"])
def test_mzr_prior_adds_minus_weighted_mean_log_ratio_of_the_same_samples(prior):
    tiny = dict(steps=12, n_sim=256, batch_obs=256, n_val=256, flow_layers=2, flow_hidden=16, flow_bins=8,
                logz_range=(-2.27, 0.3), prior="flat")
    flat = fitlib.prepare(read_sdss_main(), FitConfig(**tiny))
    table = ssfr_reference_table(flat.model, flat.flow_cfg.lo, flat.flow_cfg.hi, n_draws=2000) if prior == "physical" else None
    mzr = dataclasses.replace(flat, cfg=dataclasses.replace(flat.cfg, prior=prior), prior_table=table)
    one = jax.tree.map(lambda x: x[:1], fitlib.init(flat).params)
    key = jax.random.PRNGKey(5)
    v0 = fitlib._members_loss(flat, flat.statics, one, key[None], flat.obs_train, 0.1, 1.0)[0][0]
    v1 = fitlib._members_loss(mzr, mzr.statics, one, key[None], flat.obs_train, 0.1, 1.0)[0][0]
    theta = fitlib.simulate_members(flat, flat.statics, one, jax.random.split(key, 3)[0][None], 256, 1.0)[0][0]
    expect = -flat.cfg.kl_weight * float(jnp.mean(log_prior_ratio(theta, prior, flat.flow_cfg.lo, flat.flow_cfg.hi, flat.model,
                                                                           table, mass_function=flat.cfg.mass_function)))
    assert float(v1 - v0) == pytest.approx(expect, rel=1e-3, abs=1e-6)


def test_rest_frame_absolute_magnitudes_are_the_observed_ones_minus_the_distance_modulus_as_z_goes_to_0(model):
    """The rest-frame (z = 0) absolute AB magnitudes equal the observed magnitudes of the same
    galaxy at z -> 0 minus its distance modulus (the K-correction vanishes); 10x the mass is 2.5
    mag brighter in every band; forward_fluxes(with_rest=True) returns the same from its own
    spectra."""
    from popsed_jax.physics import cosmology
    from popsed_jax.physics.forward import forward_fluxes, rest_frame_abs_mags

    th = np.array([[1e-3, 10.5, 0.5, 0.5, 0.5, 5.0, 0.0, 0.0, -0.3, 0.3, 0.5],
                   [1e-3, 9.0, 0.01, 0.5, 0.5, 0.1, 0.2, -0.7, 0.0, 0.8, 0.2],
                   [1e-3, 11.0, 1.0, 1.0, 1.0, 5.0, 0.0, 0.2, 0.0, 0.0, 0.0]])
    thj = jnp.asarray(th, jnp.float32)
    mags = np.asarray(rest_frame_abs_mags(model, thj))
    app = 22.5 - 2.5 * np.log10(np.asarray(forward_fluxes(model, thj)))
    dist_mod = 5 * np.log10(np.asarray(cosmology.lum_distance(thj[:, 0], model.cosmo)) * 1e5)
    np.testing.assert_allclose(app - dist_mod[:, None], mags, atol=5e-3)
    brighter = np.asarray(rest_frame_abs_mags(model, thj.at[:, 1].add(1.0)))
    np.testing.assert_allclose(mags - brighter, 2.5, atol=1e-4)
    # the forward model's own pass gives the same, chunked or not (the fit takes them from there)
    for chunk in (None, 2):
        fl, rest = forward_fluxes(model, thj, chunk_size=chunk, with_rest=True)
        np.testing.assert_allclose(np.asarray(fl), np.asarray(forward_fluxes(model, thj)), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(rest), mags, atol=1e-5)


def test_colour_typed_prior_types_old_galaxies_red_and_young_ones_blue(model):
    """'mzr+smf-colour': an old dust-free population is above Baldry+04's red/blue divider in
    rest-frame u - r, a young star-forming one below, and a massive star-forming one reddened by
    dust (tau2 = 3) counts as red, as Peng+10's colour-typed red fraction counts it; the prior adds
    the typed mass function at that colour margin to the MZR, favours a massive red galaxy over a
    massive blue one, takes the fit's (K, n, 11) layout with finite float32 gradients, and refuses
    a model without a u band with a message naming the bands."""
    from popsed_jax.inference.prior import red_colour_margin

    lo, hi = fitlib.box_bounds(FitConfig())
    base = np.array([0.1, 11.5, 0.9, 0.5, 0.5, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    th = np.tile(base, (3, 1))
    th[0, 2:5] = 1.0  # all mass in the oldest basis: old, quenched
    th[1:, 2] = 0.001  # most mass in the most recent basis: star-forming
    th[2, 2], th[2, 10] = 0.5, 3.0  # star-forming behind a lot of dust
    thj = jnp.asarray(th, jnp.float32)
    red = np.asarray(red_colour_margin(model, thj))
    assert red[0] > 0.1 and red[1] < -0.3 and red[2] > 0.1
    assert float(log_ssfr_vs_main_sequence(model, thj)[2]) > 0.3  # on or above the main sequence by its sSFR
    m = fitlib.PARAM_NAMES.index("logM")
    v = np.asarray(log_prior_ratio(thj, "mzr+smf-colour", lo, hi, model))
    from popsed_jax.physics.forward import rest_frame_abs_mags
    from popsed_jax.physics.relations import baldry04_ur_divider

    mags = np.asarray(rest_frame_abs_mags(model, thj), float)
    u_r, m_r = mags[:, 0] - mags[:, 2], mags[:, 2]

    def margin_at(g):  # the same galaxy at formed mass g: as red, 2.5 (g - logM) mag brighter
        return jnp.asarray(u_r[:, None] - baldry04_ur_divider(m_r[:, None] - 2.5 * (np.asarray(g)[None, :] - th[:, m, None])), jnp.float32)

    expect = (np.asarray(log_prior_ratio(thj, "mzr", lo, hi))
              + np.asarray(typed_smf_log_density(thj[:, m], None, lo[m], hi[m], red_margin=jnp.asarray(red), type_at=margin_at))
              + np.log(hi[m] - lo[m]))
    np.testing.assert_allclose(v, expect, rtol=1e-4, atol=1e-4)
    assert v[0] > v[1] + 3
    th3 = jnp.stack([thj, thj[::-1]])
    g = jax.jit(jax.grad(lambda t: jnp.sum(log_prior_ratio(t, "mzr+smf-colour", lo, hi, model))))(th3.at[..., 2:5].set(0.5))
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))
    no_u = dataclasses.replace(model, bands=tuple(b for b in model.bands if not b.endswith("-u")),
                               filt=model.filt[:, 1:] if model.bands[0].endswith("-u") else model.filt)
    with pytest.raises(ValueError, match="no u or no r band"):
        red_colour_margin(no_u, thj)
    assert FitConfig(prior="mzr+smf-colour").prior == "mzr+smf-colour"


def test_the_default_colour_typed_prior_refuses_a_catalog_without_a_u_band_before_fitting():
    """The default prior needs rest-frame u - r: a catalog without u is refused when the fit is
    set up, with a message naming the bands and what to set instead."""
    cat = read_sdss_main(bands=("g", "r", "i", "z"))
    tiny = dict(steps=2, n_sim=256, batch_obs=256, n_val=256, flow_layers=2, flow_hidden=16, flow_bins=8)
    assert FitConfig().prior == "mzr+smf-colour"
    with pytest.raises(ValueError, match=r"no u or no r band.*prior = 'mzr\+smf-type'"):
        fitlib.prepare(cat, FitConfig(**tiny))
    assert fitlib.prepare(cat, FitConfig(**tiny, prior="mzr")).model.bands == cat.bands


def test_weigel16_mass_function_is_their_double_schechter_and_the_default():
    """Weigel+16's GSMF is the double Schechter of their abstract (shared M*, written out here
    independently), normalised on the box as a prior, with the faint-end log slope alpha1 + 1 per
    ln M far below M*, and a heavier massive end than Baldry+12 (its volume is ~50x GAMA's); it is
    the default mass function, and an unknown one is refused."""
    from popsed_jax.inference.config import ConfigError
    from popsed_jax.inference.prior import FORMED_TO_SURVIVING_DEX
    from popsed_jax.physics.relations import H_SHIFT_DEX, KROUPA_TO_CHABRIER_DEX, weigel16_log_smf

    lm = np.linspace(8.0, 12.0, 9)
    x = 10 ** (lm - (10.79 + KROUPA_TO_CHABRIER_DEX + H_SHIFT_DEX))
    phi = np.log(10) * np.exp(-x) * (10**-3.31 * x ** (1 - 1.69) + 10**-2.01 * x ** (1 - 0.79))
    got = weigel16_log_smf(lm)
    np.testing.assert_allclose(got - got[4], np.log(phi) - np.log(phi[4]), atol=1e-6)
    g = np.linspace(6.0, 7.0, 3)
    assert np.diff(weigel16_log_smf(g)) / np.diff(g * np.log(10)) == pytest.approx(1 - 1.69, abs=0.01)
    grid = np.linspace(7.5, 13.0, 20001)
    p = np.exp(np.asarray(smf_log_density(jnp.asarray(grid), 7.5, 13.0, "weigel16")))
    assert np.trapezoid(p, grid) == pytest.approx(1.0, abs=1e-4)
    pb = np.exp(np.asarray(smf_log_density(jnp.asarray(grid), 7.5, 13.0, "baldry12")))
    i, j = np.searchsorted(grid, [10.5 + FORMED_TO_SURVIVING_DEX, 11.5 + FORMED_TO_SURVIVING_DEX])
    assert p[j] / p[i] > 1.3 * pb[j] / pb[i]  # 1.44x at 10^11.5 against 10^10.5 Msun
    cfg = FitConfig()
    assert cfg.mass_function == "weigel16"
    with pytest.raises(ConfigError, match="mass_function"):
        FitConfig(mass_function="schechter")
    lo, hi = fitlib.box_bounds(cfg)
    th = np.tile([0.1, 12.0, 0.5, 0.5, 0.5, 5.0, 0.0, 0.0, 0.0, 0.3, 0.3], (2, 1))
    th[1, 1] = 10.8
    th = jnp.asarray(th, jnp.float32)
    w = np.asarray(log_prior_ratio(th, "mzr+smf", lo, hi, mass_function="weigel16"))
    b = np.asarray(log_prior_ratio(th, "mzr+smf", lo, hi, mass_function="baldry12"))
    assert w[0] - w[1] > b[0] - b[1] + 0.3  # a massive galaxy against one near M*: likelier under Weigel+16


@pytest.mark.parametrize("prior", ["mzr+smf-colour", "mzr+smf-type"])
def test_typed_mass_term_is_normalised_over_mass_at_any_colour(model, prior):
    """The type moves with the mass (Baldry+04's divider with M_r, the main sequence with M*), so
    the typed mass term is normalised over log M at each galaxy's other parameters: for galaxies
    from blue through the green valley to red, the integral over the box's log M of
    exp(prior - "mzr") / (hi - lo) is 1 (unnormalised it ranged down to exp(-0.9) in the green
    valley, a colour distribution the prior was not meant to set)."""
    lo, hi = fitlib.box_bounds(FitConfig())
    m = fitlib.PARAM_NAMES.index("logM")
    grid = np.linspace(lo[m], hi[m], 801)
    base = np.array([0.1, 10.5, 0.5, 0.5, 0.5, 5.0, 0.0, 0.0, 0.0, 0.3, 0.3])
    for k1, tau2 in ((0.001, 0.0), (0.3, 0.3), (0.6, 0.5), (0.9, 0.3), (1.0, 0.0)):  # young and blue .. old and red
        th = np.tile(base, (grid.size, 1))
        th[:, m], th[:, 2], th[:, 10] = grid, k1, tau2
        thj = jnp.asarray(th, jnp.float32)
        d = np.asarray(log_prior_ratio(thj, prior, lo, hi, model)) - np.asarray(log_prior_ratio(thj, "mzr", lo, hi))
        assert np.trapezoid(np.exp(d), grid) / (hi[m] - lo[m]) == pytest.approx(1.0, abs=5e-3), (k1, tau2)
