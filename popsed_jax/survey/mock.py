"""Mock surveys: the paper's Table-2 population, observed like the SDSS main sample.

Population (docs/design.md section 2, the paper's Table 2; TN(mu, sd) on [lo, hi] is a
normal truncated to the interval)::

    kappa1 ~ TN(0.5, 0.3) on [0, 1]        kappa2, kappa3 ~ U(0, 1)
    t_burst ~ TN(12, 7) on [0.01, 13.27]   f_burst ~ TN(0.1, 0.7) on [0, 1]
    logZ ~ TN(-1.2, 0.9) on [-2.6, 0.3]    n_dust ~ TN(2, 2) on [-3, 1]
    tau1 ~ TN(1, 0.8) on [0, 3]            tau2 ~ TN(0.6, 0.8) on [0, 3]

(z, logM): the paper took these from GAMA DR3, which we do not have. Instead the default
is a *volume-weighted, non-evolving* population, independent in z and mass:

* z ~ dV_c/dz (Planck15, astropy) on [0.005, 0.4] -- uniform in comoving volume;
  r < 17.77 sees essentially nothing beyond z = 0.4 at logM <= 12.5.
* log M_surviving ~ the double-Schechter stellar mass function of Baldry et al. (2012,
  MNRAS 421, 621; GAMA, z < 0.06, Chabrier IMF): log M* = 10.66, phi1 = 3.96e-3,
  alpha1 = -0.35, phi2 = 0.79e-3, alpha2 = -1.47 (h = 0.7), i.e.
  phi(log M) dlogM = ln10 exp(-M/M*) [phi1 (M/M*)^(alpha1+1) + phi2 (M/M*)^(alpha2+1)] dlogM.
  Masses are moved to Planck15's h = 0.6774 (M ~ h^-2: +0.0285 dex, ``H_SHIFT_DEX``).
* logM (mass *formed*, theta column 1) = log M_surviving + ``FORMED_MINUS_SURVIVING_DEX``
  = 0.23 dex: the median of logM - logM_surviving (living stars + remnants, as GAMA's masses)
  from ``forward.derived_quantities`` over Table-2 draws (5000 draws, z in [0.02, 0.3]:
  median 0.226, mean 0.225, sd 0.013, 5-95% 0.204-0.241; re-measure with
  :func:`measure_formed_minus_surviving`; a test keeps the two in step), truncated to [8.0, 12.5].

``zlogm = "sdss"`` (:func:`sdss_zlogm_sampler`) follows the paper's recipe instead: (z, logM)
pairs drawn, with replacement, from a real survey's joint distribution -- the shipped SDSS
main sample after r < 17.77, at its spectroscopic redshifts, with kcorrect (Blanton & Roweis
2007; ``popsed_jax.survey.independent``) surviving masses + ``FORMED_MINUS_SURVIVING_DEX``. That
population is already magnitude-limited, so most draws pass the cut again (not all: the
Table-2 SEDs are not the galaxies' own); it needs the optional ``kcorrect`` package.

Most volume-weighted draws are far below the flux limit, so :func:`draw_mock` oversamples
and applies the selection (on the *noisy* flux) round after round until n rows are
selected. A conservative pre-screen skips the forward model for draws that cannot pass:
an upper bound on the limit-band flux per unit formed mass at each z, the maximum over
dust-free single bursts (ages 10 Myr - 13.3 Gyr) and pure-basis SFHs at 8 metallicities,
plus a 1 mag margin (``prescreen=False`` switches it off; the distribution is the same).
"""
from __future__ import annotations

import json
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..physics.forward import (PARAM_NAMES, build_forward_model, check_theta, derived_quantities,
                               forward_fluxes, theta_from_columns, theta_to_columns)
from ..physics.photometry import SDSS_UGRIZ, mag_to_flux
from ..physics.relations import BALDRY12, H_SHIFT_DEX
from .observation import is_selected, make_observation, noisy_fluxes

__all__ = [
    "TABLE2", "sample_table2", "sample_z_volume", "sample_logm_baldry12",
    "sample_zlogm_volume", "measure_formed_minus_surviving", "draw_mock",
    "mock_to_catalog", "counts_slope",
    "FORMED_MINUS_SURVIVING_DEX", "zlogm_pairs_sampler",
    "sdss_zlogm_sampler", "ZLOGM_SAMPLERS",
]


# Table 2: (mean, sd, lo, hi) of truncated normals; None -> U(0, 1)
TABLE2 = {
    "kappa1": (0.5, 0.3, 0.0, 1.0),
    "kappa2": None,
    "kappa3": None,
    "t_burst": (12.0, 7.0, 0.01, 13.27),
    "f_burst": (0.1, 0.7, 0.0, 1.0),
    "logZ": (-1.2, 0.9, -2.6, 0.3),
    "n_dust": (2.0, 2.0, -3.0, 1.0),
    "tau1": (1.0, 0.8, 0.0, 3.0),
    "tau2": (0.6, 0.8, 0.0, 3.0),
}

FORMED_MINUS_SURVIVING_DEX = 0.23
LOGM_RANGE = (8.0, 12.5)  # formed mass
Z_RANGE = (0.005, 0.4)


def _rng(key_or_seed):
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, (int, np.integer)) or key_or_seed is None:
        return np.random.default_rng(key_or_seed)
    # a jax PRNG key: turn it into a seed
    data = np.asarray(jax.random.key_data(key_or_seed) if jnp.issubdtype(
        getattr(key_or_seed, "dtype", np.uint32), jax.dtypes.prng_key) else key_or_seed)
    return np.random.default_rng(data.astype(np.uint64).ravel().tolist())


def _truncnorm(rng, n, mu, sd, lo, hi):
    from scipy.stats import truncnorm
    return truncnorm.ppf(rng.random(n), (lo - mu) / sd, (hi - mu) / sd, loc=mu, scale=sd)


def _inverse_cdf_sampler(x, pdf):
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(x))])
    cdf /= cdf[-1]
    return lambda u: np.interp(u, cdf, x)


def sample_z_volume(n, rng, z_range=Z_RANGE):
    """z ~ dV_c/dz (Planck15) on z_range, (n,)."""
    from astropy.cosmology import Planck15
    rng = _rng(rng)
    z = np.linspace(z_range[0], z_range[1], 2001)
    pdf = Planck15.differential_comoving_volume(z).value
    return _inverse_cdf_sampler(z, pdf)(rng.random(n))


def sample_logm_baldry12(n, rng, logm_range=(LOGM_RANGE[0] - FORMED_MINUS_SURVIVING_DEX,
                                             LOGM_RANGE[1] - FORMED_MINUS_SURVIVING_DEX)):
    """log10 surviving stellar mass (Planck15 h) from the Baldry+12 double Schechter, (n,)."""
    rng = _rng(rng)
    p = BALDRY12
    lm = np.linspace(logm_range[0], logm_range[1], 4001)
    x = 10.0 ** (lm - p["logMstar"] - H_SHIFT_DEX)
    pdf = np.log(10) * np.exp(-x) * (p["phi1"] * x ** (p["alpha1"] + 1) + p["phi2"] * x ** (p["alpha2"] + 1))
    return _inverse_cdf_sampler(lm, pdf)(rng.random(n))


def sample_zlogm_volume(n, rng, z_range=Z_RANGE):
    """Default (z, logM formed) sampler: volume-weighted z, Baldry+12 masses + 0.33 dex."""
    rng = _rng(rng)
    z = sample_z_volume(n, rng, z_range)
    logm = sample_logm_baldry12(n, rng) + FORMED_MINUS_SURVIVING_DEX
    return z, logm


def zlogm_pairs_sampler(z, logm, name="given (z, logM) pairs"):
    """Sampler drawing (z, logM formed) pairs with replacement from the given (N,) arrays;
    `name` labels the population in the mock's metadata."""
    z, logm = np.asarray(z, float), np.asarray(logm, float)
    ok = np.isfinite(z) & np.isfinite(logm)
    if z.shape != logm.shape or not ok.any():
        raise ValueError(f"z and logM must be equal-shape arrays with finite rows; got {z.shape}, {logm.shape}, {int(ok.sum())} finite")
    z, logm = z[ok], logm[ok]

    def sample(n, rng):
        i = _rng(rng).integers(0, z.size, n)
        return z[i], logm[i]

    sample.n_pairs = int(z.size)
    sample.z_max = float(z.max())  # draw_mock builds its forward model up to this z
    sample.__name__ = name
    return sample


def sdss_zlogm_sampler(limit="r<17.77"):
    """(z, logM formed) of the shipped SDSS main sample: spec-z and kcorrect surviving masses
    + ``FORMED_MINUS_SURVIVING_DEX``, after `limit` (the paper's recipe with GAMA replaced by
    SDSS; needs ``pip install kcorrect``)."""
    from .catalog import load_catalog
    from .independent import kcorrect_masses
    from .selection import select_catalog

    cat = load_catalog("sdss")
    if limit:
        cat = select_catalog(cat, limit)
    kc = kcorrect_masses(cat)
    return zlogm_pairs_sampler(kc["z"], kc["logM_surviving_kc"] + FORMED_MINUS_SURVIVING_DEX,
                               name=f"the SDSS main sample ({limit}; spec-z, kcorrect masses)")


ZLOGM_SAMPLERS = {"volume": lambda: sample_zlogm_volume, "sdss": sdss_zlogm_sampler}


def sample_table2(n, key_or_seed=0, zlogm_sampler: Callable | None = None) -> np.ndarray:
    """(n, 11) draws of the Table-2 mock population (columns ``PARAM_NAMES``).

    zlogm_sampler(n, rng) -> (z, logM) replaces the default :func:`sample_zlogm_volume`.
    key_or_seed: int seed, numpy Generator or jax PRNG key.
    """
    rng = _rng(key_or_seed)
    out = np.empty((n, len(PARAM_NAMES)))
    z, logm = (zlogm_sampler or sample_zlogm_volume)(n, rng)
    out[:, 0], out[:, 1] = z, logm
    for j, name in enumerate(PARAM_NAMES[2:], start=2):
        spec = TABLE2[name]
        out[:, j] = rng.random(n) if spec is None else _truncnorm(rng, n, *spec)
    return out


def measure_formed_minus_surviving(model=None, n=5000, seed=0):
    """Median, mean, sd of logM - logM_surviving over Table-2 draws (z in [0.02, 0.3])."""
    model = model or build_forward_model(z_max=0.45)
    th = sample_table2(n, seed, lambda m, r: (r.uniform(0.02, 0.3, m), np.full(m, 10.5)))
    off = th[:, 1] - np.asarray(derived_quantities(model, th)["logM_surviving"])
    return float(np.median(off)), float(off.mean()), float(off.std())


# --------------------------------------------------------------------------
# observing
# --------------------------------------------------------------------------

def _default_noise_model(bands):
    """Noise model fitted to the shipped SDSS main sample in `bands`: SDSS ugriz and the
    file's 2MASS/GALEX columns (rows lacking an extra band are dropped before the fit)."""
    from .catalog import _SDSS_EXTRA, read_sdss_main
    from .noise import fit_noise_model
    short, extra = [], []
    for b in bands:
        if b.startswith("sdss2010-") and b[-1] in "ugriz":
            short.append(b[-1])
        elif b in _SDSS_EXTRA:
            extra.append(b)
        else:
            raise ValueError(f"no default noise model for band {b!r} (the SDSS file has ugriz and "
                             f"{sorted(_SDSS_EXTRA)}): pass noise_model= (a NoiseModel or a JSON file "
                             "from save_noise_model)")
    cat = read_sdss_main(bands=tuple(short), extra=tuple(extra))
    nm = fit_noise_model(cat)
    if tuple(nm.bands) != tuple(bands):
        raise ValueError(f"the default noise model needs the SDSS bands first, in order: got {list(bands)}")
    return nm


def _flux_bound_table(model, band, z_range, n_z=80):
    """log10 upper bound of the `band` flux per formed Msun on a geometric z grid."""
    zg = np.geomspace(z_range[0], z_range[1], n_z)
    sfhs = [(1, 1, 1, tb, 1.0) for tb in np.geomspace(0.01, 13.27, 24)]
    sfhs += [(0, 0.5, 0.5, 13.0, 0.0), (1, 0, 0.5, 13.0, 0.0), (1, 1, 0, 13.0, 0.0), (1, 1, 1, 13.0, 0.0)]
    rows = [(z, 10.0, *s, lz, 0.0, 0.0, 0.0)
            for z in zg for s in sfhs for lz in np.linspace(-2.6, 0.3, 8)]
    th = np.asarray(rows)
    f = np.asarray(jax.jit(forward_fluxes)(model, th))[:, band]
    lf = np.log10(np.maximum(f, 1e-30)).reshape(n_z, -1).max(1) - 10.0
    return zg, lf


def _bound_at(z, zg, lf):
    i = np.clip(np.searchsorted(zg, z) - 1, 0, len(zg) - 2)
    return np.maximum(lf[i], lf[i + 1])


def _observe(model, obs, theta, key, chunk=16384):
    """Noiseless fluxes, noisy fluxes and the errors drawn, each (N, B) float64 [nmgy]."""
    flux = jax.jit(forward_fluxes, static_argnames="chunk_size")(model, theta, chunk_size=chunk)
    noisy, sigma = jax.jit(noisy_fluxes)(obs, flux, key)
    return (np.asarray(flux, np.float64), np.asarray(noisy, np.float64),
            np.asarray(sigma, np.float64))


def draw_mock(n=None, seed=0, filters=SDSS_UGRIZ, noise_model=None, limit="r<17.77",
              params_table=None, return_all=False, *, model=None, zlogm_sampler=None,
              z_range=Z_RANGE, prescreen=True, max_rounds=60, max_batch=200_000,
              progress=False):
    """Mock catalog (astropy Table) of the Table-2 population observed with a noise model.

    n: number of *selected* rows wanted (oversampling rounds until reached, at most
    `max_rounds`; RuntimeError otherwise). With ``return_all`` n rows are drawn from the
    prior once and all are returned with a ``selected`` column. With `params_table`
    (any table with the parameter columns) the prior is skipped: every row is observed and
    the selected ones (or all, flagged, with ``return_all``) are returned; n is ignored.
    limit: 'r<17.77'-style cut on the noisy flux, or None for no selection.
    noise_model: NoiseModel, path to its JSON, or None (fit to ``read_sdss_main()``).
    model: a prebuilt forward model (its bands must equal `filters`).

    Columns: id, the 11 parameters, beta1..4, logM_surviving, sfr_100myr, sfr_10myr,
    log_ssfr_100myr, age_mw, flux_<band> (noisy), flux_err_<band> (the sigma used),
    flux_true_<band>, z_spec (= z) [, selected]; meta PSBANDS/PSMETA as in
    ``catalog.write_catalog`` so ``catalog.read_catalog`` reads the file back.
    """
    from astropy.table import Table

    from .noise import load_noise_model

    if isinstance(filters, str):
        filters = [f.strip() for f in filters.split(",") if f.strip()]
    filters = tuple(filters)
    if noise_model is None:
        noise_model = _default_noise_model(filters)
    elif not hasattr(noise_model, "var_coeffs"):
        noise_model = load_noise_model(noise_model)
    if tuple(noise_model.bands) != filters:
        raise ValueError(f"noise model bands {list(noise_model.bands)} differ from filters {list(filters)}")
    theta_in = None
    if params_table is not None:
        theta_in = theta_from_columns(params_table)
        z_max = max(z_range[1], float(np.max(theta_in[:, 0])))
    else:
        if n is None or int(n) < 1:
            raise ValueError("draw_mock needs n >= 1 or a params_table")
        n = int(n)
        z_max = max(z_range[1], float(getattr(zlogm_sampler, "z_max", 0.0)))
    if model is None:
        model = build_forward_model(filters=list(filters), z_max=z_max)
    if tuple(model.bands) != filters:
        raise ValueError(f"forward model bands {list(model.bands)} differ from filters {list(filters)}")
    if theta_in is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*outside the SSP grid.*")
            check_theta(theta_in, model)
    obs = make_observation(noise_model, limit)
    if limit is not None:
        kb, f_lim = obs.band_idx, float(mag_to_flux(obs.mag_lim))
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)

    def select(noisy):
        return np.asarray(is_selected(obs, noisy))

    info = dict(seed=seed, limit=limit, rounds=0, n_drawn=0, n_forward=0)
    if theta_in is not None or return_all:
        theta = theta_in if theta_in is not None else sample_table2(n, rng, zlogm_sampler)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*outside the SSP grid.*")
            check_theta(theta, model)
        flux, noisy, sigma = _observe(model, obs, theta, key)
        sel = select(noisy)
        info.update(rounds=1, n_drawn=len(theta), n_forward=len(theta))
        if not return_all:
            theta, flux, noisy, sigma = theta[sel], flux[sel], noisy[sel], sigma[sel]
    else:
        bound = None
        if prescreen and limit is not None:
            zg, lf = _flux_bound_table(model, kb, (min(z_range[0], 1e-3), z_max))
            bound = (zg, lf, np.log10(f_lim) - 0.4)  # 1 mag margin
        parts, n_sel, acc = [], 0, None
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n, unit="gal", desc="mock (selected)")
        for rnd in range(max_rounds):
            need = n - n_sel
            m = max_batch if acc is None else int(np.clip(1.3 * need / max(acc, 1e-7) + 1000, 2000, max_batch))
            th = sample_table2(m, rng, zlogm_sampler)
            info["n_drawn"] += m
            if bound is not None:
                th = th[th[:, 1] + _bound_at(th[:, 0], bound[0], bound[1]) > bound[2]]
            info["rounds"] = rnd + 1
            if len(th):
                with warnings.catch_warnings():  # Table-2 logZ reaches below BC03's grid: clamped
                    warnings.filterwarnings("ignore", message=".*outside the SSP grid.*")
                    check_theta(th, model)
                f, nz, sg = _observe(model, obs, th, jax.random.fold_in(key, rnd))
                info["n_forward"] += len(th)
                s = select(nz)
                parts.append((th[s], f[s], nz[s], sg[s]))
                n_sel += int(s.sum())
                if bar is not None:
                    bar.update(min(int(s.sum()), n - (n_sel - int(s.sum()))))
            acc = n_sel / info["n_drawn"]
            if n_sel >= n:
                break
        if bar is not None:
            bar.close()
        if n_sel < n:
            raise RuntimeError(
                f"draw_mock: only {n_sel} of {n} galaxies pass {limit!r} after {max_rounds} rounds "
                f"({info['n_drawn']} drawn; acceptance {acc:.2e}); raise max_rounds/max_batch, loosen the "
                "limit or change the (z, logM) sampler")
        theta, flux, noisy, sigma = (np.concatenate([p[i] for p in parts])[:n] for i in range(4))
        sel = np.ones(n, bool)
    if theta_in is None and not return_all:
        info["acceptance"] = float(n_sel / max(info["n_drawn"], 1))  # over every draw, surplus selected rows included
    else:
        info["acceptance"] = float(sel.mean())

    t = Table()
    t["id"] = np.arange(len(theta), dtype=np.int64)
    for k, v in theta_to_columns(theta).items():
        t[k] = v
    if len(theta):
        d = {k: np.asarray(v, np.float64) for k, v in derived_quantities(model, theta).items()}
    else:
        d = {k: np.zeros(0) for k in ("logM_surviving", "sfr_100myr", "sfr_10myr", "log_ssfr_100myr", "age_mw")}
    for k in ("logM_surviving", "sfr_100myr", "sfr_10myr", "log_ssfr_100myr", "age_mw"):
        t[k] = d[k]
    for j, b in enumerate(filters):
        t[f"flux_{b}"] = noisy[:, j]
        t[f"flux_err_{b}"] = sigma[:, j]
    for j, b in enumerate(filters):
        t[f"flux_true_{b}"] = flux[:, j]
    t["z_spec"] = theta[:, 0]
    if return_all:
        t["selected"] = sel
    population = "params_table" if params_table is not None else (
        "Table 2 + volume-weighted Baldry+12" if zlogm_sampler in (None, sample_zlogm_volume)
        else f"Table 2 + (z, logM) from {getattr(zlogm_sampler, '__name__', 'a custom sampler')}")
    meta = dict(source="popsed_jax.survey.mock.draw_mock", population=population, **info)
    t.meta["PSBANDS"] = json.dumps(list(filters))
    t.meta["PSMETA"] = json.dumps(meta)
    return t


def mock_to_catalog(table):
    """The observed part of a mock table as a :class:`catalog.Catalog`."""
    from .catalog import Catalog
    bands = json.loads(table.meta["PSBANDS"])
    return Catalog(flux=np.stack([np.asarray(table[f"flux_{b}"]) for b in bands], 1),
                   flux_err=np.stack([np.asarray(table[f"flux_err_{b}"]) for b in bands], 1),
                   bands=tuple(bands), z_spec=np.asarray(table["z_spec"]),
                   ids=np.asarray(table["id"]), meta=json.loads(table.meta["PSMETA"]))


# --------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------

def counts_slope(rmag, lo=15.5, hi=17.5):
    """Least-squares slope of log10 N(<r) on a 0.1 mag grid over (lo, hi)."""
    r = np.sort(np.asarray(rmag)[np.isfinite(rmag)])
    grid = np.arange(lo, hi + 1e-9, 0.1)
    nc = np.searchsorted(r, grid)
    ok = nc > 0
    return float(np.polyfit(grid[ok], np.log10(nc[ok]), 1)[0])
