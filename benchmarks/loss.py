"""Loss cost: popsed_jax.inference.loss value-and-gradient vs a plain ott sinkdiv call, vs N and epsilon.

    python benchmarks/loss.py [--n 1000 2000 4000] [--blur-schedule 0.3 0.1 0.03 0.01]
                              [--plain-max-n 4000] [--json bench_out/loss.json]

Features: 5-D correlated Gaussian mixture (4 components), standardized like the asinh-mag
features of the fit; "sim" is the same mixture shifted by 0.15 (raw units) in every
coordinate, "obs" the unshifted one, N points a side. For each N and epsilon of the schedule:

* ours: jitted value_and_grad of ``sinkhorn_divergence`` (defaults) with the data term
  OT(y, y) precomputed once by ``data_self_term`` (as a training loop would; its one-off
  time is reported as ``yy_s``);
* plain: jitted value_and_grad of ``ott.tools.sinkhorn_divergence.sinkdiv(x, y,
  epsilon=eps)`` with default settings (all three terms), for N <= --plain-max-n; at the
  largest such N only at the final epsilon, to keep the run short;
* reference: ``sinkhorn_divergence`` at threshold 1e-4 (value only), where plain runs; the
  relative differences of ours and plain to it are reported.

Each call is compiled ahead of time and timed once (best of --repeat for ours).
The default run takes ~8-10 minutes on 2 busy cores (mostly N = 4000); ``--n 1000 2000``
takes ~3. The
sliced W2 (128 projections) is timed at each N. One summary line, JSON with all rows.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def mixture(n, seed, shift=0.0, d=5):
    r0 = np.random.default_rng(1234)  # fixed mixture structure
    means = r0.normal(0, 1.2, (4, d))
    chol = []
    for _ in range(4):
        A = r0.normal(0, 1, (d, d))
        chol.append(np.linalg.cholesky(0.4 * (A @ A.T / d + 0.1 * np.eye(d))))
    rng = np.random.default_rng(seed)
    ks = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
    return means[ks] + np.einsum("nij,nj->ni", np.stack(chol)[ks], rng.normal(size=(n, d))) + shift


def features(n, seed=0):
    big = mixture(200_000, 999)
    mu, sd = big.mean(0), big.std(0)
    x = (mixture(n, seed + 1, shift=0.15) - mu) / sd
    y = (mixture(n, seed + 2) - mu) / sd
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def timed(fn, *args, repeat=1):
    comp = jax.jit(fn).lower(*args).compile()
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(comp(*args))
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    from ott.tools.sinkhorn_divergence import sinkdiv

    from popsed_jax.inference import loss as L

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--blur-schedule", type=float, nargs="+", default=list(L.DEFAULT_EPSILON_SCHEDULE))
    ap.add_argument("--plain-max-n", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", default="bench_out/loss.json")
    a = ap.parse_args(argv)
    sched = a.blur_schedule
    rows = []
    plain_ns = [n for n in a.n if n <= a.plain_max_n]
    for n in a.n:
        x, y = features(n)
        t_sw, _ = timed(jax.value_and_grad(lambda x, y, k: L.sliced_wasserstein(x, y, k, 128)), x, y,
                        jax.random.PRNGKey(0), repeat=a.repeat)
        for eps in sched:
            e = jnp.float32(eps)
            t_yy, yy = timed(lambda y, e: L.data_self_term(y, None, e), y, e)
            t_ours, ((v, info), _) = timed(jax.value_and_grad(
                lambda x, y, e, yy: L.sinkhorn_divergence(x, y, e, y_self_potential=yy), has_aux=True),
                x, y, e, yy.value, repeat=a.repeat)
            row = dict(n=n, epsilon=eps, ours_s=t_ours, ours_value=float(v), ours_converged=bool(info.converged),
                       ours_iterations=int(info.iterations), ours_iterations_xx=int(info.iterations_xx),
                       yy_s=t_yy, yy_iterations=int(yy.iterations), sliced_s=t_sw)
            run_plain = n in plain_ns and (n != max(plain_ns) or eps == sched[-1] or len(plain_ns) == 1)
            if run_plain:
                t_p, ((vp, out), _) = timed(jax.value_and_grad(
                    lambda x, y, e: sinkdiv(x, y, epsilon=e), has_aux=True), x, y, e)
                _, (vr, ir) = timed(lambda x, y, e: L.sinkhorn_divergence(
                    x, y, e, threshold=1e-4, max_iterations=6000), x, y, e)
                row.update(plain_s=t_p, plain_value=float(vp), plain_converged=[bool(c) for c in out.converged],
                           plain_iterations=[int(i) for i in out.n_iters], ref_value=float(vr),
                           ref_converged=bool(ir.converged), speedup=t_p / t_ours,
                           ours_rel_diff=float(v) / float(vr) - 1, plain_rel_diff=float(vp) / float(vr) - 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    final = [r for r in rows if r["epsilon"] == sched[-1] and "plain_s" in r]
    head = max(final, key=lambda r: r["n"]) if final else rows[-1]
    res = dict(schedule=sched, device=str(jax.devices()[0]), rows=rows)
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(res, fh, indent=1)
    if "plain_s" in head:
        print(f"loss N={head['n']} eps={head['epsilon']}: ours {head['ours_s']:.2f} s ({head['ours_iterations']} it, "
              f"converged {head['ours_converged']}, rel diff {head['ours_rel_diff']:+.1e}) vs plain ott sinkdiv "
              f"{head['plain_s']:.2f} s ({head['plain_iterations']} it, rel diff {head['plain_rel_diff']:+.1e}): "
              f"{head['speedup']:.1f}x; sliced W2 {head['sliced_s'] * 1e3:.0f} ms ({res['device']}) -> {a.json}")
    else:
        print(f"loss: {len(rows)} rows ({res['device']}) -> {a.json}")
    return res


if __name__ == "__main__":
    main()
