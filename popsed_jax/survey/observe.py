"""Observing a simulated population: noise, selection, loss features.

Everything acting on simulated fluxes is pure ``jax.numpy``: jit-safe,
float32-friendly and differentiable with respect to the flux (noise is
reparameterized). Fluxes are AB nanomaggies, shape ``(N, B)``.

Noise model (per band b, fitted to a catalog)::

    sigma_med(f) = sqrt(a_b + b_b max(f, 0) + c_b f^2) * exp(o_b(log10 f))
    ln sigma     = ln sigma_med(f) + s_b(log10 f, sign eps) * eps,  eps ~ N(0, R)

a: sky/read variance [nmgy^2], b: source Poisson [nmgy], c: calibration
floor squared. o_b is a table at K flux knots of the median offset of ln sigma
about the quadratic law; s_b is a split-normal width: (median - 16%) of ln
sigma below the median, (84% - median) above (the SDSS errors have a longer
upper tail). Tables are interpolated linearly in log10 flux and held flat
outside the knots. R is the correlation of the
ln-sigma residuals between bands (an object noisy in g is noisy in r). Noise
is Gaussian in flux space; negative fluxes are kept.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np

from .catalog import (Catalog, ZP_NMGY, binned_medians, catalog_subset,
                      fit_variance_quadratic, speclite_filter_names)

__all__ = [
    "NoiseModel", "fit_noise_model", "fit_noise_model_arrays", "save_noise_model",
    "load_noise_model", "noise_sigma_median", "noise_ln_scatter",
    "sample_noise_sigma", "add_noise", "plot_noise_model", "parse_limit",
    "band_index", "hard_selection", "soft_selection_weights", "select_catalog",
    "F0_NMGY", "asinh_mag", "softening_from_noise", "feature_stats",
    "standardize", "make_features",
]

F0_NMGY = 10.0 ** (0.4 * ZP_NMGY)  # 1 maggie in nanomaggies (1e9)
_LN10 = float(np.log(10.0))
_POGSON = 2.5 / _LN10


# --------------------------------------------------------------------------
# noise model
# --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class NoiseModel:
    """Per-band flux-error model (a pytree; `bands` is static).

    var_coeffs (B, 3): a [nmgy^2], b [nmgy], c [1] of sigma^2 = a + b f + c f^2.
    knots (B, K): log10 flux [nmgy] of the tables. ln_offset (B, K): median of
    ln(sigma / sqrt(quadratic)). ln_scatter_lo, ln_scatter_hi (B, K): median
    minus 16th and 84th minus median percentile of ln sigma. chol (B, B):
    lower Cholesky factor of the between-band correlation of ln-sigma
    residuals about the median law.
    """

    bands: tuple
    var_coeffs: np.ndarray
    knots: np.ndarray
    ln_offset: np.ndarray
    ln_scatter_lo: np.ndarray
    ln_scatter_hi: np.ndarray
    chol: np.ndarray

    def to_dict(self) -> dict:
        """JSON-ready dict (arrays as nested lists, floats exact)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["bands"] = list(self.bands)
        for k, v in d.items():
            if k != "bands":
                d[k] = np.asarray(v, np.float64).tolist()
        d["format"] = "popsed_jax.NoiseModel/1"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NoiseModel":
        """Inverse of :meth:`to_dict`."""
        kw = {f.name: d[f.name] for f in fields(cls)}
        kw["bands"] = tuple(kw["bands"])
        for k in kw:
            if k != "bands":
                kw[k] = np.asarray(kw[k], np.float64)
        return cls(**kw)


jax.tree_util.register_dataclass(
    NoiseModel,
    data_fields=["var_coeffs", "knots", "ln_offset", "ln_scatter_lo", "ln_scatter_hi",
                 "chol"],
    meta_fields=["bands"])


def save_noise_model(model: NoiseModel, path) -> None:
    """Write `model` as JSON."""
    with open(path, "w") as fh:
        json.dump(model.to_dict(), fh, indent=1)


def load_noise_model(path) -> NoiseModel:
    """Read a model written by :func:`save_noise_model`."""
    with open(path) as fh:
        return NoiseModel.from_dict(json.load(fh))


def _split_widths(x, floor):
    q16, q50, q84 = np.quantile(x, [0.16, 0.5, 0.84])
    return max(q50 - q16, floor), max(q84 - q50, floor)


def fit_noise_model_arrays(flux, flux_err, bands, *, n_bins=20, min_per_bin=100,
                           min_scatter=1e-3) -> NoiseModel:
    """Fit a :class:`NoiseModel` to (N, B) fluxes and errors [nmgy].

    Per band: equal-count bins in log10 flux (objects with flux > 0, at most
    `n_bins`, at least `min_per_bin` objects each); sigma^2 = a + b f + c f^2
    by non-negative least squares on the binned medians (relative residuals);
    then per bin the median, 16th and 84th percentiles of ln sigma about it.
    """
    flux = np.asarray(flux, np.float64)
    err = np.asarray(flux_err, np.float64)
    n, nb = flux.shape
    bands = tuple(bands)
    coefs, knots, offs, s_lo, s_hi = [], [], [], [], []
    resid = np.full((n, nb), np.nan)
    for k in range(nb):
        f, e = flux[:, k], err[:, k]
        try:
            idx, fm, s2 = binned_medians(f, e, n_bins=n_bins, min_per_bin=min_per_bin)
        except ValueError as exc:
            raise ValueError(f"cannot fit the noise model of band {bands[k]!r}: {exc}")
        coef = fit_variance_quadratic(fm, s2)
        # keep the sky term strictly positive so sigma(f=0) > 0
        coef[0] = max(coef[0], 1e-6 * float(np.min(s2)))
        pos = idx >= 0
        quad = coef[0] + coef[1] * np.maximum(f, 0) + coef[2] * f ** 2
        r = np.log(e) - 0.5 * np.log(quad)
        kk = idx.max() + 1
        lfk = np.array([np.median(np.log10(f[idx == i])) for i in range(kk)])
        o = np.array([np.median(r[idx == i]) for i in range(kk)])
        lo, hi = np.array([_split_widths(r[idx == i], min_scatter) for i in range(kk)]).T
        lf = np.log10(np.where(pos, f, 10 ** lfk[0]))
        resid[pos, k] = (r - np.interp(lf, lfk, o))[pos]
        coefs.append(coef)
        knots.append(lfk)
        offs.append(o)
        s_lo.append(lo)
        s_hi.append(hi)
    kmax = max(len(x) for x in knots)
    pad = lambda a: np.concatenate([a, np.full(kmax - len(a), a[-1])])  # noqa: E731
    # bands with fewer bins: pad with the last value at slightly larger knots
    knots_a = np.stack([np.concatenate([x, x[-1] + 1e-6 * np.arange(1, kmax - len(x) + 1)])
                        for x in knots])
    ok = np.all(np.isfinite(resid), axis=1)
    if ok.sum() > nb + 2 and nb > 1:
        # Pearson correlation of ln sigma about the median law, used as the
        # correlation of eps: reproduces the catalog's to ~0.02
        corr = np.corrcoef(resid[ok], rowvar=False)
        corr = 0.5 * (corr + corr.T) + 1e-6 * np.eye(nb)
        corr = corr / np.sqrt(np.outer(np.diag(corr), np.diag(corr)))
        w, v = np.linalg.eigh(corr)  # clip to positive definite
        corr = (v * np.maximum(w, 1e-6)) @ v.T
        corr = corr / np.sqrt(np.outer(np.diag(corr), np.diag(corr)))
        chol = np.linalg.cholesky(corr)
    else:
        chol = np.eye(nb)
    return NoiseModel(bands=tuple(bands), var_coeffs=np.stack(coefs),
                      knots=knots_a, ln_offset=np.stack([pad(o) for o in offs]),
                      ln_scatter_lo=np.stack([pad(s) for s in s_lo]),
                      ln_scatter_hi=np.stack([pad(s) for s in s_hi]), chol=chol)


def fit_noise_model(cat: Catalog, **kw) -> NoiseModel:
    """Fit a :class:`NoiseModel` to a catalog's fluxes and errors (see
    :func:`fit_noise_model_arrays` for options)."""
    return fit_noise_model_arrays(cat.flux, cat.flux_err, cat.bands, **kw)


def _interp_bands(x, xp, fp):
    """Per-band linear interpolation: x (N, B), xp/fp (B, K) -> (N, B)."""
    return jax.vmap(jnp.interp, in_axes=(1, 0, 0), out_axes=1)(x, xp, fp)


def _log10_flux_clamped(model, flux):
    lo = jnp.asarray(10.0 ** model.knots[:, 0], flux.dtype)
    return jnp.log10(jnp.maximum(flux, lo))


def noise_sigma_median(model: NoiseModel, flux):
    """Median 1-sigma flux error [nmgy] at flux (N, B) [nmgy] -> (N, B)."""
    flux = jnp.asarray(flux)
    c = jnp.asarray(model.var_coeffs, flux.dtype)
    var = c[:, 0] + c[:, 1] * jnp.maximum(flux, 0.0) + c[:, 2] * flux ** 2
    lf = _log10_flux_clamped(model, flux)
    off = _interp_bands(lf, jnp.asarray(model.knots, flux.dtype),
                        jnp.asarray(model.ln_offset, flux.dtype))
    return jnp.sqrt(var) * jnp.exp(off)


def noise_ln_scatter(model: NoiseModel, flux):
    """Split-normal widths of ln sigma at flux (N, B): (lower, upper), each (N, B)."""
    flux = jnp.asarray(flux)
    lf = _log10_flux_clamped(model, flux)
    xp = jnp.asarray(model.knots, flux.dtype)
    return (_interp_bands(lf, xp, jnp.asarray(model.ln_scatter_lo, flux.dtype)),
            _interp_bands(lf, xp, jnp.asarray(model.ln_scatter_hi, flux.dtype)))


def sample_noise_sigma(model: NoiseModel, flux, key):
    """Draw per-object errors sigma (N, B) [nmgy] at flux (N, B): median law
    times split-log-normal scatter, correlated across bands."""
    flux = jnp.asarray(flux)
    eps = jax.random.normal(key, flux.shape, flux.dtype)
    eps = eps @ jnp.asarray(model.chol, flux.dtype).T
    lo, hi = noise_ln_scatter(model, flux)
    return noise_sigma_median(model, flux) * jnp.exp(jnp.where(eps < 0, lo, hi) * eps)


def add_noise(model: NoiseModel, flux, key, scale=1.0):
    """Gaussian noise in flux space: returns (flux + scale sigma eps, scale sigma).

    flux (N, B) [nmgy]; sigma drawn by :func:`sample_noise_sigma`; `scale`
    shrinks the noise (e.g. noise annealing). Negative fluxes are kept.
    Reparameterized, so differentiable w.r.t. `flux`.
    """
    flux = jnp.asarray(flux)
    k_sig, k_eps = jax.random.split(key)
    sigma = scale * sample_noise_sigma(model, flux, k_sig)
    eps = jax.random.normal(k_eps, flux.shape, flux.dtype)
    return flux + sigma * eps, sigma


def plot_noise_model(model: NoiseModel, cat: Catalog, path, max_points=20000):
    """Per band: catalog sigma vs flux, with the model median and 16-84% band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nb = len(model.bands)
    ncol = min(nb, 3)
    nrow = -(-nb // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow), squeeze=False)
    rng = np.random.default_rng(0)
    sel = rng.permutation(cat.n)[:max_points]
    for k, band in enumerate(model.bands):
        ax = axes[k // ncol, k % ncol]
        j = cat.bands.index(band)
        f, e = cat.flux[sel, j], cat.flux_err[sel, j]
        pos = f > 0
        ax.scatter(f[pos], e[pos], s=1, alpha=0.25, color="0.4", rasterized=True,
                   label="catalog")
        grid = np.logspace(np.log10(f[pos].min()), np.log10(f[pos].max()), 200)
        g = np.zeros((grid.size, nb))
        g[:, k] = grid
        med = np.asarray(noise_sigma_median(model, jnp.asarray(g)))[:, k]
        lo, hi = (np.asarray(x)[:, k] for x in noise_ln_scatter(model, jnp.asarray(g)))
        ax.fill_between(grid, med * np.exp(-lo), med * np.exp(hi), color="C1", alpha=0.35,
                        label="model 16-84%")
        ax.plot(grid, med, color="C3", lw=1.5, label="model median")
        ax.set(xscale="log", yscale="log", title=band, xlabel="flux [nmgy]",
               ylabel="sigma [nmgy]")
    for k in range(nb, nrow * ncol):
        axes[k // ncol, k % ncol].set_visible(False)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------

_LIMIT_RE = re.compile(
    r"^\s*([A-Za-z0-9_.\-]+)\s*(<=|<)\s*([-+]?\d+(\.\d*)?([eE][-+]?\d+)?)\s*$")


def band_index(bands, name) -> int:
    """Index of band `name` in `bands`: exact filter name, or a short name
    ('r') matching exactly one band ending in '-r'."""
    bands = tuple(bands)
    if name in bands:
        return bands.index(name)
    hits = [i for i, b in enumerate(bands) if b.split("-", 1)[-1] == name]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ValueError(f"band {name!r} not among the catalog bands {list(bands)}")
    raise ValueError(f"band {name!r} is ambiguous among {[bands[i] for i in hits]}")


def parse_limit(text: str, bands=None):
    """Parse 'r<17.77' -> ('sdss2010-r', 17.77).

    The band is resolved against `bands` (e.g. ``cat.bands``) if given, else
    against speclite's filter names (then it must be a full name or unique).
    Only upper magnitude limits ('<' or '<=') are supported.
    """
    m = _LIMIT_RE.match(str(text))
    if not m:
        raise ValueError(
            f"cannot parse selection {text!r}: expected '<band><<mag>', e.g. 'r<17.77'")
    name, lim = m.group(1), float(m.group(3))
    if bands is not None:
        return bands[band_index(bands, name)], lim
    return speclite_filter_names()[band_index(speclite_filter_names(), name)], lim


def hard_selection(flux, band_index, mag_lim):
    """Boolean (N,) mask: AB mag in band `band_index` < mag_lim (flux <= 0 never)."""
    flux = jnp.asarray(flux)
    f_lim = 10.0 ** (-0.4 * (mag_lim - ZP_NMGY))
    return flux[:, band_index] > f_lim


def soft_selection_weights(flux, band_index, mag_lim, width=0.05):
    """Weights (N,) in [0, 1] = sigmoid((mag_lim - m) / width) [width in mag].

    m is an asinh magnitude softened at 1% of the limiting flux (identical to
    the Pogson magnitude to < 1e-4 mag near the limit), so the weights are
    finite and differentiable for zero and negative fluxes (where they -> 0).
    """
    return jnp.exp(soft_selection_log_weights(flux, band_index, mag_lim, width))


def soft_selection_log_weights(flux, band_index, mag_lim, width=0.05):
    """log of :func:`soft_selection_weights` (N,), = log_sigmoid((mag_lim - m) / width): finite
    even where every weight underflows (a population far below the limit), so that
    ``jax.nn.softmax`` of it gives normalised weights with finite gradients."""
    flux = jnp.asarray(flux)
    f_lim = 10.0 ** (-0.4 * (mag_lim - ZP_NMGY))
    b = 0.01 * f_lim / F0_NMGY
    m = asinh_mag(flux[:, band_index], jnp.asarray(b, flux.dtype))
    return jax.nn.log_sigmoid((mag_lim - m) / width)


def select_catalog(cat: Catalog, limit: str) -> Catalog:
    """Apply a hard limit such as 'r<17.77' to `cat` (ValueError if it selects nothing)."""
    band, lim = parse_limit(limit, cat.bands)
    k = cat.bands.index(band)
    mask = np.asarray(hard_selection(cat.flux, k, lim))
    if not mask.any():
        brightest = 22.5 - 2.5 * np.log10(np.max(cat.flux[:, k])) if np.any(
            cat.flux[:, k] > 0) else float("nan")
        raise ValueError(
            f"empty selection: {limit!r} ({band} < {lim}) selects 0 of {cat.n} objects; "
            f"the brightest {band} magnitude is {brightest:.3f}")
    return catalog_subset(cat, mask, reason=f"selection: not {band} < {lim}")


# --------------------------------------------------------------------------
# loss features
# --------------------------------------------------------------------------

def asinh_mag(flux, softening_b):
    """Lupton et al. (1999) asinh magnitude.

    m = -(2.5 / ln 10) [asinh((f / f0) / (2 b)) + ln b], f in nanomaggies,
    f0 = 10^(0.4 * 22.5) nmgy (1 maggie), b dimensionless (broadcast over the
    last axis, (B,)). Finite for any real flux; equals 22.5 - 2.5 log10 f to
    1.0857 (b f0 / f)^2 mag when f >> b f0.
    """
    flux = jnp.asarray(flux)
    b = jnp.asarray(softening_b, flux.dtype)
    return -_POGSON * (jnp.arcsinh(flux / (2.0 * b * F0_NMGY)) + jnp.log(b))


def softening_from_noise(model: NoiseModel):
    """SDSS-style softening b = 1.042 sigma_0 / f0 per band (B,), with sigma_0
    the model's median error at zero flux [nmgy]."""
    sig0 = np.asarray(noise_sigma_median(model, jnp.zeros((1, len(model.bands)),
                                                          jnp.float32)))[0]
    return 1.042 * sig0.astype(np.float64) / F0_NMGY


def feature_stats(features, weights=None):
    """Per-feature (mean, std), each (D,), of features (N, D); optional (N,) weights."""
    x = jnp.asarray(features)
    if weights is None:
        return jnp.mean(x, axis=0), jnp.std(x, axis=0)
    w = jnp.asarray(weights, x.dtype)[:, None]
    mean = jnp.sum(w * x, axis=0) / jnp.sum(w)
    return mean, jnp.sqrt(jnp.sum(w * (x - mean) ** 2, axis=0) / jnp.sum(w))


def standardize(features, stats):
    """(features - mean) / std with stats = (mean, std) from :func:`feature_stats`."""
    mean, std = stats
    return (jnp.asarray(features) - mean) / std


def make_features(flux, softening, stats=None, colours=False, ref_band=None):
    """Loss features from flux (N, B) [nmgy]: asinh magnitudes (N, B).

    colours=True gives [m_ref, m_0 - m_1, ..., m_{B-2} - m_{B-1}] (still B
    columns; ref_band defaults to B // 2, the r band for ugriz). If `stats`
    is given the features are standardized with it.
    """
    m = asinh_mag(flux, softening)
    if colours:
        ref = m.shape[-1] // 2 if ref_band is None else ref_band
        m = jnp.concatenate([m[:, ref:ref + 1], m[:, :-1] - m[:, 1:]], axis=1)
    return m if stats is None else standardize(m, stats)
