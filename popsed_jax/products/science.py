"""Science products of a fitted population: derived quantities, n(z), stellar mass function, main sequence.

All functions take *population samples* (RUN/samples.fits as an astropy Table or a dict of
(N,) arrays with the columns that ``runs.write_products`` writes: the 11 parameters,
``logM_surviving``, ``sfr_100myr``, ``sfr_10myr``, ``log_ssfr_100myr``, ``age_mw``,
``t_universe``, ``selected`` and optionally ``member``). The samples describe the INTRINSIC
population (before selection); ``selected`` marks those the survey would observe.

Conventions
-----------
* log SFR: ``log10(max(SFR, SFR_FLOOR))`` with ``SFR_FLOOR = 1e-6`` Msun/yr, so galaxies with
  no star formation in the window (pure old bursts: exactly 0) sit at -6 instead of -inf.
  ``log_ssfr_100myr`` is clipped at ``LOG_SSFR_FLOOR = -14`` [1/yr] (as ``evaluate`` does).
* Stellar mass = ``logM_surviving`` (living stars + remnants, BC03 Chabrier), Planck15
  (h = 0.6774) units; volumes are comoving Mpc^3 of astropy's Planck15
  (= ``cosmology.PLANCK15``).
* Every selected sample stands for ``w = N_catalog_selected / N_samples_selected`` observed
  galaxies (per ensemble member when members are treated separately).

Reference relations (coded here with citations): Baldry et al. (2012, MNRAS 421, 621)
double-Schechter GSMF (parameters from ``mock.BALDRY12``), Speagle et al. (2014, ApJS 214,
15, eq. 28) and Renzini & Peng (2015, ApJL 801, L29) star-forming main sequences.
"""
from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from ..physics import forward
from ..survey.selection import band_index, parse_limits, select_catalog
from . import plots
from ..survey.catalog import is_shipped_sdss
from ..physics.params import LOG_SSFR_FLOOR, SFR_FLOOR, log_sfr
from ..physics.relations import KROUPA_TO_CHABRIER_DEX, baldry12_smf, renzini_peng15_sfms, speagle14_sfms  # noqa: F401

__all__ = [
    "SFR_FLOOR", "LOG_SSFR_FLOOR", "FULL_SKY_DEG2", "DEFAULT_QUANTITIES", "KROUPA_TO_CHABRIER_DEX",
    "log_sfr", "population_summary", "nz_comparison", "zmax_forward", "comoving_volume",
    "vmax", "vmax_smf", "baldry12_smf", "speagle14_sfms", "renzini_peng15_sfms",
    "quiescent_fraction", "star_forming_fraction", "make_science_products",
]

FULL_SKY_DEG2 = 41252.96  # deg^2 in 4 pi sr
DEFAULT_QUANTITIES = ("logM_surviving", "log_sfr_100myr", "log_sfr_10myr", "log_ssfr_100myr", "age_mw", "logZ", "z")
SMF_BINS = np.arange(8.0, 12.41, 0.2)
SDSS_NOTE = ("the SDSS file has no survey area or sampling rate: the SMF normalisation is unknown "
             "(phi is given per unit sky fraction x sampling rate)")


# ----------------------------------------------------------------------------------------
# columns
# ----------------------------------------------------------------------------------------
def _as_columns(samples) -> dict:
    """dict / astropy Table -> dict of 1-D numpy arrays."""
    if hasattr(samples, "colnames"):
        return {c: np.asarray(samples[c]) for c in samples.colnames if samples[c].ndim == 1}
    return {k: np.asarray(v) for k, v in dict(samples).items()}


def _quantity(cols: dict, q: str) -> np.ndarray:
    """Column q, computing log SFRs / sSFR from the SFR columns where needed."""
    if q in ("log_sfr_100myr", "log_sfr_10myr") and q not in cols:
        src = q[len("log_"):]
        if src not in cols:
            raise ValueError(f"samples lack column {src!r} needed for {q!r}")
        return log_sfr(cols[src])
    if q == "log_ssfr_100myr":
        if q in cols:
            return np.maximum(np.asarray(cols[q], float), LOG_SSFR_FLOOR)
        if "sfr_100myr" in cols and "logM_surviving" in cols:
            v = np.log10(np.maximum(np.asarray(cols["sfr_100myr"], float), 1e-30)) - np.asarray(cols["logM_surviving"], float)
            return np.maximum(v, LOG_SSFR_FLOOR)
    if q not in cols:
        raise ValueError(f"samples lack column {q!r}; have {sorted(cols)}")
    return np.asarray(cols[q], float)


def _members(cols: dict, n: int) -> np.ndarray:
    return np.asarray(cols["member"], int) if "member" in cols else np.zeros(n, int)


def _selected(cols: dict) -> np.ndarray:
    if "selected" not in cols:
        raise ValueError("samples lack the 'selected' column (which samples pass the survey limit)")
    return np.asarray(cols["selected"], bool)


def _jsonable(x):
    """numpy -> JSON types, NaN/inf -> None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


# ----------------------------------------------------------------------------------------
# 1. derived quantities with ensemble spread
# ----------------------------------------------------------------------------------------
def population_summary(samples, quantities=DEFAULT_QUANTITIES, selected_only: bool = True) -> dict:
    """Pooled median and 16/84 percentiles of each quantity, and per-member medians.

    samples: dict or Table of (N,) columns. quantities: column names; ``log_sfr_100myr`` /
    ``log_sfr_10myr`` are computed as ``log_sfr(sfr_*)`` (floor 1e-6 Msun/yr) if absent,
    ``log_ssfr_100myr`` is clipped at -14. selected_only: use only rows with ``selected``.
    Returns {q: {median, p16, p84, n, member_medians (K,), member_median_mean,
    member_median_std (std over members, ddof=0; NaN with one member)}} plus
    ``_meta`` = {n_members, n_rows, selected_only}.
    """
    cols = _as_columns(samples)
    n = len(next(iter(cols.values())))
    keep = _selected(cols) if selected_only else np.ones(n, bool)
    mem = _members(cols, n)
    ids = np.unique(mem)
    out: dict = {}
    for q in quantities:
        x = _quantity(cols, q)
        xs = x[keep & np.isfinite(x)]
        p16, p50, p84 = np.percentile(xs, [16, 50, 84]) if xs.size else (np.nan,) * 3
        med_m = []
        for m in ids:
            xm = x[keep & (mem == m) & np.isfinite(x)]
            med_m.append(float(np.median(xm)) if xm.size else np.nan)
        med_m = np.asarray(med_m)
        out[q] = dict(median=float(p50), p16=float(p16), p84=float(p84), n=int(xs.size),
                      member_medians=med_m.tolist(),
                      member_median_mean=float(np.nanmean(med_m)) if np.isfinite(med_m).any() else np.nan,
                      member_median_std=float(np.nanstd(med_m)) if np.isfinite(med_m).sum() > 1 else np.nan)
    out["_meta"] = dict(n_members=int(ids.size), n_rows=int(keep.sum()), selected_only=bool(selected_only))
    return out


# ----------------------------------------------------------------------------------------
# 2. n(z)
# ----------------------------------------------------------------------------------------
def _weighted_median(x, w=None):
    x = np.asarray(x, float)
    if w is None:
        return float(np.median(x))
    o = np.argsort(x)
    c = np.cumsum(np.asarray(w, float)[o])
    return float(x[o][np.searchsorted(c, 0.5 * c[-1])])


def nz_comparison(z_pop, z_spec, weights=None) -> dict:
    """Compare the redshifts of (selected) population samples with a catalog's spec-z.

    z_pop: (N,), z_spec: (M,) (non-finite values dropped), weights: optional (N,) weights of
    the population samples. Returns w1 (1-D Wasserstein distance, scipy), median_pop,
    median_spec, mean_pop, mean_spec, n_pop, n_spec.
    """
    z_pop = np.asarray(z_pop, float)
    z_spec = np.asarray(z_spec, float)
    ok = np.isfinite(z_pop)
    w = None if weights is None else np.asarray(weights, float)[ok]
    z_pop, z_spec = z_pop[ok], z_spec[np.isfinite(z_spec)]
    if z_pop.size == 0 or z_spec.size == 0:
        raise ValueError(f"n(z) comparison needs samples on both sides (population {z_pop.size}, spec-z {z_spec.size})")
    return dict(
        w1=float(stats.wasserstein_distance(z_pop, z_spec, u_weights=w)),
        median_pop=_weighted_median(z_pop, w), median_spec=float(np.median(z_spec)),
        mean_pop=float(np.average(z_pop, weights=w)), mean_spec=float(np.mean(z_spec)),
        n_pop=int(z_pop.size), n_spec=int(z_spec.size),
    )


# ----------------------------------------------------------------------------------------
# 3. stellar mass function, 1/Vmax
# ----------------------------------------------------------------------------------------
def _grid_fluxes(model, theta, zg, band: int):
    """(n, 11), (nz,) -> (n, nz) noiseless flux in `band` with z replaced by each zg."""
    n, nz = theta.shape[0], zg.shape[0]
    th = jnp.repeat(theta, nz, axis=0).at[:, 0].set(jnp.tile(zg, n))
    return forward.forward_fluxes(model, th)[:, band].reshape(n, nz)


def _point_fluxes(model, theta, z, band: int):
    return forward.forward_fluxes(model, theta.at[:, 0].set(z))[:, band]


_grid_fluxes_jit = jax.jit(_grid_fluxes, static_argnames="band")
_point_fluxes_jit = jax.jit(_point_fluxes, static_argnames="band")


def _mag(f):
    return 22.5 - 2.5 * np.log10(np.maximum(np.asarray(f, float), 1e-30))


def _refine_crossings(model, theta, gi, a_x, a_m, b_x, b_m, band, mag_lim, refine, chunk):
    """Regula falsi (safeguarded) in ln z on brackets [a_x, b_x] of crossings of mag_lim.

    gi: galaxy index of each bracket; a_m / b_m: magnitudes at the bracket ends (one side
    brighter than the limit). Returns the crossing ln z of every bracket."""
    dt = model.ssp_all.dtype
    a_x, a_m, b_x, b_m = (np.array(v, float) for v in (a_x, a_m, b_x, b_m))
    for it in range(refine + 1):
        t = (mag_lim - a_m) / np.where(b_m != a_m, b_m - a_m, 1.0)
        t = np.clip(t, 0.0, 1.0) if it == refine else np.clip(t, 0.05, 0.95)  # safeguard: the bracket always shrinks
        x = a_x + t * (b_x - a_x)
        if it == refine or x.size == 0:
            return x
        mx = np.empty(x.size)
        for s in range(0, x.size, chunk):
            idx = np.arange(s, min(s + chunk, x.size))
            pad = np.concatenate([idx, np.full(chunk - idx.size, idx[0])])
            f = _point_fluxes_jit(model, jnp.asarray(theta[gi[pad]], dt), jnp.asarray(np.exp(x[pad]), dt), band)
            mx[idx] = _mag(f)[: idx.size]
        same_a = (mx < mag_lim) == (a_m < mag_lim)  # crossing lies between x and b
        a_x, a_m = np.where(same_a, x, a_x), np.where(same_a, mx, a_m)
        b_x, b_m = np.where(same_a, b_x, x), np.where(same_a, b_m, mx)
    return x


def zmax_forward(model, theta, band: int, mag_lim: float, z_range, n_z: int = 40, chunk: int = 256, refine: int = 3) -> np.ndarray:
    """Redshift to which each galaxy would still pass ``mag < mag_lim`` in ``band``, (N,).

    theta: (N, 11); every parameter but z is held fixed (t_u, hence the SFH truncation and
    whether a burst older than the universe exists, follows z as in the forward model).
    Noiseless magnitudes from ``forward.forward_fluxes`` on a geometric grid of ``n_z``
    redshifts over z_range = (z_min, z_hi) (z_hi <= model.z_max); each crossing of the limit
    between nodes is interpolated linearly in ln z and refined by ``refine`` regula-falsi steps
    with the forward model. The visible comoving volume V_vis between z_min and z_hi is summed
    over all visible intervals, and z_max is *effective*: V_c(z_max) - V_c(z_min) = V_vis.
    Usually visibility is the single interval [z_min, z_cross] and z_max = z_cross; it is not
    when an old burst drops out as t_u(z) falls below t_burst and the galaxy brightens again.
    Returns z_min for a galaxy invisible everywhere, z_hi for one visible everywhere.
    """
    z_lo, z_hi = float(z_range[0]), float(z_range[1])
    if not 0 < z_lo < z_hi:
        raise ValueError(f"z_range must satisfy 0 < z_min < z_max, got {z_range}")
    if z_hi > model.z_max + 1e-9:
        raise ValueError(f"z_range upper end {z_hi} exceeds the forward model's z_max {model.z_max}")
    theta = np.asarray(theta, float)
    n = theta.shape[0]
    if n == 0:
        return np.zeros(0)
    dt = model.ssp_all.dtype
    zg = np.geomspace(z_lo, z_hi, n_z)
    lnz = np.log(zg)
    mags = np.empty((n, n_z))
    for s in range(0, n, chunk):
        th = theta[s:s + chunk]
        m = th.shape[0]
        if m < chunk:  # pad to a fixed shape: one compilation
            th = np.concatenate([th, np.repeat(th[:1], chunk - m, 0)])
        mags[s:s + m] = _mag(_grid_fluxes_jit(model, jnp.asarray(th, dt), jnp.asarray(zg, dt), band))[:m]
    vis = mags < mag_lim
    vg = comoving_volume(zg)
    # intervals visible at both ends count whole
    v_vis = ((vis[:, :-1] & vis[:, 1:]) * np.diff(vg)[None]).sum(1)
    gi, k = np.nonzero(vis[:, :-1] != vis[:, 1:])  # crossings
    x = _refine_crossings(model, theta, gi, lnz[k], mags[gi, k], lnz[k + 1], mags[gi, k + 1], band, mag_lim, refine, chunk)
    vx = comoving_volume(np.exp(x))
    part = np.where(vis[gi, k], vx - vg[k], vg[k + 1] - vx)  # visible below / above the crossing
    np.add.at(v_vis, gi, part)
    # effective z_max from the visible volume (dense table, linear in V)
    zt = np.geomspace(z_lo, z_hi, 4001)
    vt = comoving_volume(zt) - vg[0]
    return np.clip(np.interp(v_vis, vt, zt), z_lo, z_hi)


def comoving_volume(z) -> np.ndarray:
    """Full-sky comoving volume [Mpc^3] within redshift z (astropy Planck15)."""
    from astropy.cosmology import Planck15

    z = np.asarray(z, float)
    if z.size == 0:
        return np.zeros(z.shape)
    return np.asarray(Planck15.comoving_volume(z).value)


def vmax(z_max, z_min: float, area_deg2: float | None = None) -> np.ndarray:
    """V_max = (area / 41252.96 deg^2) * (V_c(z_max) - V_c(z_min)) [Mpc^3]; area None -> full sky."""
    frac = 1.0 if area_deg2 is None else float(area_deg2) / FULL_SKY_DEG2
    return frac * (comoving_volume(z_max) - comoving_volume(z_min))


def vmax_smf(samples, model, limit: str, z_range, n_catalog: int, area_deg2: float | None = None, bins=SMF_BINS,
             sampling_rate: float = 1.0, z_cut: float = 0.1, n_z: int = 40, chunk: int = 256, z_max=None) -> dict:
    """Stellar mass function of the population by 1/V_max over its selected samples.

    samples: Table/dict with the parameter columns, ``logM_surviving``, ``selected`` (and
    ``member``); model: forward model with the survey bands and z_max >= z_range[1];
    limit: e.g. 'r<17.77'; z_range: the fit's (z_min, z_hi); n_catalog: number of *observed*
    galaxies passing the limit; bins: logM_surviving bin edges [dex]. Each selected sample
    carries w = n_catalog / N_selected_samples; its z_max comes from :func:`zmax_forward`
    (pass precomputed ``z_max`` (N_selected,) to skip it); V_max = area fraction x
    (V_c(z_max) - V_c(z_min)). phi(logM) = sum_bin w / V_max / dlogM [Mpc^-3 dex^-1] /
    sampling_rate.

    area_deg2=None: the area (and, for a subsampled catalog, the sampling rate) is unknown --
    the case of the project's SDSS file, which lacks both the survey area and the sampling
    rate. V_max is then the full-sky volume and phi is the *shape* only: the true
    phi = returned phi / (area / 41252.96) / sampling_rate (``normalized`` = False).

    Also the intrinsic mass function of the population: histogram of logM_surviving of all
    samples with z < z_cut, times w, over the volume between z_min and z_cut (same units).
    Returns bins, logM (centres), dlogM, phi, phi_err (the Poisson error of the population's
    weighted draws, sqrt(sum (w / V_max)^2) / dlogM: with w = n_catalog / n_selected it is
    sqrt(w) times the survey's own Poisson error and shrinks as more draws are taken; not an
    error on the survey's mass function), phi_members (K, n_bins),
    phi_member_std, phi_intrinsic, phi_intrinsic_members, weight, n_selected, z_max, vmax,
    normalized, units.
    """
    cols = _as_columns(samples)
    sel = _selected(cols)
    n = sel.size
    mem = _members(cols, n)
    bins = np.asarray(bins, float)
    dlogm = np.diff(bins)
    logm = _quantity(cols, "logM_surviving")
    z_lo, z_hi = float(z_range[0]), float(z_range[1])
    if z_max is None:
        theta = forward.theta_from_columns(cols)[sel]
        # every limit (a completeness at its 50% point): the nearest z at which one fails
        z_max = np.min([zmax_forward(model, theta, band_index(model.bands, band), lim, (z_lo, z_hi), n_z=n_z, chunk=chunk)
                        for band, lim, _ in parse_limits(limit, model.bands)], axis=0)
    z_max = np.clip(np.asarray(z_max, float), z_lo, z_hi)
    if z_max.shape != (int(sel.sum()),):
        raise ValueError(f"z_max has shape {z_max.shape}, expected ({int(sel.sum())},) (one per selected sample)")
    v = vmax(z_max, z_lo, area_deg2)
    frac = 1.0 if area_deg2 is None else float(area_deg2) / FULL_SKY_DEG2
    z_c = min(float(z_cut), z_hi)
    v_cut = frac * float(comoving_volume(z_c) - comoving_volume(z_lo))
    lm_s, mem_s = logm[sel], mem[sel]
    inv_v = np.where(v > 0, 1.0 / np.where(v > 0, v, 1.0), 0.0)

    def phis(mask_sel, mask_all, n_sel):
        w = n_catalog / max(n_sel, 1) / sampling_rate
        phi = np.histogram(lm_s[mask_sel], bins, weights=w * inv_v[mask_sel])[0] / dlogm
        err = np.sqrt(np.histogram(lm_s[mask_sel], bins, weights=(w * inv_v[mask_sel]) ** 2)[0]) / dlogm
        intr = np.histogram(logm[mask_all], bins)[0] * w / v_cut / dlogm
        return phi, err, intr, w

    low_z = _quantity(cols, "z") < z_c
    phi, err, intr, w = phis(np.ones(lm_s.size, bool), low_z, int(sel.sum()))
    ids = np.unique(mem)
    per = [phis(mem_s == m, low_z & (mem == m), int((mem_s == m).sum())) for m in ids]
    phi_m = np.array([p[0] for p in per])
    intr_m = np.array([p[2] for p in per])
    units = "Mpc^-3 dex^-1" if area_deg2 is not None else "Mpc^-3 dex^-1 x (area/41252.96 deg^2) x sampling rate"
    return dict(
        bins=bins, logM=0.5 * (bins[1:] + bins[:-1]), dlogM=dlogm, phi=phi, phi_err=err,
        phi_members=phi_m, phi_member_std=phi_m.std(0) if ids.size > 1 else np.full(phi.size, np.nan),
        phi_intrinsic=intr, phi_intrinsic_members=intr_m, z_cut=z_c, weight=w, n_selected=int(sel.sum()),
        n_catalog=int(n_catalog), z_max=z_max, vmax=v, z_min=z_lo, area_deg2=area_deg2, sampling_rate=sampling_rate,
        normalized=area_deg2 is not None, units=units,
        note=None if area_deg2 is not None else SDSS_NOTE,
    )


def _match_scale(logm, phi, lo=10.0, hi=11.3):
    """Factor A minimising sum (log10(A phi) - log10 phi_Baldry)^2 over lo <= logM <= hi."""
    ok = (logm >= lo) & (logm <= hi) & (phi > 0)
    if not ok.any():
        return np.nan
    return float(10 ** np.mean(np.log10(baldry12_smf(logm[ok])) - np.log10(phi[ok])))


# ----------------------------------------------------------------------------------------
# 4. star-forming main sequence
# ----------------------------------------------------------------------------------------
def quiescent_fraction(log_ssfr, threshold: float = -11.0, weights=None) -> float:
    """Fraction (weighted if ``weights``) with log sSFR [1/yr] < threshold; NaNs ignored
    (-inf counts as quiescent). NaN for an empty input."""
    x = np.asarray(log_ssfr, float)
    ok = ~np.isnan(x)
    w = np.ones(x.size) if weights is None else np.asarray(weights, float)
    if not ok.any() or w[ok].sum() <= 0:
        return float("nan")
    return float(np.sum(w[ok] * (x[ok] < threshold)) / np.sum(w[ok]))


def star_forming_fraction(log_ssfr, threshold: float = -11.0, weights=None) -> float:
    """1 - quiescent_fraction: fraction with log sSFR >= threshold."""
    return 1.0 - quiescent_fraction(log_ssfr, threshold, weights)


def _sfms_data(cols, z_max, threshold):
    sel = _selected(cols) & (_quantity(cols, "z") < z_max)
    return dict(logm=_quantity(cols, "logM_surviving")[sel], lsfr=_quantity(cols, "log_sfr_100myr")[sel],
                lssfr=_quantity(cols, "log_ssfr_100myr")[sel], member=_members(cols, sel.size)[sel],
                t_u=float(np.median(_quantity(cols, "t_universe")[sel])) if sel.any() and "t_universe" in cols else 13.0)


# ----------------------------------------------------------------------------------------
# 5. everything for a run folder
# ----------------------------------------------------------------------------------------
def _resolve_catalog(info: dict, run: Path) -> str:
    """The catalog a run fitted, from its run_info.json: the recorded absolute path, checked
    against the recorded SHA-256 (runs from before it was recorded: the name, tried relative
    to the working directory and the run folder's parents)."""
    from .runfolder import file_sha256

    spec = info["catalog"]
    if is_shipped_sdss(spec):
        return spec
    path = info.get("catalog_path")
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"the catalog {path} that {run} fitted is gone; pass catalog=")
        if info.get("catalog_sha256") and file_sha256(path) != info["catalog_sha256"]:
            raise ValueError(f"the catalog {path} has changed since {run} fitted it (SHA-256 differs); pass catalog= "
                             "to use it anyway")
        return path
    if Path(spec).is_absolute() or Path(spec).exists():
        return spec
    for base in (run, run.parent, run.parent.parent):
        if (base / spec).exists():
            return str(base / spec)
    raise FileNotFoundError(f"catalog {spec!r} named in {run / 'run_info.json'} not found (tried the working directory and "
                            f"{run}, {run.parent}, {run.parent.parent}); pass catalog=")


def make_science_products(run, catalog=None, area_deg2: float | None = None, out=None, sampling_rate: float = 1.0,
                          model=None, n_z: int = 40, independent: bool = True) -> dict:
    """n(z), SMF, SFMS figures and science.json for a finished run folder.

    run: folder with samples.fits, config.json and (unless ``catalog`` is given)
    run_info.json; catalog: 'sdss', a path or a ``catalog.Catalog``; the config's limit is
    applied with ``selection.select_catalog`` to get the observed sample and its spec-z.
    area_deg2 / sampling_rate: survey area and spectroscopic sampling rate for the SMF
    normalisation (the SDSS file has neither: shape only). out: output folder (default run).
    model: a prebuilt forward model with the run's bands and z_max >= z_range[1] (optional).
    independent: also compare the population's stellar masses with kcorrect's at the spec-z
    (masses_vs_kcorrect.png; needs the optional ``kcorrect`` package and a catalog with spec-z).
    Writes nz.png, smf.png, sfms.png, science.json; returns the science.json dict.
    """
    from ..survey.catalog import Catalog, load_catalog
    from .runfolder import RunFolder

    for name, v in (("area_deg2", area_deg2), ("sampling_rate", sampling_rate)):
        if v is not None and not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    if area_deg2 is not None and area_deg2 > FULL_SKY_DEG2:
        raise ValueError(f"area_deg2 = {area_deg2} exceeds the whole sky ({FULL_SKY_DEG2:.2f} deg^2)")
    folder = RunFolder(run)
    run = folder.path
    if not run.is_dir():
        raise FileNotFoundError(f"run folder not found: {run}")
    for key in ("samples", "config"):
        if not folder.exists(key):
            raise FileNotFoundError(f"{folder[key]} not found: is {run} a finished run folder?")
    cfg = folder.read_config()
    info = folder.read_json("run_info", required=False) or {}
    if catalog is None:
        if "catalog" not in info:
            raise FileNotFoundError(f"{folder['run_info']} (naming the fitted catalog) not found: pass catalog=")
        catalog = _resolve_catalog(info, run)
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog, extra=cfg.selection_bands)
    cat_name = "Catalog object" if isinstance(catalog, Catalog) else str(catalog)
    obs = select_catalog(cat, cfg.limit) if cfg.limit else cat
    out = RunFolder(out if out is not None else run).create()

    tab = folder.read_samples()
    cols = _as_columns(tab)
    sel = _selected(cols)
    mem = _members(cols, sel.size)
    notes = []
    result: dict = dict(run=str(run), catalog=cat_name, limit=cfg.limit, z_range=list(cfg.z_range),
                        n_catalog=int(cat.n), n_catalog_selected=int(obs.n), n_samples=int(sel.size),
                        n_samples_selected=int(sel.sum()), n_members=int(np.unique(mem).size))

    # n(z)
    z_spec = obs.z_spec
    if z_spec is not None and np.isfinite(z_spec).any():
        nz = nz_comparison(cols["z"][sel], z_spec)
        per = [nz_comparison(cols["z"][sel & (mem == m)], z_spec)["w1"] for m in np.unique(mem)]
        nz["w1_members"] = per
        plots.plot_nz(cols["z"][sel], z_spec, out["nz_plot"], members=mem[sel])
    else:
        nz = dict(w1=None, median_pop=float(np.median(cols["z"][sel])), note="catalog has no spec-z: no n(z) comparison")
        notes.append(nz["note"])
        plots.plot_nz(cols["z"][sel], None, out["nz_plot"], members=mem[sel])
    result["nz"] = nz

    result["population_summary"] = population_summary(cols, selected_only=True)
    result["population_summary_intrinsic"] = population_summary(cols, selected_only=False)

    # SFMS
    sf = plots.plot_sfms(cols, out["sfms_plot"])
    lss = _quantity(cols, "log_ssfr_100myr")
    result["quiescent_fraction"] = dict(
        threshold=-11.0, selected_z_lt_0p1=sf["quiescent_fraction"], selected_z_lt_0p1_members=sf["qf_members"],
        selected_all_z=quiescent_fraction(lss[sel]), intrinsic_all=quiescent_fraction(lss))
    result["sfms"] = {k: v for k, v in sf.items() if k not in ("qf_members",)}

    # SMF
    if cfg.limit:
        bands = tuple(info.get("bands") or [c[len("flux_"):] for c in tab.colnames if c.startswith("flux_")])
        if model is None or tuple(model.bands) != bands or model.z_max < cfg.z_range[1] - 1e-9:
            from ..inference.fit import forward_model_for

            model = forward_model_for(cfg, bands)
        smf = vmax_smf(cols, model, cfg.limit, cfg.z_range, obs.n, area_deg2=area_deg2, sampling_rate=sampling_rate, n_z=n_z)
        if area_deg2 is None:
            notes.append(SDSS_NOTE if is_shipped_sdss(cat_name) else
                         "no survey area given: SMF normalisation unknown (phi per unit sky fraction x sampling rate)")
        pinfo = plots.plot_smf(smf, out["smf_plot"], sdss=is_shipped_sdss(cat_name))
        result["smf"] = {k: v for k, v in smf.items() if k not in ("z_max", "vmax")}
        result["smf"].update(pinfo, z_max_median=float(np.median(smf["z_max"])) if smf["z_max"].size else None,
                             baldry12_phi=baldry12_smf(smf["logM"]))
    else:
        notes.append("no survey limit in the config: no 1/Vmax SMF")
        result["smf"] = None
    # independent stellar masses (kcorrect at the spec-z), where the catalog and package allow
    if independent and z_spec is not None and np.isfinite(z_spec).any():
        try:
            result["independent_masses"] = compare_with_kcorrect(cols, obs, out["masses_plot"])
        except ImportError as err:
            notes.append(f"no independent masses: {err}")
    result["notes"] = notes
    result = _jsonable(result)
    out.write_json("science", result, indent=1)
    return result


# ----------------------------------------------------------------------------------------
# 6. an independent estimate: kcorrect stellar masses of the same galaxies
# ----------------------------------------------------------------------------------------
def compare_with_kcorrect(cols: dict, obs, path) -> dict:
    """Population (selected) vs kcorrect (Blanton & Roweis 2007) stellar masses of the observed
    catalog at its spec-z, both surviving mass (stars + remnants, Chabrier, Planck15, Msun):
    the whole samples and in redshift slices, where the distance-mass degeneracy is removed.
    Writes a figure at ``path``; returns medians, 16-84% ranges, offsets and W1 [dex]."""
    from ..survey.independent import compare_mass_distributions, kcorrect_masses

    kc = kcorrect_masses(obs)
    ok = np.asarray(kc["ok"], bool) & np.isfinite(kc["logM_surviving_kc"])
    m_kc, z_kc = np.asarray(kc["logM_surviving_kc"])[ok], np.asarray(kc["z"])[ok]
    sel = _selected(cols)
    m_pop, z_pop = _quantity(cols, "logM_surviving")[sel], np.asarray(cols["z"], float)[sel]
    res = dict(all=compare_mass_distributions(m_pop, m_kc), slices=[])
    edges = (0.02, 0.06, 0.1, 0.15, 0.25)
    for lo, hi in zip(edges[:-1], edges[1:]):
        a, b = (z_pop >= lo) & (z_pop < hi), (z_kc >= lo) & (z_kc < hi)
        if a.sum() >= 20 and b.sum() >= 20:
            res["slices"].append(dict(z_lo=lo, z_hi=hi, **compare_mass_distributions(m_pop[a], m_kc[b])))
    plots.plot_masses_vs_kcorrect(res, m_pop, m_kc, path)
    return res


def format_products(res: dict) -> str:
    """A few readable lines of a science.json dict (for the command line)."""
    lines = [f"science products of {res.get('run')}"]
    nz = res.get("nz") or {}
    if nz.get("w1") is not None:
        lines.append(f"  n(z): W1 vs spec-z = {nz['w1']:.4f}; median z population {nz['median_pop']:.3f} vs spec-z {nz['median_spec']:.3f}")
    for q, v in (res.get("population_summary") or {}).items():
        if isinstance(v, dict) and v.get("median") is not None:
            lines.append(f"  {q:<18} median {v['median']:8.3f}   16-84%: {v['p16']:.3f} .. {v['p84']:.3f}")
    qf = res.get("quiescent_fraction") or {}
    if qf.get("selected_z_lt_0p1") is not None:
        lines.append(f"  quiescent fraction (sSFR < 1e-11/yr, selected, z < 0.1): {qf['selected_z_lt_0p1']:.3f}")
    ind = (res.get("independent_masses") or {}).get("all")
    if ind:
        lines.append(f"  log M* vs kcorrect: median {ind['median_pop']:.3f} vs {ind['median_kc']:.3f} (offset {ind['median_offset']:+.3f}), W1 {ind['w1']:.3f} dex")
    lines += [f"  note: {n}" for n in res.get("notes", [])]
    return "\n".join(lines)
