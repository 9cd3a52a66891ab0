"""Runs: files in, run folder out. The fit driver (loop, checkpoints, NaN guard, history) and
the end-to-end functions behind ``popsed-jax fit`` and ``popsed-jax evaluate``.

The numerics are the pure functions of ``popsed_jax.inference.fit``; this module only loops,
writes and reads (a :class:`~popsed_jax.products.runfolder.RunFolder`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np

from ..errors import FitDiverged
from ..inference import fit as fitlib
from ..inference.config import FLAG_RATIO, FitConfig
from ..physics.params import with_log_sfr
from ..physics.photometry import flux_to_mag
from ..survey.catalog import Catalog, load_catalog
from ..survey.noise import load_noise_model
from ..survey.observation import make_observation
from ..survey.selection import select_catalog
from . import evaluate as ev
from . import plots
from .runfolder import RunFolder

__all__ = ["train", "run_fit", "write_products", "evaluate_run", "FitDiverged", "CORNER_NAMES"]

CORNER_NAMES = ("z", "logM", "logZ", "tau2", "log_sfr_100myr", "age_mw")
_HISTORY_KEYS = ("step", "loss", "epsilon", "noise_scale", "grad_norm", "converged", "val_step", "val", "seconds")


def train(problem: fitlib.FitProblem, run, resume: bool = False, progress: bool = True, fail_at: int | None = None,
          shard: bool | None = None) -> dict:
    """Train the ensemble of ``problem``, checkpointing into the run folder ``run``.

    Returns {"summary", "params", "history"}; writes config.json, checkpoints/, history.json
    and summary.json. ``shard``: None shards the members over the devices when there are
    several and they divide K; False never does. ``fail_at`` injects a NaN into the loss at
    that step (for the reliability tests). A non-finite loss or gradient raises
    :class:`FitDiverged` naming the step, member and quantity; the last good checkpoint is kept.
    """
    from tqdm.auto import tqdm

    cfg = problem.cfg
    folder = RunFolder(run).create()
    folder.write_config(cfg)
    state = fitlib.init(problem)
    history = {k: [] for k in _HISTORY_KEYS}
    if resume:
        ck = folder.latest_checkpoint()
        if ck is not None:
            params, opt_state, start, history = folder.load_checkpoint(ck, state.params, state.opt_state)
            state = state._replace(params=params, opt_state=opt_state, step=start)
    mesh = fitlib.ensemble_mesh(cfg.members) if shard is not False else None
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec as P

        params, opt_state = jax.device_put((state.params, state.opt_state), NamedSharding(mesh, P("ens")))
        state = state._replace(params=params, opt_state=opt_state)
    step = fitlib.make_step(problem, mesh)
    start = state.step
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="popsed-jax fit", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter() - (history["seconds"][-1] if history["seconds"] else 0.0)  # seconds accumulate over resumes
    last_good = start
    for i in bar:
        new_state, m = step(state)
        loss_v, gnorm, eps, ns = m["loss"], m["grad_norm"], m["epsilon"], m["noise_scale"]
        if fail_at is not None and i == fail_at:
            loss_v = loss_v * np.nan
        bad = ~np.isfinite(loss_v) | ~np.isfinite(gnorm)
        if bad.any():
            k = int(np.nonzero(bad)[0][0])
            what = "loss" if not np.isfinite(loss_v[k]) else "gradient norm"
            raise FitDiverged(
                f"step {i}: the {what} of ensemble member {k} is {loss_v[k] if what == 'loss' else gnorm[k]} "
                f"(epsilon={eps:.4g}, noise scale={ns:.3g}); stopped. The last good checkpoint is step {last_good} "
                f"in {folder['checkpoints']}; resume with --resume after changing the configuration (e.g. a lower lr)."
            )
        state = new_state
        history["step"].append(i)
        history["loss"].append(loss_v.tolist())
        history["epsilon"].append(eps)
        history["noise_scale"].append(ns)
        history["grad_norm"].append(gnorm.tolist())
        history["converged"].append(m["converged"].tolist())
        history["seconds"].append(time.perf_counter() - t0)
        bar.set_postfix(loss=f"{float(np.mean(loss_v)):.4f}", blur=f"{eps:.3g}", noise=f"{ns:.2f}")
        done = i + 1
        if done % cfg.val_every == 0 or done == cfg.steps:
            history["val_step"].append(done)
            history["val"].append(fitlib.validate(problem, state.params, eps).tolist())
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            folder.save_checkpoint(done, state.params, state.opt_state, history)
            last_good = done
    bar.close()
    eps_final = fitlib.epsilon_at(cfg, cfg.steps - 1)
    val = fitlib.validate(problem, state.params, eps_final)
    floor = fitlib.data_floor(problem, eps_final)
    ratio = val / floor if floor > 0 else np.full_like(val, np.inf)
    flagged = [int(k) for k in np.nonzero(~np.isfinite(val) | (ratio > FLAG_RATIO))[0]]
    summary = {
        "steps": cfg.steps, "members": cfg.members, "epsilon_final": eps_final,
        "val_divergence": val.tolist(), "data_floor": floor, "val_over_floor": ratio.tolist(),
        "flagged_members": flagged, "seconds": time.perf_counter() - t0,
        "devices": len(jax.devices()), "sharded": mesh is not None,
    }
    folder.write_json("summary", summary)
    folder.write_json("history", history, indent=None)
    return {"summary": summary, "params": state.params, "history": history}


def run_fit(catalog, cfg: FitConfig | None = None, out="runs/fit", resume=False, noise_model=None, n_samples=10000,
            progress=True, fail_at=None) -> dict:
    """Fit a population to ``catalog`` (a path, 'sdss' / 'sdss+2mass', or a :class:`Catalog`)
    and write the run folder ``out``: noise model, checkpoints, history, summary, population
    samples and the fit's figures. Returns {"summary", "params", "history", "samples"} with
    the samples as an astropy Table."""
    cfg = cfg or FitConfig()
    folder = RunFolder(out).create()
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    name = catalog.meta.get("source", "in-memory catalog") if isinstance(catalog, Catalog) else str(catalog)
    folder.write_json("run_info", {"catalog": name, "n_catalog": int(cat.n), "bands": list(cat.bands)})
    noise = load_noise_model(noise_model) if noise_model else None
    problem = fitlib.prepare(cat, cfg, noise)
    folder.write_noise_model(problem.noise)
    if not folder.exists("noise_plot"):
        plots.plot_noise_model(problem.noise, cat, folder["noise_plot"])
    res = train(problem, folder, resume=resume, progress=progress, fail_at=fail_at)
    res["samples"] = write_products(problem, cat, folder, res, n_samples)
    return res


def write_products(problem: fitlib.FitProblem, cat: Catalog, folder: RunFolder, res: dict, n_samples: int):
    """Population samples (samples.fits) and the fit's figures; returns the samples Table."""
    from astropy.table import Table

    cfg = problem.cfg
    cols = fitlib.sample(problem, res["params"], max(n_samples // cfg.members, 1))
    folder.write_samples(cols)
    plots.plot_loss_curves(res["history"], folder["loss_plot"], floor=res["summary"]["data_floor"])
    sel = cols["selected"]
    sim = np.stack([cols[f"flux_{b}"][sel] for b in problem.bands], -1)
    obs = select_catalog(cat, cfg.limit).flux if cfg.limit else cat.flux
    plots.plot_ppc(flux_to_mag(obs), flux_to_mag(sim), problem.bands, folder["ppc_plot"])
    plots.plot_corner(with_log_sfr({kk: v[sel] for kk, v in cols.items()}), CORNER_NAMES, folder["corner"],
                      labels=("population (selected)",))
    return Table(cols)


def evaluate_run(run, truth, json_out=None, n_prior=40000) -> dict:
    """Normalised W1 of every parameter and derived quantity against a mock's truth, and the
    photometry permutation test; writes evaluation.json and corner_vs_truth.png."""
    from astropy.table import Table

    folder = RunFolder(run)
    samples = folder.read_samples()
    cfg = folder.read_config()
    truth_tab = Table.read(truth)
    missing = [q for q in ("z", "logM") if q not in truth_tab.colnames]
    if missing:
        raise ValueError(f"truth table {truth} lacks the true-parameter column(s) {missing}: is it a popsed-jax mock?")
    tsel = np.asarray(truth_tab["selected"], bool) if "selected" in truth_tab.colnames else np.ones(len(truth_tab), bool)
    truth_cols = {c: np.asarray(truth_tab[c])[tsel] for c in truth_tab.colnames if truth_tab[c].ndim == 1}
    rsel = np.asarray(samples["selected"], bool)
    rec = {c: np.asarray(samples[c])[rsel] for c in samples.colnames}
    bands = tuple(c[len("flux_"):] for c in samples.colnames if c.startswith("flux_"))
    noise = folder.read_noise_model()
    model = fitlib.forward_model_for(cfg, bands)
    prior = fitlib.sample_prior(cfg, model, make_observation(noise, cfg.limit), n_prior)
    scores = ev.normalized_w1(rec, truth_cols, prior)
    raw = {q: ev.w1(rec, truth_cols, q) for q in scores}
    fluxes = lambda cols: np.stack([np.asarray(cols[f"flux_{b}"], float) for b in bands], -1)  # noqa: E731
    photometry = None
    if all(f"flux_{b}" in truth_cols for b in bands):
        from ..survey.features import softening_from_noise

        try:
            photometry = ev.photometric_distinguishability(fluxes(rec), fluxes(truth_cols), softening_from_noise(noise),
                                                           colours=cfg.colours)
        except ValueError as e:  # too few selected samples for a meaningful test: say so, keep the scores
            photometry = {"skipped": str(e)}
    result = {"normalized_w1": scores, "w1": raw, "photometry": photometry,
              "prior": f"the flow's starting distribution (z_prior = {cfg.z_prior!r})",
              "n_recovered_selected": int(rsel.sum()), "n_truth": int(tsel.sum()), "n_prior_selected": int(len(prior["z"]))}
    folder.write_json("evaluation", result)
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))
    plots.plot_corner(with_log_sfr(rec), CORNER_NAMES, folder["corner_truth"], truth=with_log_sfr(truth_cols))
    return result
