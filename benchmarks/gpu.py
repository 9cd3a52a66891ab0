"""The accelerator check in one command: forward model, training step vs members, Sinkhorn solvers.

    python benchmarks/gpu.py [--small] [--json bench_out/gpu.json]

On whatever backend JAX finds (an NVIDIA GPU via benchmarks/gpu.sh; the CPU with --small, to
prove the script works at small N). Measures, best of 3 after a warm-up:
- the forward model: galaxies/s, value and value+gradient, N = 1e4, 1e5, 1e6 (--small: 1e3, 1e4);
- a training step of the SDSS fit with K = 1, 4, 16 members x 2,048 and 10,000 samples per member
  (--small: K = 1, 4 x 512), and the K-member time over one member's;
- the Sinkhorn divergence value+gradient at N = 1e4 a side, epsilon 0.05: ott-jax's sinkdiv and
  this package's scaling solver (--small: N = 1,000);
- one whole population fit (`run_fit`, default configuration, 1200 steps) of a 1e5-galaxy
  Table-2 mock drawn there (`draw_mock`, seed 7; --small: 5,000 galaxies, 40 steps): the
  mock's and the fit's wall time and the fit's validation / floor.
Prints one summary line and writes JSON with the device's name.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import best_time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small sizes (a CPU proof that the script runs)")
    ap.add_argument("--json", default="bench_out/gpu.json")
    a = ap.parse_args(argv)

    import popsed_jax as pj
    from popsed_jax.inference import fit as fitlib
    from popsed_jax.inference import loss as L
    from popsed_jax.physics.forward import forward_fluxes
    from popsed_jax.survey.mock import sample_table2

    t_start = time.perf_counter()
    res = dict(backend=jax.default_backend(), device=str(jax.devices()[0]), n_devices=len(jax.devices()), small=a.small)
    model = pj.build_forward_model(z_max=0.6)
    fwd = {}
    for n in ((1_000, 10_000) if a.small else (10_000, 100_000, 1_000_000)):
        th = jnp.asarray(sample_table2(n, 0), jnp.float32)
        chunk = None if n <= 100_000 else 100_000
        f = jax.jit(lambda t: forward_fluxes(model, t, chunk_size=chunk))
        g = jax.jit(jax.grad(lambda t: jnp.log(forward_fluxes(model, t, chunk_size=chunk)).sum()))
        fwd[n] = dict(value_gal_per_s=n / best_time(f, th), grad_gal_per_s=n / best_time(g, th))
    res["forward"] = fwd

    base = fitlib.prepare(pj.load_catalog("sdss"), pj.FitConfig())
    steps = {}
    for n_sim in ((512,) if a.small else (2048, 10_000)):
        for k in ((1, 4) if a.small else (1, 4, 16)):
            cfg = dataclasses.replace(base.cfg, members=k, n_sim=n_sim, batch_obs=min(n_sim, 8000))
            prob = dataclasses.replace(base, cfg=cfg)
            state = fitlib.init(prob)._replace(step=cfg.steps - 1)
            step = fitlib.make_step(prob)
            steps[f"K{k}_n{n_sim}"] = best_time(lambda: step(state)[1]["loss"])
        ks = (1, 4) if a.small else (1, 4, 16)
        for k in ks[1:]:
            steps[f"ratio_K{k}_n{n_sim}"] = steps[f"K{k}_n{n_sim}"] / steps[f"K1_n{n_sim}"]
    res["step_s"] = steps

    n = 1_000 if a.small else 10_000
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, 5)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((n, 5)) + 0.3, jnp.float32)
    from ott.tools.sinkhorn_divergence import sinkdiv

    ott_fn = jax.jit(jax.grad(lambda xx: sinkdiv(xx, y, epsilon=0.05, solve_kwargs=dict(max_iterations=5000, threshold=1e-3))[0]))
    ours = jax.jit(jax.grad(lambda xx: L.sinkhorn_divergence(xx, y, 0.05)[0]))
    res["sinkhorn_s"] = dict(n=n, epsilon=0.05, ott=best_time(ott_fn, x), ours=best_time(ours, x))
    res["sinkhorn_s"]["ott_over_ours"] = res["sinkhorn_s"]["ott"] / res["sinkhorn_s"]["ours"]
    res["flow"] = whole_flow(a.small)
    res["seconds"] = time.perf_counter() - t_start
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(res, fh, indent=1)
    big = max(fwd)
    ks = sorted(k for k in steps if k.startswith("ratio"))
    print(f"gpu check [{res['device']}]: forward {fwd[big]['value_gal_per_s']:.3g} gal/s ({fwd[big]['grad_gal_per_s']:.3g} with "
          f"gradient) at N={big}; step " + ", ".join(f"{k[6:]} {steps[k]:.2f}x" for k in ks) + " one member; Sinkhorn "
          f"N={n}: ott {res['sinkhorn_s']['ott']:.3f} s, ours {res['sinkhorn_s']['ours']:.3f} s; a {res['flow']['n_galaxies']:.0e}-galaxy "
          f"mock in {res['flow']['mock_s']:.0f} s, its {res['flow']['steps']}-step flow in {res['flow']['fit_s']:.0f} s; total {res['seconds']:.0f} s -> {a.json}")
    return res


def whole_flow(small: bool) -> dict:
    """Draw a Table-2 mock (1e5 selected galaxies; small: 5,000) and fit it end to end."""
    import tempfile

    from popsed_jax.inference.config import FitConfig
    from popsed_jax.products.runs import run_fit
    from popsed_jax.survey.mock import draw_mock

    n, steps = (5_000, 40) if small else (100_000, FitConfig().steps)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        mock = draw_mock(n, seed=7)
        t_mock = time.perf_counter() - t0
        path = os.path.join(tmp, "mock.fits")
        mock.write(path)
        t0 = time.perf_counter()
        res = run_fit(path, FitConfig(steps=steps), out=os.path.join(tmp, "run"), n_samples=2000, progress=False)
        t_fit = time.perf_counter() - t0
    s = res["summary"]
    return dict(n_galaxies=n, steps=steps, mock_s=t_mock, fit_s=t_fit, train_s=s["seconds"],
                val_over_floor=s["val_over_floor"], mock_n_drawn=json.loads(mock.meta["PSMETA"]).get("n_drawn"))


if __name__ == "__main__":
    main()
