"""Runs: files in, run folder out. The fit driver (loop, checkpoints, NaN guard, history) and
the end-to-end functions behind ``popsed-jax fit`` and ``popsed-jax evaluate``.

The numerics are the pure functions of ``popsed_jax.inference.fit``; this module only loops,
writes and reads (a :class:`~popsed_jax.products.runfolder.RunFolder`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np

from .. import __version__
from ..errors import FitDiverged, FitInterrupted, PopsedError
from ..inference import distributed as dist
from ..inference import fit as fitlib
from ..inference.config import FLAG_RATIO, FitConfig
from ..physics.params import with_log_sfr
from ..physics.photometry import flux_to_mag
from ..survey.catalog import SHIPPED_SDSS_SELECTION, Catalog, default_sdss_path, is_shipped_sdss, load_catalog
from ..survey.noise import load_noise_model
from ..survey.observation import make_observation
from ..survey.selection import select_catalog
from . import evaluate as ev
from . import plots
from .runfolder import RunFolder, file_sha256

__all__ = ["train", "run_fit", "write_products", "evaluate_run", "catalog_identity", "FitDiverged", "FitInterrupted",
           "CORNER_NAMES"]

CORNER_NAMES = ("z", "logM", "logZ", "tau2", "log_sfr_100myr", "age_mw")
_HISTORY_KEYS = ("step", "loss", "epsilon", "noise_scale", "grad_norm", "converged", "ess", "val_step", "val", "seconds")


def train(problem: fitlib.FitProblem, run, resume: bool = False, progress: bool = True, fail_at: int | None = None,
          shard: bool | None = None) -> dict:
    """Train the ensemble of ``problem``, checkpointing into the run folder ``run``.

    Returns {"summary", "params", "history"}; writes config.json, checkpoints/, history.json
    and summary.json. ``resume`` continues from the newest readable checkpoint (damaged newer
    ones are skipped with a warning). ``shard``: None shards the members over the devices
    when there are several and they divide K; False never does. ``fail_at`` injects a NaN
    into the loss at that step (for the reliability tests). A non-finite loss or gradient
    raises :class:`FitDiverged` naming the step, member and quantity; the last good checkpoint
    is kept. SIGINT / SIGTERM stop at the next step boundary with a checkpoint and raise
    :class:`FitInterrupted`.

    Distributed (``popsed_jax.inference.distributed``, several processes): every process calls
    this with the same problem; the members are sharded over all processes' devices, each
    process steps its own, and the metrics, checkpoints and final parameters are gathered. Only
    process 0 writes the folder; a signal in any process stops all of them at the same step.
    """
    from tqdm.auto import tqdm

    cfg = problem.cfg
    multi, main = dist.is_multiprocess(), dist.is_main()
    folder = RunFolder(run)
    if main:
        folder.create()
        folder.write_config(cfg)
    state = fitlib.init(problem)
    history = {k: [] for k in _HISTORY_KEYS}
    if resume:
        ck = folder.load_latest_checkpoint(state.params, state.opt_state)
        if ck is not None:
            params, opt_state, start, history = ck
            for k in _HISTORY_KEYS:  # checkpoints written before a key existed
                history.setdefault(k, [])
            state = state._replace(params=params, opt_state=opt_state, step=start)
    mesh = fitlib.ensemble_mesh(cfg.members) if shard is not False or multi else None
    if multi:
        dist.check_members(cfg.members)
        dist.same_everywhere(str(state.step), f"processes {{bad}} resumed from another checkpoint than process 0 (step "
                                              f"{state.step} there): the run folder {folder.path} must be one file system "
                                              "that every process sees; stopped")
        state = state._replace(params=dist.to_host(state.params), opt_state=dist.to_host(state.opt_state))
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec as P

        params, opt_state = jax.device_put((state.params, state.opt_state), NamedSharding(mesh, P("ens")))
        state = state._replace(params=params, opt_state=opt_state)
    step = fitlib.make_step(problem, mesh)
    start = state.step
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="popsed-jax fit", disable=not (progress and main),
               dynamic_ncols=True)
    val_mesh = mesh if multi else None  # one process: validation as before (jit over the sharded params)

    def save(done):  # a collective in a distributed run: all processes gather, process 0 writes
        params, opt_state = dist.to_host((state.params, state.opt_state)) if multi else (state.params, state.opt_state)
        err = None
        if main:
            try:
                folder.save_checkpoint(done, params, opt_state, history)
            except Exception as e:  # told to the other processes first, so that they stop too
                err = e
        if multi:
            dist.agree(err is None, f"process 0 could not write the checkpoint of step {done} in {folder['checkpoints']} "
                                    "(its error says why); stopped")
        if err is not None:
            raise err
    t0 = time.perf_counter() - (history["seconds"][-1] if history["seconds"] else 0.0)  # seconds accumulate over resumes
    last_good = start
    with _StopOnSignals() as stop:
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
            history["ess"].append(np.round(m["ess"], 1).tolist())
            history["seconds"].append(time.perf_counter() - t0)
            bar.set_postfix(loss=f"{float(np.mean(loss_v)):.4f}", blur=f"{eps:.3g}", noise=f"{ns:.2f}",
                            ess=f"{float(np.min(m['ess'])):.0f}")
            done = i + 1
            if done % cfg.val_every == 0 or done == cfg.steps:
                history["val_step"].append(done)
                history["val"].append(fitlib.validate(problem, state.params, eps, mesh=val_mesh).tolist())
            stopping = dist.any_process(stop.signal is not None) if multi else stop.signal is not None
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save(done)
                last_good = done
            elif stopping:
                save(done)
            if stopping:
                bar.close()
                by = signal.Signals(stop.signal).name if stop.signal is not None else "a signal to another process"
                raise FitInterrupted(
                    f"stopped by {by} after step {done} of {cfg.steps}, checkpoint written "
                    f"in {folder['checkpoints']}; continue with the same command and --resume")
    bar.close()
    eps_final = fitlib.epsilon_at(cfg, cfg.steps - 1)
    val = fitlib.validate(problem, state.params, eps_final, mesh=val_mesh)
    floor = fitlib.data_floor(problem, eps_final)
    ratio = val / floor if floor > 0 else np.full_like(val, np.inf)
    flagged = [int(k) for k in np.nonzero(~np.isfinite(val) | (ratio > FLAG_RATIO))[0]]
    summary = {
        "steps": cfg.steps, "members": cfg.members, "epsilon_final": eps_final,
        "val_divergence": val.tolist(), "data_floor": floor, "val_over_floor": ratio.tolist(),
        "flagged_members": flagged, "seconds": time.perf_counter() - t0,
        # effective number of selected draws per step (median over the last 10% of steps, per member)
        "ess_final": _tail_median(history["ess"], cfg.steps),
        "devices": len(jax.devices()), "processes": jax.process_count(),
        "devices_per_process": dist.layout()["devices_per_process"], "sharded": mesh is not None,
        "training_loss": fitlib.training_loss(cfg),
    }
    params = dist.to_host(state.params) if multi else state.params
    if main:
        folder.write_json("summary", summary)
        folder.write_json("history", history, indent=None)
    return {"summary": summary, "params": params, "history": history}


def _tail_median(rows, steps: int):
    """Median over the last 10% of the steps of per-step, per-member rows, (K,) list (None if none)."""
    tail = rows[-max(steps // 10, 1):]
    return np.median(np.asarray(tail, float), axis=0).round(1).tolist() if tail else None


class _StopOnSignals:
    """Within the block, SIGINT and SIGTERM set ``.signal`` instead of interrupting, so the loop
    stops at the next step boundary with a checkpoint. Only in the main thread (elsewhere
    Python cannot install handlers, and the default behaviour stays)."""

    def __enter__(self):
        self.signal = None
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            signal.signal(sig, h)
        return False


def catalog_identity(catalog, cat: Catalog) -> dict:
    """What a run records of the catalog it fitted: its name, absolute path and SHA-256 (a
    file), its size and bands, and the code version."""
    info = {"n_catalog": int(cat.n), "bands": list(cat.bands), "popsed_jax_version": __version__}
    if isinstance(catalog, Catalog):
        info.update(catalog=cat.meta.get("source", "in-memory catalog"), catalog_sha256=None)
    elif is_shipped_sdss(catalog):
        from importlib import resources

        with resources.as_file(default_sdss_path()) as shipped:
            info.update(catalog=str(catalog), catalog_path=str(catalog), catalog_sha256=file_sha256(shipped))
    else:
        path = os.path.abspath(os.fspath(catalog))
        info.update(catalog=str(catalog), catalog_path=path, catalog_sha256=file_sha256(path))
    return info


def run_fit(catalog, cfg: FitConfig | None = None, out="runs/fit", resume=False, noise_model=None, n_samples=10000,
            progress=True, fail_at=None, overwrite=False, force=False) -> dict:
    """Fit a population to ``catalog`` (a path, 'sdss' / 'sdss+2mass', or a :class:`Catalog`)
    and write the run folder ``out``: noise model, checkpoints, history, summary, population
    samples and the fit's figures. Returns {"summary", "params", "history", "samples"} with
    the samples as an astropy Table.

    Everything is validated (catalog, configuration, noise model, selection) before anything
    is written. A folder holding another run is refused unless ``overwrite`` (which clears
    it) or ``resume`` (which must be of the same catalog, unless ``force``); a folder in use
    by a running fit is refused (RUN/.lock).

    Distributed (after ``popsed_jax.inference.distributed.initialize``): every process calls
    this with the same arguments; the members are trained over all processes' devices and only
    process 0 writes ``out`` (docs/distributed.md). The other processes return samples None.
    """
    cfg = survey_selection(catalog, cfg or FitConfig())
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog, extra=cfg.selection_bands)
    noise = load_noise_model(noise_model) if noise_model else None
    problem = fitlib.prepare(cat, cfg, noise)
    info = catalog_identity(catalog, cat)
    if dist.is_multiprocess():
        return _run_fit_distributed(problem, cat, info, out, resume, n_samples, progress, fail_at, overwrite, force)
    folder = RunFolder(out).create()
    with folder.lock():
        _start_run(folder, problem, cat, info, resume, overwrite, force)
        res = train(problem, folder, resume=resume, progress=progress, fail_at=fail_at)
        res["samples"] = write_products(problem, cat, folder, res, n_samples)
    return res


def survey_selection(catalog, cfg: FitConfig) -> FitConfig:
    """``cfg`` with the shipped SDSS sample's own selection (r < 17.77 and 2MASS-detected,
    ``SHIPPED_SDSS_SELECTION``) when ``catalog`` names that sample ('sdss', 'sdss+2mass') and
    ``cfg`` leaves ``limit`` and ``selection_bands`` at their defaults; else ``cfg`` itself."""
    default = FitConfig()
    if (isinstance(catalog, str) and is_shipped_sdss(catalog) and cfg.limit == default.limit
            and tuple(cfg.selection_bands) == tuple(default.selection_bands)):
        sel = dict(SHIPPED_SDSS_SELECTION)
        if str(catalog).lower() == "sdss+2mass":  # its Ks is fitted already
            sel["selection_bands"] = ()
        return dataclasses.replace(cfg, **sel)
    return cfg


def _start_run(folder: RunFolder, problem, cat, info, resume, overwrite, force):
    folder.check_new_run(info, resume=resume, overwrite=overwrite, force=force)
    folder.write_json("run_info", info)
    folder.write_noise_model(problem.noise)
    if not folder.exists("noise_plot"):
        plots.plot_noise_model(problem.noise, cat, folder["noise_plot"])


def _run_fit_distributed(problem, cat, info, out, resume, n_samples, progress, fail_at, overwrite, force):
    """run_fit in every process of a distributed run: process 0 takes the folder (lock, checks,
    run_info, noise model), all train their members, process 0 writes the products. Returns
    samples None in the other processes. The folder must be one all processes see (resume
    reads its checkpoints in each)."""
    dist.check_members(problem.cfg.members)
    main = dist.is_main()
    folder = RunFolder(out)
    launch = json.dumps({"config": problem.cfg.to_dict(), "out": os.path.normpath(os.fspath(out)), "resume": bool(resume),
                         "catalog": {k: info.get(k) for k in ("catalog_sha256", "n_catalog", "bands")}},
                        sort_keys=True, default=str)
    with dist.stop_if_a_process_dies():
        dist.same_everywhere(launch, "processes {bad} of the distributed run were launched with another catalog, "
                                     "configuration (seed, steps, members...), --out or --resume than process 0: every "
                                     "process must run the same command. (Independent fits launched as one Slurm or MPI "
                                     f"job of several tasks: set {dist.ENV['distributed']}=0 so that each runs alone.)")
    with contextlib.ExitStack() as stack:
        err = None
        if main:
            try:
                folder.create()
                stack.enter_context(folder.lock())
                _start_run(folder, problem, cat, info, resume, overwrite, force)
            except Exception as e:  # told to the other processes first, then raised here
                err = e
        with dist.stop_if_a_process_dies():
            dist.agree(err is None, f"process 0 could not start the run in {out} (its error says why); stopped")
        if err is not None:
            raise err
        with dist.stop_if_a_process_dies(out):
            res = train(problem, folder, resume=resume, progress=progress, fail_at=fail_at)
        # the others wait (on the coordination service) until process 0 has written the products, so
        # that JAX's exit barrier cannot time out on a long write and end process 0 half-way
        if main:
            try:
                res["samples"] = write_products(problem, cat, folder, res, n_samples)
            except Exception as e:
                dist.tell_others("products", f"{type(e).__name__}: {e}")
                raise
            dist.tell_others("products")
        else:
            res["samples"] = None
            msg = dist.wait_for_main("products")
            if msg:
                raise PopsedError(f"process 0 could not write the products of {out}: {msg}")
    return res


def write_products(problem: fitlib.FitProblem, cat: Catalog, folder: RunFolder, res: dict, n_samples: int):
    """Population samples (samples.fits) and the fit's figures; returns the samples Table.

    A population none of whose samples passes the survey limit is a failed fit: the samples
    are written for inspection, the members without selected samples are flagged in
    summary.json, and a PopsedError says so before any figure is made."""
    from astropy.table import Table

    cfg = problem.cfg
    cols = fitlib.sample(problem, res["params"], max(n_samples // cfg.members, 1))
    folder.write_samples(cols)
    sel = cols["selected"]
    empty = [int(k) for k in range(cfg.members) if not np.any(sel[cols["member"] == k])]
    if empty:
        summary = res["summary"]
        summary["flagged_members"] = sorted(set(summary["flagged_members"]) | set(empty))
        summary["members_without_selected_samples"] = empty
        folder.write_json("summary", summary)
    if not sel.any():
        raise PopsedError(
            f"the fitted population has no samples that pass the survey limit {cfg.limit!r} ({sel.size} drawn): the fit "
            f"failed (members {empty} flagged in {folder['summary']}); try another lr or seed. {folder['samples']} "
            "is kept for inspection")
    plots.plot_loss_curves(res["history"], folder["loss_plot"], floor=res["summary"]["data_floor"])
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
