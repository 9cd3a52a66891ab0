"""Drawing the flow where the survey can see (``oversample``): the screen never drops a draw that
could carry selection weight, the stratified KL estimate is unbiased, and a fit step uses more
selected draws for the same n_sim."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popsed_jax.inference import fit as fitlib
from popsed_jax.inference.config import FitConfig
from popsed_jax.inference.visible_draws import INVISIBLE_SHARE, screen_visible, stratified_pick
from popsed_jax.survey.catalog import read_sdss_main
from popsed_jax.survey.observation import noisy_fluxes, selection_log_weights

TINY = dict(steps=12, n_sim=256, batch_obs=256, n_val=256, val_every=4, checkpoint_every=4, flow_layers=2, flow_hidden=16,
            flow_bins=8)


@pytest.fixture(scope="module")
def problem():
    return fitlib.prepare(read_sdss_main(), FitConfig(**TINY, oversample=4))


@pytest.mark.parametrize("p_visible", [0.02, 0.3, 1.0])
def test_stratified_pick_takes_distinct_draws_and_weights_each_stratum_by_its_share(p_visible):
    m, n = 4096, 512
    visible = jnp.asarray(np.random.default_rng(1).random(m) < p_visible)
    idx, w = stratified_pick(visible, n)
    idx, w, vis = np.asarray(idx), np.asarray(w), np.asarray(visible)
    assert len(set(idx.tolist())) == n and w.sum() == pytest.approx(1.0, rel=1e-5)
    chosen = vis[idx]
    n_vis = vis.sum()
    assert chosen.sum() == min(n_vis, n - n // INVISIBLE_SHARE) + max(0, n // INVISIBLE_SHARE - (m - n_vis))
    if chosen.any():  # each stratum's weight total is its share of the m draws
        assert w[chosen].sum() == pytest.approx(n_vis / m, rel=1e-5)
    if (~chosen).any():
        assert w[~chosen].sum() == pytest.approx(1 - n_vis / m, rel=1e-5)


def test_stratified_estimate_is_unbiased():
    """E[sum_j w_j g(x_j)] over the draws equals E[g] although visible draws are over-represented."""
    m, n, reps = 2048, 256, 400
    keys = jax.random.split(jax.random.PRNGKey(0), reps)

    def one(k):
        x = jax.random.normal(k, (m,))
        visible = x > 1.5  # 6.7% "visible", g differs strongly between the strata
        idx, w = stratified_pick(visible, n)
        return jnp.sum(w * jnp.exp(x[idx])), jnp.mean(jnp.exp(x[:n]))

    strat, plain = (np.asarray(a) for a in jax.vmap(one)(keys))
    truth = np.exp(0.5)  # E[exp(x)], x ~ N(0, 1)
    assert abs(strat.mean() - truth) < 4 * strat.std() / np.sqrt(reps)
    assert strat.std() < plain.std()  # and it is not worse than n plain draws here


def test_screen_drops_no_draw_that_could_be_selected(problem):
    """Over 40,000 draws of the starting distribution, noised at the full noise: every draw the
    screen rejects has a soft selection weight below 1e-6, and the screen keeps far fewer draws
    than all (that is its use)."""
    theta = jnp.asarray(fitlib.draw_reference(problem.cfg, 40_000, seed=3), jnp.float32)
    keep = np.asarray(jax.jit(screen_visible)(problem.model, problem.screen, theta))
    from popsed_jax.physics import forward

    flux = jax.jit(lambda t: forward.forward_fluxes(problem.model, t, chunk_size=8192))(theta)
    noisy, _ = noisy_fluxes(problem.observation, flux, jax.random.PRNGKey(4))
    logw = np.asarray(selection_log_weights(problem.observation, noisy))
    assert (~keep).sum() > 0.5 * keep.size
    assert logw[~keep].max() < np.log(1e-6)
    assert (logw > np.log(0.5))[keep].sum() > 50  # the kept ones include the selected ones


@pytest.mark.slow  # 70 s on 2 cores; oversample is an option, not the default
def test_oversampled_step_carries_more_selected_draws(problem):
    plain = dataclasses.replace(problem, cfg=dataclasses.replace(problem.cfg, oversample=1), screen=None)
    state = fitlib.init(problem)
    keys = fitlib.member_keys(state.key, 1, 0)
    ess = {}
    for name, pb in (("plain", plain), ("screened", problem)):
        _, feats, w, _, kl, _ = fitlib.simulate_members(pb, pb.statics, state.params, keys, pb.cfg.n_sim)
        assert np.isfinite(np.asarray(feats)).all() and np.isfinite(float(kl[0]))
        ess[name] = 1.0 / float(jnp.sum(w[0] ** 2))
    assert ess["screened"] > 1.5 * ess["plain"]
    step = fitlib.make_step(problem)
    state, m = step(state)
    assert np.isfinite(m["loss"]).all() and m["ess"][0] > 1.5 * ess["plain"]
