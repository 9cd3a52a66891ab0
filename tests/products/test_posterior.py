"""Per-galaxy posteriors with a population as prior: coverage, mass scaling, missing bands, refusals."""
from __future__ import annotations

import numpy as np
import pytest

from popsed_jax.physics.forward import build_forward_model, compute_fluxes
from popsed_jax.products.posterior import bank_from_theta, chunk_for_memory, galaxy_posteriors, photoz_metrics
from popsed_jax.survey.catalog import Catalog

BASE = np.array([0.1, 10.8, 0.4, 0.6, 0.3, 2.0, 0.1, -0.4, -0.5, 0.5, 0.4])


@pytest.fixture(scope="module")
def fwd():
    return build_forward_model(z_max=0.3)


def _observe(fwd, theta, rng, frac=0.03):
    f = compute_fluxes(fwd, theta)
    e = frac * f
    return Catalog(f + e * rng.standard_normal(f.shape), e, fwd.bands, z_spec=theta[:, 0])


def test_galaxies_from_a_narrow_population_are_covered(fwd):
    rng = np.random.default_rng(0)
    spread = np.zeros(11)
    spread[[0, 1, 7, 10]] = (0.02, 0.15, 0.1, 0.1)  # z, logM, logZ, tau2 vary; the rest fixed
    pop = BASE + spread * rng.standard_normal((40000, 11))
    truth = BASE + spread * rng.standard_normal((60, 11))
    t = galaxy_posteriors(_observe(fwd, truth, rng), bank_from_theta(fwd, pop, "test", 0.3), floor=0.0, progress=False)
    for q, j in (("z", 0), ("logZ", 7)):
        inside = (t[f"{q}_p16"] <= truth[:, j]) & (truth[:, j] <= t[f"{q}_p84"])
        assert 0.5 <= np.mean(inside) <= 0.9, (q, np.mean(inside))
    assert np.median(t["ess"]) > 50 and np.mean(t["flag"]) <= 0.05
    m = photoz_metrics(t)
    assert m["n"] == 60 and abs(m["bias"]) < 0.01
    # the spec-z slices partition the galaxies and reproduce the whole's outliers
    assert sum(sl["n"] for sl in m["slices"]) == 60
    assert sum(sl["n"] * sl["outlier_fraction"] for sl in m["slices"] if sl["n"]) == pytest.approx(60 * m["outlier_fraction"])


def test_ten_times_brighter_is_one_dex_more_massive_and_nan_bands_are_ignored(fwd):
    rng = np.random.default_rng(1)
    pop = np.tile(BASE, (20000, 1))
    pop[:, 1] = rng.uniform(9.0, 12.5, pop.shape[0])  # only the mass is unknown
    bank = bank_from_theta(fwd, pop, "test", 0.3)
    f = compute_fluxes(fwd, BASE[None])
    cat = Catalog(np.concatenate([f, 10 * f, f]), np.concatenate([0.02 * f, 0.2 * f, 0.02 * f]), fwd.bands)
    cat.flux[2, 0] = np.nan  # galaxy 2 lacks u (not allowed by Catalog itself: set after construction)
    t = galaxy_posteriors(cat, bank, floor=0.0, progress=False)
    dm = t["logM_surviving_median"][1] - t["logM_surviving_median"][0]
    assert dm == pytest.approx(1.0, abs=0.03)
    assert list(t["n_bands_used"]) == [5, 5, 4]
    assert t["logM_surviving_median"][2] == pytest.approx(t["logM_surviving_median"][0], abs=0.03)
    assert np.isfinite(t["chi2_best"][2])


def test_a_catalog_with_other_bands_is_refused_naming_them(fwd):
    bank = bank_from_theta(fwd, BASE[None], "test", 0.3)
    other = Catalog(np.ones((2, 2)), np.ones((2, 2)), ("sdss2001-g", "sdss2001-r"))
    with pytest.raises(ValueError, match=r"\['sdss2001-g', 'sdss2001-r'\] differ from the run's \['sdss2001-u'"):
        galaxy_posteriors(other, bank, progress=False)


def test_large_banks_go_in_smaller_chunks_with_the_same_answer(fwd):
    """The (galaxies x bank) arrays are cut to a memory budget: a 600,000-draw bank refined 4x
    (3 million) gets ~14 galaxies a chunk for 2 GiB, not 256 (24 GB, killed by the OOM killer
    on this 24 GiB machine); the chunking does not change any galaxy's posterior."""
    assert chunk_for_memory(200_000, 256, 2.0) == 223
    assert chunk_for_memory(3_000_000, 256, 2.0) == 14
    assert chunk_for_memory(10**12, 256, 2.0) == 1 and chunk_for_memory(10, 256, 2.0) == 256
    rng = np.random.default_rng(2)
    pop = BASE + np.r_[0.02, 0.2, np.zeros(5), 0.1, 0, 0, 0.1] * rng.standard_normal((5000, 11))
    bank = bank_from_theta(fwd, pop, "test", 0.3)
    cat = _observe(fwd, pop[:7], rng)
    whole = galaxy_posteriors(cat, bank, floor=0.03, progress=False)
    cut = galaxy_posteriors(cat, bank, floor=0.03, progress=False, mem_gb=3 * 6 * 8 * 5000 / 2**30)  # 3 a chunk
    for c in whole.colnames:
        np.testing.assert_allclose(np.asarray(cut[c], float), np.asarray(whole[c], float), rtol=1e-9, err_msg=c)  # BLAS order


def test_broad_posteriors_are_flagged_and_galaxies_without_spec_z_get_no_pit(fwd):
    """Quantiles come from the 2,000 heaviest bank draws: a galaxy whose photometry hardly
    constrains it (errors 100x its flux, ESS in the thousands) keeps much less than 95% of its
    weight there and is flagged; a well-measured one is not. The bank's fluxes and derived
    quantities are computed in chunks of draws: the same as in one piece. A galaxy without a spec-z gets a
    NaN PIT, not 0."""
    rng = np.random.default_rng(4)
    pop = BASE + np.r_[0.02, 0.2, np.zeros(5), 0.1, 0, 0, 0.1] * rng.standard_normal((20000, 11))
    bank = bank_from_theta(fwd, pop, "test", 0.3)
    f = compute_fluxes(fwd, pop[:2])
    z_spec = np.array([pop[0, 0], np.nan])
    cat = Catalog(f, np.stack([0.03 * f[0], 100.0 * f[1]]), fwd.bands, z_spec=z_spec)
    t = galaxy_posteriors(cat, bank, floor=0.0, progress=False)
    assert t["captured"][0] > 0.99 and not t["flag"][0]
    assert t["ess"][1] > 5000 and t["captured"][1] < 0.5 and t["flag"][1]
    assert np.isfinite(t["pit"][0]) and np.isnan(t["pit"][1])
    small = bank_from_theta(fwd, pop[:3000], "test", 0.3, chunk=1024)  # 3 chunks, the last one short
    whole = bank_from_theta(fwd, pop[:3000], "test", 0.3, chunk=4096)
    np.testing.assert_allclose(small["flux"], whole["flux"], rtol=1e-5)
    for q in ("age_mw", "logM_surviving", "log_sfr_100myr"):
        np.testing.assert_allclose(small[q], whole[q], rtol=1e-5, atol=1e-6, err_msg=q)


def test_a_bank_s_log_prior_weighs_its_draws(fwd):
    """Draws with log_prior = -60 (a galaxy that would not have been selected) carry no weight:
    the posterior is that of the other draws alone; a constant log_prior changes nothing."""
    rng = np.random.default_rng(4)
    th = np.tile(BASE, (4000, 1))
    th[:, 0] = rng.uniform(0.02, 0.25, 4000)
    th[:, 1] = rng.uniform(10.0, 11.5, 4000)
    bank = bank_from_theta(fwd, th, "population", 0.3)
    near = th[:, 0] < 0.12
    cat = _observe(fwd, th[near][:20], rng)  # galaxies the near draws can fit
    only = {k: (v[near] if isinstance(v, np.ndarray) and v.shape[:1] == (4000,) else v) for k, v in bank.items()}
    cut = dict(bank, log_prior=np.where(near, 0.0, -60.0))
    a = galaxy_posteriors(cat, cut, progress=False)
    b = galaxy_posteriors(cat, only, progress=False)
    np.testing.assert_allclose(np.asarray(a["z_median"]), np.asarray(b["z_median"]), rtol=1e-6)
    assert np.all(np.asarray(a["z_p84"]) <= 0.12 + 1e-9)
    c = galaxy_posteriors(cat, dict(bank, log_prior=np.full(4000, -3.0)), progress=False)
    np.testing.assert_allclose(np.asarray(c["z_median"]), np.asarray(galaxy_posteriors(cat, bank, progress=False)["z_median"]))


def test_the_map_is_the_draw_of_highest_posterior_density(fwd):
    """With the prior's density in the bank, a galaxy without usable bands has its MAP at the
    prior's mode (the likelihood is flat); a well-measured one near its truth."""
    rng = np.random.default_rng(2)
    pop = np.tile(BASE, (20000, 1))
    pop[:, 1] = 10.5 + 0.3 * rng.standard_normal(pop.shape[0])  # the mass ~ N(10.5, 0.3), the rest fixed
    bank = bank_from_theta(fwd, pop, "test", 0.3)
    bank["log_q"] = -0.5 * ((pop[:, 1] - 10.5) / 0.3) ** 2
    truth = BASE.copy()
    truth[1] = 11.0
    f = compute_fluxes(fwd, np.stack([BASE, truth]))
    cat = Catalog(f, 0.01 * f, fwd.bands)
    cat.flux[0] = np.nan  # galaxy 0: no band usable (set after construction, which would refuse it)
    t = galaxy_posteriors(cat, bank, floor=0.0, progress=False)
    assert t.meta["MAPDEF"] == "posterior density"
    lm_surv = bank["logM_surviving"]
    assert t["logM_surviving_map"][0] == pytest.approx(lm_surv[np.argmin(np.abs(pop[:, 1] - 10.5))])
    near = lm_surv[np.argmin(np.abs(pop[:, 1] - 11.0))]
    assert t["logM_surviving_map"][1] == pytest.approx(near, abs=0.02)
