"""How well can ugriz + this SPS model place SDSS galaxies in redshift? A template photo-z check.

The forward model itself is the template library: N random parameter sets (the fit's box, or
PopSED's Table-2 population) with z uniform on [0.005, 0.35]. Each SDSS galaxy (r < 17.77) gets
the z of its best template by chi^2 with a free normalisation (colours only) and a fractional
error floor. Prints photo-z vs spec-z per spec-z slice and writes JSON.

    python scripts/template_photoz.py [--n-gal 3000] [--n-lib 150000] [--floor 0.03] [--library bc03] [--json out.json]
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from popsed_jax.survey import catalog, mock
from popsed_jax.survey.selection import select_catalog
from popsed_jax.physics import forward


def library(model, n, seed, population):
    rng = np.random.default_rng(seed)
    if population == "table2":
        th = mock.sample_table2(n, seed, lambda m, r: (r.uniform(0.005, 0.35, m), np.full(m, 10.0)))
    else:
        lo = np.array([forward.PARAM_BOUNDS[k][0] for k in forward.PARAM_NAMES])
        hi = np.array([forward.PARAM_BOUNDS[k][1] for k in forward.PARAM_NAMES])
        th = lo + (hi - lo) * rng.random((n, lo.size))
        th[:, 0], th[:, 1] = rng.uniform(0.005, 0.35, n), 10.0
    fl = np.asarray(jax.jit(forward.forward_fluxes, static_argnames="chunk_size")(model, jnp.asarray(th, jnp.float32), chunk_size=8192))
    ok = np.all(fl > 0, 1)
    return th[ok], fl[ok]


def best_templates(f, e, fl, floor, chunk=200):
    """Index of the best template (N_gal,) and its chi^2, amplitude marginalised analytically."""
    sig2 = e**2 + (floor * f) ** 2
    L = jnp.asarray(fl, jnp.float32)
    L2 = L.T**2
    j_best, chi_best = [], []
    for s in range(0, len(f), chunk):
        F = jnp.asarray(f[s:s + chunk], jnp.float32)
        W = jnp.asarray(1.0 / sig2[s:s + chunk], jnp.float32)
        fw = (F * W) @ L.T
        ww = W @ L2
        chi = np.asarray((F**2 * W).sum(1)[:, None] - fw**2 / ww)
        j = chi.argmin(1)
        j_best.append(j)
        chi_best.append(chi[np.arange(j.size), j])
    return np.concatenate(j_best), np.concatenate(chi_best)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-gal", type=int, default=3000)
    p.add_argument("--n-lib", type=int, default=150000)
    p.add_argument("--floor", type=float, default=0.03, help="fractional flux error floor")
    p.add_argument("--population", choices=["box", "table2"], default="box")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-nebular", action="store_true", help="stellar light only (no nebular lines and continuum)")
    p.add_argument("--library", choices=["bc03", "bc03+emiles"], default="bc03",
                   help="stellar spectra (default: the fit's, bc03)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    cat = select_catalog(catalog.load_catalog("sdss"), "r<17.77")
    idx = np.random.default_rng(a.seed).choice(cat.n, min(a.n_gal, cat.n), replace=False)
    f, e, zs = cat.flux[idx], cat.flux_err[idx], cat.z_spec[idx]
    model = forward.build_forward_model(z_max=0.36, nebular=False if a.no_nebular else None, library=a.library)
    th, fl = library(model, a.n_lib, a.seed + 1, a.population)
    j, chi = best_templates(f, e, fl, a.floor)
    zp = th[j, 0]
    dz = (zp - zs) / (1 + zs)
    gr = -2.5 * np.log10(f[:, 1] / f[:, 2])
    out = dict(n_gal=int(zs.size), n_lib=int(th.shape[0]), floor=a.floor, population=a.population, library=a.library,
               median_dz_blue=float(np.median(dz[gr < 0.75])), median_dz_red=float(np.median(dz[gr >= 0.75])),
               nebular=model.nebular_logU is not None,
               median_dz=float(np.median(dz)), nmad=float(1.4826 * np.median(np.abs(dz - np.median(dz)))),
               frac_zphot_lt_0p03_with_zspec_gt_0p06=float(np.mean((zp < 0.03) & (zs > 0.06))),
               median_chi2=float(np.median(chi)), slices=[])
    for lo, hi in ((0.0, 0.03), (0.03, 0.07), (0.07, 0.11), (0.11, 0.16), (0.16, 0.6)):
        m = (zs >= lo) & (zs < hi)
        if m.sum():
            out["slices"].append(dict(zspec_lo=lo, zspec_hi=hi, n=int(m.sum()), median_zspec=float(np.median(zs[m])), median_zphot=float(np.median(zp[m]))))
    print(f"template photo-z ({a.population} library of {out['n_lib']}, nebular {out['nebular']}, {a.floor:.0%} floor) for {out['n_gal']} SDSS galaxies: "
          f"median (zphot - zspec)/(1+z) = {out['median_dz']:+.4f}, NMAD {out['nmad']:.4f}, "
          f"{out['frac_zphot_lt_0p03_with_zspec_gt_0p06']:.1%} put below z = 0.03 with spec-z > 0.06; "
          f"blue (g - r < 0.75) {out['median_dz_blue']:+.4f}, red {out['median_dz_red']:+.4f} ({a.library})")
    for s in out["slices"]:
        print(f"  spec-z {s['zspec_lo']:.2f}-{s['zspec_hi']:.2f} (n={s['n']}): median spec-z {s['median_zspec']:.3f}, photo-z {s['median_zphot']:.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
