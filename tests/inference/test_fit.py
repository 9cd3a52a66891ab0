"""The pure fit: preparation refusals, schedules, configuration, the KL term."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from popsed_jax.inference import fit as fitlib
from popsed_jax.inference.config import FitConfig
from popsed_jax.survey.catalog import catalog_subset, read_sdss_main

TINY = dict(steps=12, n_sim=256, batch_obs=256, n_val=256, val_every=4, checkpoint_every=4, flow_layers=2, flow_hidden=16, flow_bins=8)


@pytest.fixture(scope="module")
def sdss():
    return read_sdss_main()


def test_too_few_galaxies_is_refused(sdss):
    small = catalog_subset(sdss, np.arange(sdss.n) < 250)
    with pytest.raises(ValueError, match="minibatch needs 256"):
        fitlib.prepare(small, FitConfig(**TINY))
    with pytest.raises(ValueError, match="n_projections must be >= 1, got 0"):
        fitlib.prepare(sdss, FitConfig(**dict(TINY, n_projections=0)))


def test_schedules():
    cfg = FitConfig(steps=1000)
    eps = [fitlib.epsilon_at(cfg, i) for i in range(0, 1000, 50)]
    assert eps[0] == pytest.approx(cfg.blur[0][1]) and np.all(np.diff(eps) <= 0)
    assert fitlib.epsilon_at(cfg, 999) == pytest.approx(cfg.blur[-1][1])
    ns = [fitlib.noise_scale_at(cfg, i) for i in range(0, 1000, 50)]
    assert ns[0] == pytest.approx(1 / 21) and np.all(np.diff(ns) > 0) and fitlib.noise_scale_at(cfg, 999) > 0.99


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="stepz"):
        FitConfig.from_dict({"stepz": 3})


def test_kl_term_adds_weighted_kl_of_the_same_samples(sdss):
    """loss(kl_weight=w) - loss(kl_weight=0) = w * mean log(q / p_ref) of the step's own flow samples;
    the term is zero for the starting flow and positive once it moved away."""
    import dataclasses

    import jax.numpy as jnp

    from popsed_jax.inference import flows

    cfg0 = FitConfig(**TINY, kl_weight=0.0, prior="flat")  # the reference KL alone (the mzr prior adds its own term)
    ctx0 = fitlib.prepare(sdss, cfg0)
    ctx1 = dataclasses.replace(ctx0, cfg=dataclasses.replace(cfg0, kl_weight=0.25))
    st = ctx0.statics
    params = jax.tree.map(lambda x: x[0], fitlib.init(ctx0).params)
    rng = np.random.default_rng(0)
    moved = jax.tree.map(lambda x: x + 0.05 * jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
    key = jax.random.PRNGKey(3)
    obs = jnp.asarray(ctx0.obs_train)
    for p, expect_zero in ((params, True), (moved, False)):
        one = jax.tree.map(lambda x: x[None], p)  # a 1-member ensemble
        v0 = fitlib._members_loss(ctx0, st, one, key[None], obs, 0.1, 1.0)[0][0]
        v1 = fitlib._members_loss(ctx1, st, one, key[None], obs, 0.1, 1.0)[0][0]
        k_sim = jax.random.split(key, 3)[0]
        k_flow = jax.random.split(k_sim)[0]
        _, ratio = flows.sample_and_log_ratio(p, k_flow, cfg0.n_sim, ctx0.flow_cfg)
        kl = float(jnp.mean(ratio))
        assert float(v1 - v0) == pytest.approx(0.25 * kl, rel=1e-4, abs=1e-6)
        assert (abs(kl) < 1e-4) if expect_zero else (kl > 1e-3)
    assert ctx0.flow_cfg.z_volume  # the default reference is uniform in comoving volume


def test_selected_fraction_floor_adds_its_squared_log_deficit(sdss):
    """The floor term is (log floor - log mean P(sel))^2 of the step's own draws when the
    population's selectable share is below it, and nothing above it."""
    import dataclasses

    assert FitConfig().min_selected_fraction == 0.05  # the default since 2026-12-07
    cfg = FitConfig(**TINY, min_selected_fraction=0.0)
    pb = fitlib.prepare(sdss, cfg)
    state = fitlib.init(pb)
    keys = fitlib.member_keys(state.key, 1, 0)
    obs = pb.obs_train
    base = fitlib._members_loss(pb, pb.statics, state.params, keys, obs, 0.1, 1.0)[0][0]
    k_sim = jax.vmap(lambda kk: jax.random.split(kk, 3))(keys)[:, 0]
    _, _, w, noisy, _, log_psel = fitlib.simulate_members(pb, pb.statics, state.params, k_sim, cfg.n_sim, 1.0)
    from popsed_jax.survey.observation import selection_weights
    p_mean = float(np.mean(np.asarray(selection_weights(pb.observation, noisy[0]))))
    assert float(log_psel[0]) == pytest.approx(np.log(p_mean), rel=1e-4)
    assert 0.01 < p_mean < 0.5  # the starting population: a share of its draws is selectable
    for floor, expect in ((0.9, (np.log(0.9) - np.log(p_mean)) ** 2), (0.005, 0.0)):
        pf = dataclasses.replace(pb, cfg=dataclasses.replace(cfg, min_selected_fraction=floor))
        v = fitlib._members_loss(pf, pf.statics, state.params, keys, obs, 0.1, 1.0)[0][0]
        assert float(v - base) == pytest.approx(expect, rel=1e-3, abs=1e-6)
