"""Every galaxy's posterior, with the fitted population as its prior: the per-galaxy catalog.

For galaxy i with fluxes f_i (B,) and errors s_i (B,), the posterior over theta is
p(theta | f_i) proportional to q_phi(theta) L_i(theta), with q_phi the run's population (members
pooled) and L_i the Gaussian flux likelihood with the galaxy's own errors plus a fractional
error floor (model systematics): s_ib^2 = err_ib^2 + (floor f_ib)^2.

Method: importance sampling with the population as proposal. A bank of M parameter sets
theta_j ~ q_phi, with their noiseless model fluxes F_j and derived quantities, is shared by
all galaxies; w_ij is proportional to L_i(theta_j), so the weights of all galaxies are one
(galaxies x bank) matrix of chi^2 = a_i - 2 (f_i / s_i^2) . F_j + (1 / s_i^2) . F_j^2, computed
in chunks with two matrix products. Each galaxy keeps its ``top_k`` heaviest bank samples
(at least 2,000, and 1% of the bank; their weight fraction ``captured`` is reported, and a
galaxy is flagged when they hold less than ``min_captured``) for quantiles and p(z); the MAP is the
draw of the whole bank with the highest posterior density (the bank's ``log_q`` + log weight). The effective sample
size ESS = (sum w)^2 / sum w^2 says whether the bank resolves the posterior; a galaxy is
flagged when ESS < ``min_ess`` or when its best chi^2 is improbable under the likelihood
(p < ``chi2_p``: an outlier for follow-up). Bands with a non-finite flux or error, or error
<= 0, are left out of that galaxy's likelihood.

``prior="plain"`` draws the bank from the flow's starting distribution instead (uniform on
the box, z uniform in comoving volume): what the population prior buys is the difference.
"""
from __future__ import annotations

import numpy as np

from ..physics.params import log_sfr

__all__ = ["QUANTITIES", "posterior_bank", "bank_from_theta", "galaxy_posteriors", "chunk_for_memory", "photoz_metrics", "posterior_catalog", "Z_GRID_STEP"]

QUANTITIES = ("z", "logM_surviving", "log_sfr_100myr", "log_ssfr_100myr", "age_mw", "logZ", "tau2")
Z_GRID_STEP = 0.005


def posterior_bank(run, n: int = 200_000, prior: str = "population", seed: int = 0, chunk: int = 16384) -> dict:
    """The shared bank of a run folder: M = n parameter sets from the run's population (members
    pooled, equal shares) or from its starting distribution (``prior="plain"``), with noiseless
    fluxes ``flux`` (M, B) [nmgy] and the quantities of :data:`QUANTITIES` (M,) each."""
    import jax

    from ..inference import fit as fitlib
    from ..inference import flows
    from .runfolder import RunFolder

    folder = RunFolder(run)
    cfg = folder.read_config()
    info = folder.read_json("run_info")
    model = fitlib.forward_model_for(cfg, info["bands"])
    fc = fitlib.flow_config(cfg)
    if prior == "population":
        params = _population_params(folder, cfg, fc)
        k = cfg.members
        draw = jax.jit(flows.sample_flow, static_argnums=(2, 3))
        per = -(-n // k)
        theta = np.concatenate([_draw_in_chunks(draw, jax.tree_util.tree_map(lambda x: x[m], params), jax.random.PRNGKey(seed + m),
                                                per, fc) for m in range(k)])[:n]
        log_q = _pooled_log_density(params, theta, fc)
    elif prior == "plain":
        theta = fitlib.draw_reference(cfg, n, seed)
        log_q = np.asarray(flows.log_reference_density(np.asarray(theta, np.float64), fc))
    else:
        raise ValueError(f"prior must be 'population' or 'plain', got {prior!r}")
    return {**bank_from_theta(model, theta, prior, float(cfg.z_range[1]), chunk), "log_q": np.asarray(log_q, np.float64)}


def _pooled_log_density(params, theta, fc, chunk: int = 65536) -> np.ndarray:
    """log of the pooled population's density at theta (M, 11): the equal-share mixture of the
    members' flows, log (1/K) sum_m q_m(theta), in chunks of draws."""
    import jax
    from jax.scipy.special import logsumexp

    from ..inference import flows

    f = jax.jit(lambda p, th: logsumexp(jax.vmap(flows.log_prob_flow, in_axes=(0, None, None))(p, th, fc), axis=0)
                - np.log(jax.tree_util.tree_leaves(p)[0].shape[0]))
    th = np.asarray(theta, np.float32)
    return np.concatenate([np.asarray(f(params, th[s:s + chunk])) for s in range(0, th.shape[0], chunk)]).astype(np.float64)


FLOW_CHUNK = 262_144  # flow draws per call: a 2.4-million-draw bank sampled in one call peaked at 12.8 GB


def _draw_in_chunks(draw, params, key, n: int, fc) -> np.ndarray:
    """n draws (n, 11) of one member's flow: in one call with ``key`` up to ``FLOW_CHUNK`` draws
    (the draws of every bank up to that size are as they were), else in calls of ``FLOW_CHUNK``
    draws with keys ``fold_in(key, i)``, so that memory does not grow with the bank."""
    import jax

    if n <= FLOW_CHUNK:
        return np.asarray(draw(params, key, n, fc))
    return np.concatenate([np.asarray(draw(params, jax.random.fold_in(key, i), FLOW_CHUNK, fc))
                           for i in range(-(-n // FLOW_CHUNK))])[:n]


def bank_from_theta(model, theta, prior: str, z_max: float, chunk: int = 16384) -> dict:
    """A bank from given parameter sets theta (M, 11) (draws from some prior): noiseless fluxes
    and the quantities of :data:`QUANTITIES`."""
    import jax
    import jax.numpy as jnp

    from ..physics import forward

    th = jnp.asarray(theta, jnp.float32)
    fluxes = jax.jit(forward.forward_fluxes, static_argnames="chunk_size")
    derive = jax.jit(forward.derived_quantities)
    # in chunks of draws from here: one call on millions of draws holds their SSP weights at once
    # (a 2.4-million-draw refinement bank peaked at 12.8 GB)
    flux = np.concatenate([np.asarray(fluxes(model, th[s:s + chunk], chunk_size=chunk)) for s in range(0, th.shape[0], chunk)])
    parts = [derive(model, th[s:s + chunk]) for s in range(0, th.shape[0], chunk)]
    der = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    theta = np.asarray(theta, np.float64)
    out = {"theta": theta, "flux": flux.astype(np.float64), "bands": tuple(model.bands), "prior": prior, "z_max": z_max}
    cols = {**{n_: theta[:, i] for i, n_ in enumerate(forward.PARAM_NAMES)}, **der}
    cols["log_sfr_100myr"] = log_sfr(cols["sfr_100myr"])
    out.update({q: np.asarray(cols[q], np.float64) for q in QUANTITIES})
    return out


def _on_fitted_bands(bank: dict, fitted, obs) -> dict:
    """The bank on the ``fitted`` bands, with ``log_prior`` (M,): the log probability that each
    draw passes the limits on the other bands (``observation.unfitted_selection_log_probability``
    of ``obs``; None: every band is fitted, nothing to add)."""
    if obs is None:
        return bank
    from ..survey.observation import unfitted_selection_log_probability

    idx = [bank["bands"].index(b) for b in fitted]
    lp = np.concatenate([np.asarray(unfitted_selection_log_probability(obs, bank["flux"][s:s + 65536]))
                         for s in range(0, bank["flux"].shape[0], 65536)])
    return {**bank, "flux": bank["flux"][:, idx], "bands": tuple(fitted), "log_prior": lp.astype(np.float64)}


def _population_params(folder, cfg, fc):
    import jax

    from ..inference import fit as fitlib
    from ..inference import flows

    keys = jax.random.split(jax.random.PRNGKey(cfg.seed + 777), cfg.members)
    params = jax.vmap(lambda kk: flows.init_flow(kk, fc))(keys)
    opt = jax.vmap(fitlib.make_optimizer(cfg).init)(params)
    ck = folder.load_latest_checkpoint(params, opt)
    if ck is None:
        raise FileNotFoundError(f"{folder.path} has no checkpoint: fit the run first")
    return ck[0]


def _weighted_quantiles(x, w, qs):
    """Quantiles qs of samples x (G, K) with weights w (G, K) (rows summing to 1)."""
    order = np.argsort(x, axis=1)
    xs = np.take_along_axis(x, order, 1)
    cw = np.cumsum(np.take_along_axis(w, order, 1), axis=1)
    cw /= cw[:, -1:]
    return [xs[np.arange(x.shape[0]), np.minimum((cw < q).sum(1), x.shape[1] - 1)] for q in qs]


def chunk_for_memory(bank_size: int, chunk: int, mem_gb: float) -> int:
    """Galaxies per chunk so that the ~6 (galaxies x bank) 8-byte arrays one chunk holds at once
    (chi2, log weights and their negative, weights, the top-k partition's indices) need about
    ``mem_gb`` GiB: at most ``chunk``, at least 1."""
    return int(np.clip(mem_gb * 2**30 // (6 * 8 * max(bank_size, 1)), 1, chunk))


def galaxy_posteriors(catalog, bank: dict, *, floor: float = 0.03, top_k: int | None = None, chunk: int = 256,
                      min_ess: float = 10.0, chi2_p: float = 1e-3, progress: bool = True, mem_gb: float = 2.0,
                      min_captured: float = 0.95):
    """Posterior summaries of every galaxy of ``catalog`` (a Catalog) given a bank from
    :func:`posterior_bank`: an astropy Table with id, z_spec (if any), for each quantity q of
    :data:`QUANTITIES` q_median, q_p16, q_p84 and q_map (at the bank draw of highest posterior
    density q(theta) x selection probability x likelihood, when the bank carries the prior's
    density ``log_q`` (M,); without it, at the draw of highest likelihood x selection
    probability; meta MAPDEF says which), p(z) on a grid (``pz``: the probability in each bin, bins of meta['ZGRIDSTP']
    from z = 0), ess, captured (the top-k weight fraction), chi2_best, n_bands_used, pit (NaN
    where there is no spec-z) and flag (ESS < ``min_ess``, an improbable chi2_best, no bands,
    or captured < ``min_captured``). Galaxies go in chunks of at most ``chunk``,
    fewer where the bank is large, so that the (galaxies x bank) work arrays stay near ``mem_gb`` GiB.
    A bank's optional ``log_prior`` (M,) multiplies each draw's weight by exp(log_prior): the
    probability that it passes the survey limits on bands the likelihood does not use."""
    from astropy.table import Table
    from scipy import stats
    from tqdm.auto import tqdm

    if tuple(catalog.bands) != tuple(bank["bands"]):
        raise ValueError(f"the catalog's bands {list(catalog.bands)} differ from the run's {list(bank['bands'])}: "
                         "the posterior needs the bands the population was fitted in, in that order")
    F = bank["flux"]  # (M, B)
    F2 = F**2
    log_prior = bank.get("log_prior")
    log_q = bank.get("log_q")  # the prior's density at each draw: the posterior's density is q x weight
    f, e = catalog.flux, catalog.flux_err
    ok = np.isfinite(f) & np.isfinite(e) & (e > 0)
    var = np.where(ok, e**2 + (floor * np.where(ok, f, 0.0)) ** 2, np.inf)
    ivar = np.where(ok, 1.0 / var, 0.0)
    fi = np.where(ok, f, 0.0) * ivar
    a = np.sum(np.where(ok, f, 0.0) ** 2 * ivar, 1)
    n, m = catalog.n, F.shape[0]
    k = min(top_k if top_k is not None else max(2000, m // 100), m)
    z_grid = np.arange(0.0, bank["z_max"] + Z_GRID_STEP / 2, Z_GRID_STEP)
    res = {q: np.empty((n, 4)) for q in QUANTITIES}
    ess, captured, chi2_best, pz = (np.empty(n), np.empty(n), np.empty(n), np.zeros((n, z_grid.size - 1), np.float32))
    pit = np.full(n, np.nan)
    z_spec = catalog.z_spec
    chunk = chunk_for_memory(m, chunk, mem_gb)
    for s in tqdm(range(0, n, chunk), desc="posteriors", unit="chunk", disable=not progress):
        sl = slice(s, min(s + chunk, n))
        chi2 = a[sl, None] - 2.0 * fi[sl] @ F.T + ivar[sl] @ F2.T  # (g, M)
        cmin = chi2.min(1)
        logw = -0.5 * (chi2 - cmin[:, None])
        if log_prior is not None:  # the draws' probability of passing the limits on unfitted bands
            logw = logw + log_prior[None, :]
            logw -= logw.max(1, keepdims=True)
        w_all = np.exp(logw)
        sw, sw2 = w_all.sum(1), (w_all**2).sum(1)
        ess[sl] = sw**2 / sw2
        idx = np.argpartition(-logw, k - 1, axis=1)[:, :k] if k < m else np.broadcast_to(np.arange(m), (chi2.shape[0], m))
        w = np.take_along_axis(w_all, idx, 1)
        captured[sl] = w.sum(1) / sw
        w /= w.sum(1, keepdims=True)
        chi2_best[sl] = cmin
        best = np.argmax(logw if log_q is None else logw + log_q[None, :], 1)  # over the whole bank
        for q in QUANTITIES:
            x = bank[q][idx]
            p16, p50, p84 = _weighted_quantiles(x, w, (0.16, 0.5, 0.84))
            res[q][sl] = np.stack([p50, p16, p84, bank[q][best]], 1)
        zs = bank["z"][idx]
        bins = np.clip(np.searchsorted(z_grid, zs, side="right") - 1, 0, z_grid.size - 2)
        for g in range(zs.shape[0]):
            pz[s + g] = np.bincount(bins[g], weights=w[g], minlength=z_grid.size - 1)
        if z_spec is not None:
            zsp = z_spec[sl]
            pit[sl] = np.where(np.isfinite(zsp), np.sum(w * (zs < zsp[:, None]), 1), np.nan)  # no spec-z: no PIT
    n_used = ok.sum(1)
    p_chi2 = stats.chi2.sf(chi2_best, np.maximum(n_used, 1))
    # also flagged: the top-k heaviest draws hold < 95% of the weight (the posterior is broader
    # than the k draws kept for its quantiles, which would come out too narrow)
    flag = (ess < min_ess) | (p_chi2 < chi2_p) | (n_used == 0) | (captured < min_captured)
    t = Table()
    t["id"] = catalog.ids
    if z_spec is not None:
        t["z_spec"] = z_spec
    for q in QUANTITIES:
        for j, suffix in enumerate(("median", "p16", "p84", "map")):
            t[f"{q}_{suffix}"] = res[q][:, j]
    t["pz"] = pz
    t["ess"], t["captured"], t["chi2_best"], t["n_bands_used"] = ess, captured, chi2_best, n_used
    t["p_chi2"] = p_chi2
    if z_spec is not None:
        t["pit"] = pit
    t["flag"] = flag
    t.meta.update(PRIOR=bank["prior"], NBANK=int(m), FLOOR=floor, TOPK=int(k), MINESS=min_ess, CHI2P=chi2_p, MINCAPT=min_captured,
                  MAPDEF="likelihood" if log_q is None else "posterior density",
                  ZGRIDLO=0.0, ZGRIDSTP=Z_GRID_STEP, BANDS=",".join(bank["bands"]))
    return t


PHOTOZ_SLICES = (0.0, 0.03, 0.06, 0.10, 0.15, np.inf)  # spec-z slices of photoz_metrics' "slices"


def photoz_metrics(t, outlier: float = 0.05, pit_bins: int = 10, slices=PHOTOZ_SLICES) -> dict:
    """Photo-z against spec-z of a posterior table: NMAD = 1.48 median |dz - median dz| / (1+z)
    (dz = z_median - z_spec), median bias dz/(1+z), outlier fraction |dz|/(1+z) > ``outlier``,
    the PIT histogram (``pit_bins`` bins) and its departure from uniform (max |h/uniform - 1|
    and the KS distance), over galaxies with a spec-z; flagged galaxies included and counted.
    ``slices``: the same (n, bias, NMAD, outlier fraction) in spec-z slices with these edges,
    to show where the outliers come from."""
    from scipy import stats

    zs = np.asarray(t["z_spec"], float)
    zp = np.asarray(t["z_median"], float)
    ok = np.isfinite(zs) & np.isfinite(zp)
    zs = zs[ok]
    dz = (zp[ok] - zs) / (1 + zs)
    pit = np.asarray(t["pit"], float)[ok]
    h, _ = np.histogram(pit, np.linspace(0, 1, pit_bins + 1))
    h = h / h.mean()

    def stats_of(d):
        if not d.size:
            return dict(n=0, bias=float("nan"), nmad=float("nan"), outlier_fraction=float("nan"))
        return dict(n=int(d.size), bias=float(np.median(d)), nmad=float(1.48 * np.median(np.abs(d - np.median(d)))),
                    outlier_fraction=float(np.mean(np.abs(d) > outlier)))

    per_slice = [dict(z_lo=float(lo), z_hi=float(hi) if np.isfinite(hi) else None, **stats_of(dz[(zs >= lo) & (zs < hi)]))
                 for lo, hi in zip(slices[:-1], slices[1:])]
    return dict(**stats_of(dz), pit_hist=h.tolist(),
                pit_max_departure=float(np.max(np.abs(h - 1))), pit_ks=float(stats.kstest(pit, "uniform").statistic),
                n_flagged=int(np.sum(np.asarray(t["flag"], bool))), slices=per_slice)


def posterior_catalog(run, catalog=None, out=None, *, prior: str = "population", n_bank: int = 200_000, floor: float = 0.03,
                      seed: int = 0, refine: int = 4, min_ess: float = 10.0, progress: bool = True):
    """Posteriors of every galaxy of ``catalog`` (default: the catalog the run fitted, with the
    run's survey limit applied) with the run's population (or ``prior="plain"``) as prior:
    writes ``out`` (default RUN/galaxies.fits, or RUN/galaxies_plain.fits) and, where the
    catalog has spec-z, RUN/photoz[_plain].json and the photo-z figure. Returns (table, metrics or None).

    Refinement: galaxies whose ESS is below ``min_ess`` are redone with ``refine`` times as many
    further draws from the same prior added to the bank (column ``refined``); 0 switches it off."""
    import json

    from ..inference import fit as fitlib
    from ..survey.catalog import Catalog, catalog_bands, load_catalog, sdss_bands_as
    from ..survey.observation import make_observation
    from ..survey.selection import select_catalog
    from . import plots
    from .runfolder import RunFolder
    from .science import _resolve_catalog

    folder = RunFolder(run)
    cfg = folder.read_config()
    info = folder.read_json("run_info")
    if catalog is None:
        cat = load_catalog(_resolve_catalog(info, folder.path), extra=cfg.selection_bands)
        cat = select_catalog(cat, cfg.limit) if cfg.limit else cat
    else:
        cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog, extra=cfg.selection_bands)
    cat = sdss_bands_as(cat, info["bands"])  # a run made with speclite's sdss2010 curves reads today's SDSS file
    # the likelihood uses the fitted bands only; a selection band (the SDSS sample's 2MASS Ks) enters as the
    # probability that the galaxy was selected
    fitted = fitlib.fit_bands(cfg, cat.bands)
    cat = catalog_bands(cat, fitted)
    obs = make_observation(folder.read_noise_model(), cfg.limit, feature_bands=fitted) if fitted != tuple(info["bands"]) else None
    bank = _on_fitted_bands(posterior_bank(folder.path, n_bank, prior=prior, seed=seed), fitted, obs)
    t = galaxy_posteriors(cat, bank, floor=floor, min_ess=min_ess, progress=progress)
    t["refined"] = np.zeros(len(t), bool)
    low = np.nonzero(np.asarray(t["ess"]) < min_ess)[0]
    if refine and low.size:
        from ..survey.catalog import catalog_subset

        # member m of the first bank drew with key seed + m: the extra draws start past them
        more = _on_fitted_bands(posterior_bank(folder.path, refine * n_bank, prior=prior, seed=seed + max(int(cfg.members), 1)),
                                fitted, obs)
        big = {k: (np.concatenate([bank[k], more[k]]) if isinstance(bank[k], np.ndarray) else bank[k]) for k in bank}
        keep = np.zeros(cat.n, bool)
        keep[low] = True
        redo = galaxy_posteriors(catalog_subset(cat, keep), big, floor=floor, min_ess=min_ess, progress=progress)
        for c in redo.colnames:
            t[c][low] = redo[c]
        t["refined"][low] = True
        t.meta["NBANKREF"] = int(big["flux"].shape[0])
    def named(key):  # the run folder's file, with _plain before the extension for the plain prior
        p = folder[key]
        return p if prior == "population" else p.with_name(p.stem + "_plain" + p.suffix)

    path = out if out is not None else named("galaxies")
    t.write(path, overwrite=True)
    metrics = None
    if "z_spec" in t.colnames and np.isfinite(np.asarray(t["z_spec"], float)).any():
        metrics = {**photoz_metrics(t), "prior": prior, "n_bank": int(n_bank), "floor": floor,
                   "frac_flagged": float(np.mean(np.asarray(t["flag"], bool))),
                   "median_ess": float(np.median(np.asarray(t["ess"]))), "frac_refined": float(np.mean(t["refined"]))}
        named("photoz").write_text(json.dumps(metrics, indent=1))
        plots.plot_photoz(t, named("photoz_plot"), metrics)
    return t, metrics

