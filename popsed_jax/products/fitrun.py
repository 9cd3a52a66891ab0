"""End-to-end runs behind ``popsed-jax fit`` and ``popsed-jax evaluate``: files in, run folder out.

A run folder holds: run_info.json (the catalog it fitted), config.json, checkpoints/, noise_model.json (+ .png), history.json,
summary.json, samples.fits (pooled population samples with derived quantities, the noisy
fluxes they would be observed with, ``selected`` and ``member``), loss.png, ppc.png and
corner.png. ``evaluate`` adds evaluation.json and corner_vs_truth.png.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from astropy.table import Table

from . import evaluate as ev
from ..physics import forward
from ..survey import observe
from . import plots
from ..inference import train
from ..survey.catalog import load_catalog

CORNER_NAMES = ("z", "logM", "logZ", "tau2", "log_sfr_100myr", "age_mw")


def run_fit(catalog, cfg: train.FitConfig, out, resume=False, noise_model=None, n_samples=10000, progress=True, fail_at=None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cat = load_catalog(catalog)
    (out / "run_info.json").write_text(json.dumps({"catalog": str(catalog), "n_catalog": int(cat.n), "bands": list(cat.bands)}, indent=2))
    noise = observe.load_noise_model(noise_model) if noise_model else None
    ctx = train.prepare(cat, cfg, noise)
    observe.save_noise_model(ctx.noise, out / "noise_model.json")
    if not (out / "noise_model.png").exists():
        observe.plot_noise_model(ctx.noise, cat, out / "noise_model.png")
    res = train.fit(ctx, out, resume=resume, progress=progress, fail_at=fail_at)
    write_products(ctx, cat, out, res, n_samples)
    return res


def write_products(ctx, cat, out: Path, res: dict, n_samples: int):
    k = ctx.cfg.members
    cols = train.population_samples(ctx, res["params"], max(n_samples // k, 1))
    Table(cols).write(out / "samples.fits", overwrite=True)
    plots.plot_loss_curves(res["history"], out / "loss.png", floor=res["summary"]["data_floor"])
    sel = cols["selected"]
    sim = np.stack([cols[f"flux_{b}"][sel] for b in ctx.bands], -1)
    obs = cat.flux
    if ctx.cfg.limit:
        obs = observe.select_catalog(cat, ctx.cfg.limit).flux
    with np.errstate(invalid="ignore", divide="ignore"):
        plots.plot_ppc(22.5 - 2.5 * np.log10(obs), 22.5 - 2.5 * np.log10(sim), ctx.bands, out / "ppc.png")
    plots.plot_corner(ev.with_log_sfr({kk: v[sel] for kk, v in cols.items()}), CORNER_NAMES, out / "corner.png", labels=("population (selected)",))


def _prior_samples(ctx, n, seed=5):
    """Draws from the flow's starting distribution (the identity flow: uniform on the box, or
    uniform in comoving volume in z), observed with noise and selection; the selected rows."""
    from ..inference import flows

    fc = train.flow_config(ctx.cfg)
    lo, hi = train.box_bounds(ctx.cfg)
    u = np.random.default_rng(seed).random((n, lo.size))
    theta = lo + (hi - lo) * u
    if fc.z_volume:
        zt, F, _ = flows.volume_table(fc.lo[0], fc.hi[0])
        theta[:, 0] = np.interp(u[:, 0], F, zt)
    noisy, sel = train.observe_theta(ctx, theta, jax.random.PRNGKey(seed))
    d = forward.theta_to_columns(theta)
    d.update({kk: np.asarray(v) for kk, v in forward.derived_quantities(ctx.model, theta).items() if kk not in d})
    return {kk: np.asarray(v)[sel] for kk, v in d.items()}


def evaluate_run(run, truth, json_out=None, n_prior=40000) -> dict:
    """Normalised W1 of every parameter and derived quantity against a mock's truth."""
    run = Path(run)
    if not (run / "samples.fits").exists():
        raise FileNotFoundError(f"{run} is not a finished run folder (no samples.fits)")
    cfg = train.FitConfig.from_dict(json.loads((run / "config.json").read_text()))
    samples = Table.read(run / "samples.fits")
    truth_tab = Table.read(truth)
    missing = [q for q in ("z", "logM") if q not in truth_tab.colnames]
    if missing:
        raise ValueError(f"truth table {truth} lacks the true-parameter column(s) {missing}: is it a popsed-jax mock?")
    tsel = np.asarray(truth_tab["selected"], bool) if "selected" in truth_tab.colnames else np.ones(len(truth_tab), bool)
    truth_cols = {c: np.asarray(truth_tab[c])[tsel] for c in truth_tab.colnames if truth_tab[c].ndim == 1}
    rsel = np.asarray(samples["selected"], bool)
    rec = {c: np.asarray(samples[c])[rsel] for c in samples.colnames}
    bands = tuple(c[len("flux_"):] for c in samples.colnames if c.startswith("flux_"))
    noise = observe.load_noise_model(run / "noise_model.json")
    ctx = train.FitContext(cfg, forward.build_forward_model(filters=bands, z_max=cfg.z_range[1], met_mode=cfg.met_mode), noise, None, None, None, None, None, None, None, bands, None)
    if cfg.limit:
        band, lim = observe.parse_limit(cfg.limit, bands)
        ctx.band_idx, ctx.mag_lim = observe.band_index(bands, band), lim
    prior = _prior_samples(ctx, n_prior)
    scores = ev.normalized_w1(rec, truth_cols, prior)
    raw = {q: ev.w1(rec, truth_cols, q) for q in scores}
    fluxes = lambda cols: np.stack([np.asarray(cols[f"flux_{b}"], float) for b in bands], -1)  # noqa: E731
    photometry = None
    if all(f"flux_{b}" in truth_cols for b in bands):
        try:
            photometry = ev.photometric_distinguishability(fluxes(rec), fluxes(truth_cols), observe.softening_from_noise(noise),
                                                           colours=cfg.colours)
        except ValueError as e:  # too few selected samples for a meaningful test: say so, keep the scores
            photometry = {"skipped": str(e)}
    result = {"normalized_w1": scores, "w1": raw, "photometry": photometry, "prior": f"the flow's starting distribution (z_prior = {cfg.z_prior!r})", "n_recovered_selected": int(rsel.sum()), "n_truth": int(tsel.sum()), "n_prior_selected": int(len(prior["z"]))}
    (run / "evaluation.json").write_text(json.dumps(result, indent=2))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))
    plots.plot_corner(ev.with_log_sfr(rec), CORNER_NAMES, run / "corner_vs_truth.png", truth=ev.with_log_sfr(truth_cols))
    return result
