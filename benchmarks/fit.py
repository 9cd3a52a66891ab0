"""Training-step cost: its parts, the ensemble scaling, steps per second.

    python benchmarks/fit.py [--catalog sdss] [--n-sim 2048] [--members 4] [--n-projections P]
                             [--shard] [--prior P] [--json bench_out/fit.json]

Times (best of --repeat, jitted, value and gradient where the step takes one) the parts of
a training step at the default configuration: flow sampling, forward model, noise +
selection + features, the loss at the final blur; each of sampling, forward model and loss
vmapped over K copies, against one; then one whole step with K = 1 and with K = --members
members vmapped (goal: K members cost well under K times one), or with --shard split over
the devices (on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=D). Prints one
summary line, writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
from _timing import best_time




def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", default="sdss")
    ap.add_argument("--n-sim", type=int, default=None)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default="bench_out/fit.json")
    ap.add_argument("--shard", action="store_true",
                    help="shard the K members over the devices (e.g. XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    ap.add_argument("--n-projections", type=int, default=None, help="sliced-loss directions (default: FitConfig's)")
    ap.add_argument("--prior", default=None, help="also time one step under this population prior (e.g. mzr+smf-colour), "
                    "as a ratio to the default prior's step")
    a = ap.parse_args(argv)

    from popsed_jax.inference import fit as fitlib
    from popsed_jax.inference import flows
    from popsed_jax.inference.config import FitConfig
    from popsed_jax.physics import forward
    from popsed_jax.survey import observation as O
    from popsed_jax.survey.catalog import load_catalog

    cfg = FitConfig()
    if a.n_projections:
        cfg = dataclasses.replace(cfg, n_projections=a.n_projections)
    if a.n_sim:
        cfg = dataclasses.replace(cfg, n_sim=a.n_sim, batch_obs=a.n_sim)
    ctx = fitlib.prepare(load_catalog(a.catalog), cfg)
    st = ctx.statics
    model, obs = st[:2]
    key = jax.random.PRNGKey(0)
    params = flows.init_flow(key, ctx.flow_cfg)
    n = cfg.n_sim
    eps = fitlib.epsilon_at(cfg, cfg.steps - 1)

    t_sample = best_time(jax.jit(jax.grad(lambda p: flows.sample_flow(p, key, n, ctx.flow_cfg).sum())), params, repeat=a.repeat)
    theta = flows.sample_flow(params, key, n, ctx.flow_cfg)
    t_fwd = best_time(jax.jit(jax.grad(lambda t, m: jnp.log(forward.forward_fluxes(m, t)).sum())), theta, model, repeat=a.repeat)
    flux = forward.forward_fluxes(model, theta)

    def nsf(f, ob):
        noisy, _ = O.noisy_fluxes(ob, f, key)
        return (O.features(ob, noisy).sum(1) * O.selection_weights(ob, noisy)).sum()

    t_noise = best_time(jax.jit(jax.grad(nsf)), flux, obs, repeat=a.repeat)
    one = jax.tree_util.tree_map(lambda v: v[None], params)
    _, x, w, _, _, _ = fitlib.simulate_members(ctx, st, one, key[None], n)
    x, w = x[0], w[0]
    y = ctx.obs_train[:cfg.batch_obs]
    t_loss = best_time(jax.jit(jax.grad(lambda xx, yy, ww: ctx.loss_fn(xx, yy, eps, key, a=ww)[0], argnums=(0, 2))), x, y, w, repeat=a.repeat)

    # each part vmapped over K stacked copies of its inputs: which parts K members share
    K = a.members

    def stack(t):
        return jax.tree_util.tree_map(lambda v: jnp.stack([v] * K), t)

    f_sample = lambda p: flows.sample_flow(p, key, n, ctx.flow_cfg).sum()
    f_fwd = lambda t: jnp.log(forward.forward_fluxes(model, t)).sum()
    f_loss = lambda xx, yy, ww: ctx.loss_fn(xx, yy, eps, key, a=ww)[0]
    part_k = dict(
        sample_grad=best_time(jax.jit(jax.vmap(jax.grad(f_sample))), stack(params), repeat=a.repeat) / t_sample,
        forward_grad=best_time(jax.jit(jax.vmap(jax.grad(f_fwd))), stack(theta), repeat=a.repeat) / t_fwd,
        loss_grad=best_time(jax.jit(jax.vmap(jax.grad(f_loss, argnums=(0, 2)))), stack(x), stack(y), stack(w), repeat=a.repeat) / t_loss,
    )

    mesh = fitlib.ensemble_mesh(a.members) if a.shard else None
    out_steps = {}
    for k in (1, a.members):
        ctx_k = dataclasses.replace(ctx, cfg=dataclasses.replace(cfg, members=k))
        state = fitlib.init(ctx_k)
        if mesh is not None and k == a.members:
            from jax.sharding import NamedSharding, PartitionSpec as P

            params, opt_state = jax.device_put((state.params, state.opt_state), NamedSharding(mesh, P("ens")))
            state = state._replace(params=params, opt_state=opt_state)
        # the last step of the schedule (final blur, full noise): the step function is pure, so the
        # same state can be stepped repeatedly
        state = state._replace(step=cfg.steps - 1)
        step = fitlib.make_step(ctx_k, mesh=mesh if k == a.members else None)
        out_steps[k] = best_time(lambda: step(state)[1]["loss"], repeat=a.repeat)
    prior_ratio = None
    if a.prior:
        ctx_p = fitlib.prepare(load_catalog(a.catalog), dataclasses.replace(cfg, prior=a.prior))
        state = fitlib.init(ctx_p)._replace(step=cfg.steps - 1)
        step = fitlib.make_step(ctx_p)
        prior_ratio = best_time(lambda: step(state)[1]["loss"], repeat=a.repeat) / out_steps[1]
    res = dict(
        backend=jax.default_backend(), prior=cfg.prior, other_prior=a.prior, other_prior_step_ratio=prior_ratio, n_sim=n, batch_obs=cfg.batch_obs, epsilon=eps,
        seconds=dict(sample_grad=t_sample, forward_grad=t_fwd, noise_selection_features_grad=t_noise, loss_grad=t_loss,
                     step_1_member=out_steps[1], step_k_members=out_steps[a.members]),
        members=a.members, ensemble_time_ratio=out_steps[a.members] / out_steps[1],
        part_time_ratio_k_members=part_k, devices=len(jax.devices()), sharded=mesh is not None,
        n_projections=cfg.n_projections if fitlib.training_loss(cfg)["kind"] == "sliced" else None,
        loss=fitlib.training_loss(cfg),
        steps_per_s=1.0 / out_steps[1], loss_over_forward=t_loss / t_fwd,
    )
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(res, fh, indent=2)
    s = res["seconds"]
    print(
        f"fit step [{res['backend']}] n_sim={n} vs {cfg.batch_obs} obs at eps={eps:.3g}: sample {s['sample_grad']:.3f} s, forward {s['forward_grad']:.3f} s, "
        f"noise+features {s['noise_selection_features_grad']:.3f} s, loss {s['loss_grad']:.3f} s; whole step {s['step_1_member']:.3f} s "
        f"({res['steps_per_s']:.2f} steps/s); {a.members} members {'sharded over ' + str(res['devices']) + ' devices' if res['sharded'] else 'vmapped'} {s['step_k_members']:.3f} s = {res['ensemble_time_ratio']:.2f}x one "
        f"(parts: sample {part_k['sample_grad']:.2f}x, forward {part_k['forward_grad']:.2f}x, loss {part_k['loss_grad']:.2f}x)"
        + (f"; prior {a.prior!r} step {prior_ratio:.2f}x the {cfg.prior!r} one" if a.prior else "") + f" -> {a.json}"
    )
    return res


if __name__ == "__main__":
    main()
