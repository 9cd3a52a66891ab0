"""Are the per-galaxy posteriors calibrated? Coverage of their 68% intervals on a mock with known truth.

    python scripts/posterior_calibration.py RUN MOCK.fits [--floor 0.0] [--n-bank 200000] [--json out.json]

RUN is a fit of the mock MOCK.fits (a `popsed-jax mock` file, which keeps the true parameters).
For the population prior and for the plain prior (the flow's starting distribution), each
galaxy's posterior (products.posterior) gives z and logM_surviving p16/p50/p84; the script
prints the fraction of galaxies whose truth lies inside [p16, p84] (calibrated: 0.63-0.73,
issue 13), the median interval width, and the median |median - truth|. The error floor defaults
to 0: a mock is made with the model itself, so there is no model error to allow for.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from astropy.table import Table

from popsed_jax.products.posterior import posterior_catalog
from popsed_jax.survey.catalog import load_catalog

QUANTITIES = ("z", "logM_surviving")


def _inside(post, truth, q):
    row = {int(i): k for k, i in enumerate(np.asarray(truth["id"]))}
    x = np.asarray(truth[q], float)[[row[int(i)] for i in np.asarray(post["id"])]]
    return (x >= np.asarray(post[f"{q}_p16"], float)) & (x <= np.asarray(post[f"{q}_p84"], float))


def calibration(post, truth) -> dict:
    """Coverage, width and error of the 68% intervals of a posterior table against truth
    (a table with the same ids and true columns)."""
    row = {int(i): k for k, i in enumerate(np.asarray(truth["id"]))}
    idx = np.array([row[int(i)] for i in np.asarray(post["id"])])
    out = {}
    for q in QUANTITIES:
        x = np.asarray(truth[q], float)[idx]
        lo, med, hi = (np.asarray(post[f"{q}_{s}"], float) for s in ("p16", "median", "p84"))
        out[q] = dict(coverage68=float(np.mean((x >= lo) & (x <= hi))), median_width=float(np.median(hi - lo)),
                      median_abs_error=float(np.median(np.abs(med - x))), bias=float(np.median(med - x)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("mock")
    p.add_argument("--floor", type=float, default=0.0)
    p.add_argument("--n-bank", type=int, default=200_000)
    p.add_argument("--priors", default="population,plain", help="comma-separated: population, plain")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    truth = Table.read(a.mock)
    cat = load_catalog(a.mock)
    res = {"run": a.run, "mock": a.mock, "floor": a.floor, "n_bank": a.n_bank, "n": int(cat.n)}
    for prior in a.priors.split(","):
        t, _ = posterior_catalog(a.run, cat, out=f"{a.run}/galaxies_calib_{prior}_floor{a.floor:g}.fits", prior=prior,
                                 n_bank=a.n_bank, floor=a.floor)
        res[prior] = {**calibration(t, truth), "frac_flagged": float(np.mean(np.asarray(t["flag"], bool))),
                      "frac_refined": float(np.mean(np.asarray(t["refined"], bool))),
                      "median_ess": float(np.median(np.asarray(t["ess"]))),
                      "coverage68_ess_ge_10": {q: float(np.mean(_inside(t, truth, q)[np.asarray(t["ess"]) >= 10]))
                                               for q in QUANTITIES}}
        for q in QUANTITIES:
            r = res[prior][q]
            print(f"{prior:10s} {q:15s} 68% coverage {r['coverage68']:.3f} (ESS >= 10: "
                  f"{res[prior]['coverage68_ess_ge_10'][q]:.3f})  median width {r['median_width']:.4f}  "
                  f"median |error| {r['median_abs_error']:.4f}  bias {r['bias']:+.4f}  median ESS {res[prior]['median_ess']:.1f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
