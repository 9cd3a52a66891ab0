"""The real-data scorecard of an SDSS run: what a spectroscopist would check first.

    python scripts/sdss_check.py RUN [RUN ...] [--json out.json]

For each run folder (a `popsed-jax fit sdss` run on which `popsed-jax plot` has been run, so
that science.json holds the n(z) and kcorrect comparisons), prints one row of:
val/floor; n(z) of the selected population against the catalog's spec-z (never shown to the
fit): W1, median z (population and spec), share below z = 0.03, share in the top 10% of the
z box; median z of blue and red galaxies (observed g - r < 0.75 / >= 0.75, the same cut for
population samples and catalog galaxies); median stellar-mass offset against kcorrect
overall and in z slices [dex]; median log Z/Zsun of the population at 10 < log M* < 11
against Gallazzi et al. (2005) at the same masses; share of samples below BC03's lowest
metallicity; and which of issue 16's seven goals the run meets (`goals`, below).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from popsed_jax.physics.photometry import flux_to_mag
from popsed_jax.physics.relations import gallazzi05_mzr
from popsed_jax.physics.params import ZSUN
from popsed_jax.products.runfolder import RunFolder
from popsed_jax.survey.catalog import load_catalog
from popsed_jax.survey.selection import select_catalog

GR_CUT = 0.75
BC03_LOGZ_MIN = np.log10(1e-4 / ZSUN)  # the grid's lowest metallicity, in the parameter's units


def scorecard(run) -> dict:
    folder = RunFolder(run)
    cfg, summary = folder.read_config(), folder.read_json("summary")
    sci = folder.read_json("science")
    tab = folder.read_samples()
    sel = np.asarray(tab["selected"], bool)
    z = np.asarray(tab["z"])[sel]
    info = folder.read_json("run_info")
    cat = load_catalog(info["catalog"], extra=cfg.selection_bands)
    cat = select_catalog(cat, cfg.limit) if cfg.limit else cat
    # the run's own g and r (sdss2001-* now, speclite's sdss2010-* in runs made before)
    g_run, r_run = (next(b for b in info["bands"] if b.endswith(s)) for s in ("-g", "-r"))
    gi, ri = (next(i for i, b in enumerate(cat.bands) if b.endswith(s)) for s in ("-g", "-r"))
    gr_cat = flux_to_mag(cat.flux[:, gi]) - flux_to_mag(cat.flux[:, ri])
    gr_pop = flux_to_mag(np.asarray(tab[f"flux_{g_run}"])[sel]) - flux_to_mag(np.asarray(tab[f"flux_{r_run}"])[sel])
    zs = cat.z_spec
    out = dict(run=str(run), nebular=cfg.nebular, seed=cfg.seed, val_over_floor=summary["val_over_floor"],
               nz_w1=sci["nz"]["w1"], median_z=sci["nz"]["median_pop"], median_z_spec=sci["nz"]["median_spec"],
               frac_z_below_003=float(np.mean(z < 0.03)), frac_z_below_003_spec=float(np.mean(zs < 0.03)),
               frac_z_top_box=float(np.mean(z > cfg.z_range[0] + 0.9 * (cfg.z_range[1] - cfg.z_range[0]))))
    out["bands"] = list(info["bands"])
    for name, pm, cm in (("blue", gr_pop < GR_CUT, gr_cat < GR_CUT), ("red", gr_pop >= GR_CUT, gr_cat >= GR_CUT)):
        out[f"median_z_{name}"] = float(np.median(z[pm]))
        out[f"median_z_{name}_spec"] = float(np.median(zs[cm]))
    im = sci.get("independent_masses")
    if im:
        out["mass_offset_all"] = im["all"]["median_offset"]
        out["mass_offset_slices"] = {f"{s['z_lo']}-{s['z_hi']}": s["median_offset"] for s in im["slices"]}
    lm = np.asarray(tab["logM_surviving"])[sel]
    logz = np.asarray(tab["logZ"])[sel] + np.log10(ZSUN / 0.02)  # to Gallazzi's Zsun = 0.02
    mid = (lm > 10) & (lm < 11)
    out["median_logZ_10_11"] = float(np.median(logz[mid]))
    out["median_logZ_10_11_gallazzi05"] = float(np.median(gallazzi05_mzr(lm[mid])[1]))
    out["frac_logZ_below_grid"] = float(np.mean(np.asarray(tab["logZ"])[sel] < BC03_LOGZ_MIN))
    out["goals"] = goals(out)
    return out


def goals(r: dict) -> dict:
    """Issue 16's seven real-data goals -> {name: met?}: val/floor <= 1.5 (on every validation
    entry), n(z) W1 <= 0.008, median z within 0.005 of spec, blue and red medians each within
    0.01 of theirs, stellar masses within 0.1 dex of kcorrect's overall and in every z slice,
    median logZ at 10 < log M* < 11 within 0.2 dex of Gallazzi et al. (2005)."""
    masses = [r.get("mass_offset_all", np.nan), *r.get("mass_offset_slices", {}).values()]
    return {
        "val_floor": bool(max(r["val_over_floor"]) <= 1.5),
        "nz_w1": bool(r["nz_w1"] <= 0.008),
        "median_z": bool(abs(r["median_z"] - r["median_z_spec"]) <= 0.005),
        "blue_z": bool(abs(r["median_z_blue"] - r["median_z_blue_spec"]) <= 0.01),
        "red_z": bool(abs(r["median_z_red"] - r["median_z_red_spec"]) <= 0.01),
        "masses": bool(np.all(np.abs(masses) <= 0.1)),
        "logZ": bool(abs(r["median_logZ_10_11"] - r["median_logZ_10_11_gallazzi05"]) <= 0.2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = [scorecard(r) for r in a.runs]
    for r in rows:
        slices = ", ".join(f"{k}: {v:+.2f}" for k, v in r.get("mass_offset_slices", {}).items())
        print(f"{r['run']} (nebular {r['nebular']}, seed {r['seed']}): val/floor {', '.join(f'{v:.2f}' for v in r['val_over_floor'])}; "
              f"n(z) W1 {r['nz_w1']:.4f}, median z {r['median_z']:.4f} (spec {r['median_z_spec']:.4f}); "
              f"z<0.03 {r['frac_z_below_003']:.3f} (spec {r['frac_z_below_003_spec']:.3f}); top of box {r['frac_z_top_box']:.3f}; "
              f"blue {r['median_z_blue']:.4f} (spec {r['median_z_blue_spec']:.4f}), red {r['median_z_red']:.4f} "
              f"(spec {r['median_z_red_spec']:.4f}); mass offset {r.get('mass_offset_all', float('nan')):+.3f} [{slices}]; "
              f"logZ(10-11) {r['median_logZ_10_11']:+.2f} (G05 {r['median_logZ_10_11_gallazzi05']:+.2f}); "
              f"logZ below grid {r['frac_logZ_below_grid']:.3f}; "
              f"goals {sum(r['goals'].values())}/7 (missed: {', '.join(k for k, v in r['goals'].items() if not v) or 'none'})")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
