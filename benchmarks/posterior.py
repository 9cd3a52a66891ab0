"""Per-galaxy posteriors: galaxies per second for a whole catalog, and the share refined.

    python benchmarks/posterior.py [--run RUN] [--n-gal 10000] [--n-bank 200000] [--json bench_out/posterior.json]

RUN: a fitted run folder (default: a tiny SDSS fit made once into bench_out/posterior_run; the
bank and its cost do not depend on how well the run fitted). Times the bank (forward model of
n_bank draws), the batched importance weights for n_gal SDSS galaxies (resampled from the
shipped catalog), and, as the reference in the same process, the same weights computed galaxy
by galaxy (numpy broadcasting, 200 galaxies). Prints one line; writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--n-gal", type=int, default=10_000)
    ap.add_argument("--n-bank", type=int, default=200_000)
    ap.add_argument("--json", default="bench_out/posterior.json")
    a = ap.parse_args(argv)

    import popsed_jax as pj
    from popsed_jax.products.posterior import galaxy_posteriors, posterior_bank
    from popsed_jax.survey.catalog import catalog_subset
    from popsed_jax.survey.selection import select_catalog

    run = a.run
    if run is None:
        run = "bench_out/posterior_run"
        if not pj.RunFolder(run).exists("summary"):
            tiny = pj.FitConfig(steps=20, n_sim=512, batch_obs=512, n_val=256, val_every=20, checkpoint_every=20)
            pj.run_fit("sdss", tiny, run, n_samples=500, progress=False, overwrite=True)
    cat = select_catalog(pj.load_catalog("sdss"), "r<17.77")
    idx = np.random.default_rng(0).choice(cat.n, a.n_gal, replace=a.n_gal > cat.n)
    keep = np.zeros(cat.n, int)
    np.add.at(keep, idx, 1)
    cat = catalog_subset(cat, keep > 0) if a.n_gal <= cat.n else cat
    t0 = time.perf_counter()
    bank = posterior_bank(run, a.n_bank)
    t_bank = time.perf_counter() - t0
    t0 = time.perf_counter()
    t = galaxy_posteriors(cat, bank, progress=False)
    t_post = time.perf_counter() - t0
    # reference: the same chi^2 galaxy by galaxy
    sub = slice(0, min(200, cat.n))
    f, e, F = cat.flux[sub], cat.flux_err[sub], bank["flux"]
    t0 = time.perf_counter()
    for i in range(f.shape[0]):
        s2 = e[i] ** 2 + (0.03 * f[i]) ** 2
        chi2 = np.sum((f[i] - F) ** 2 / s2, 1)
        w = np.exp(-0.5 * (chi2 - chi2.min()))
        w.sum()
    t_ref = (time.perf_counter() - t0) / f.shape[0] * cat.n
    low = float(np.mean(np.asarray(t["ess"]) < 10))
    res = dict(n_gal=int(cat.n), n_bank=a.n_bank, bank_s=t_bank, posteriors_s=t_post, galaxies_per_s=cat.n / (t_bank + t_post),
               reference_loop_s=t_ref, speedup_vs_loop=t_ref / t_post, frac_ess_below_10=low,
               frac_flagged=float(np.mean(np.asarray(t["flag"], bool))))
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(res, fh, indent=1)
    print(f"posterior: {cat.n} galaxies x {a.n_bank} bank samples: bank {t_bank:.1f} s, weights and summaries {t_post:.1f} s "
          f"-> {res['galaxies_per_s']:.0f} galaxies/s ({res['speedup_vs_loop']:.1f}x a per-galaxy loop); "
          f"{low:.1%} would be refined (ESS < 10) -> {a.json}")
    return res


if __name__ == "__main__":
    main()
