"""Forward-model speed: batched model vs the naive DSPS path, same grid and filters.

    python benchmarks/forward.py [--n 1000 10000 100000] [--naive-n 256] [--json OUT]

Times (best of --repeat) the jitted batched forward model, value and value-and-gradient
(of sum log flux w.r.t. theta), at each N; the naive path (jit(vmap) of DSPS's
calc_rest_sed_sfh_table_met_table + dust + calc_obs_mag per galaxy, ``popsed_jax.testing.reference``)
on the default BC03 grid (R=1000, 220 ages, 900 A - 5 um) with the same SDSS filters, in
the same process and precision (float32); and a dense float32 matmul of the model's own
shape as this machine's reference rate. Prints one summary line, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import resource

import jax
import jax.numpy as jnp
import numpy as np
from _timing import best_time




def draw_theta(n, seed=0):
    from popsed_jax.physics.forward import PARAM_BOUNDS, PARAM_NAMES

    rng = np.random.default_rng(seed)
    lo = np.array([PARAM_BOUNDS[k][0] for k in PARAM_NAMES])
    hi = np.array([PARAM_BOUNDS[k][1] for k in PARAM_NAMES])
    lo[0] = 0.01
    return jnp.asarray(lo + (hi - lo) * rng.random((n, len(PARAM_NAMES))), jnp.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--naive-n", type=int, default=64, help="galaxies for the naive DSPS timing")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=16384, help="chunk size above which the model maps over chunks")
    ap.add_argument("--json", default="bench_out/forward.json")
    a = ap.parse_args(argv)

    from popsed_jax.physics import photometry, sfh, ssp
    from popsed_jax.testing import reference
    from popsed_jax.physics.forward import build_forward_model, forward_fluxes

    grid = ssp.load_ssp_grid()
    bases = sfh.load_sfh_bases()
    model = build_forward_model(grid=grid, bases=bases)
    curves = photometry.load_filter_curves(photometry.DEFAULT_FILTERS)

    fwd = jax.jit(forward_fluxes, static_argnames="chunk_size")

    def loss(m, t, chunk_size=None):
        return jnp.sum(jnp.log(forward_fluxes(m, t, chunk_size)))

    vg = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnames="chunk_size")

    # machine reference: a float32 matmul of the model's shape
    k, n_w = model.ssp_all.shape
    xa = jnp.ones((8192, k), jnp.float32)
    mm = jax.jit(lambda x, y: x @ y)
    t_mm = best_time(mm, xa, model.ssp_all, repeat=a.repeat)
    matmul_gflops = 2 * 8192 * k * n_w / t_mm / 1e9

    rows = []
    for n in a.n:
        th = draw_theta(n)
        chunk = a.chunk if n > a.chunk else None
        t_v = best_time(lambda t: fwd(model, t, chunk_size=chunk), th, repeat=a.repeat)
        t_g = best_time(lambda t: vg(model, t, chunk_size=chunk), th, repeat=a.repeat)
        flops = model.flops_per_galaxy() * n
        rows.append(dict(
            n=n, galaxies_per_s=n / t_v, galaxies_per_s_grad=n / t_g, seconds=t_v, seconds_grad=t_g,
            gflops=flops / t_v / 1e9, fraction_of_matmul_rate=flops / t_v / 1e9 / matmul_gflops,
            peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        ))
    # naive DSPS path, last: its vmap materialises (N, n_met, n_age, n_wave) and would
    # dominate the peak memory reported for the model
    th_naive = draw_theta(a.naive_n, seed=1)
    naive = jax.jit(jax.vmap(reference.make_reference(grid, bases, curves)))
    t_naive = best_time(naive, th_naive, repeat=1)
    naive_rate = a.naive_n / t_naive
    for r in rows:
        r["speedup"] = r["galaxies_per_s"] / naive_rate
        r["speedup_grad"] = r["galaxies_per_s_grad"] / naive_rate
    out = dict(
        device=str(jax.devices()[0]), backend=jax.default_backend(), dtype="float32",
        grid_shape=list(grid.flux.shape), model_ssp_matrix=[int(k), int(n_w)], young_matrix=list(model.ssp_young.shape),
        n_obs=int(model.filt.shape[0]), bands=list(model.bands), flops_per_galaxy=model.flops_per_galaxy(),
        naive_dsps_galaxies_per_s=naive_rate, naive_n=a.naive_n, matmul_gflops=matmul_gflops, results=rows,
    )
    # flat keys for the headline N (1e4 if measured, else the largest)
    head = next((r for r in rows if r["n"] == 10000), rows[-1])
    out.update({key: head[key] for key in ("n", "galaxies_per_s", "galaxies_per_s_grad", "speedup", "gflops", "fraction_of_matmul_rate")})
    out["peak_rss_gb"] = max(r["peak_rss_gb"] for r in rows)  # the model's, measured before the naive path
    import os

    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(out, fh, indent=2)
    per_n = "; ".join(f"N={r['n']}: {r['galaxies_per_s']:.3g}/s ({r['galaxies_per_s_grad']:.3g}/s with grad)" for r in rows)
    print(
        f"forward model [{out['backend']}]: {per_n}; naive DSPS {naive_rate:.3g}/s -> speedup {head['speedup']:.0f}x at N={head['n']} "
        f"({head['gflops']:.0f} GFLOP/s = {100 * head['fraction_of_matmul_rate']:.0f}% of a {matmul_gflops:.0f} GFLOP/s matmul); "
        f"peak RSS {out['peak_rss_gb']:.1f} GB -> {a.json}"
    )
    return out


if __name__ == "__main__":
    main()
