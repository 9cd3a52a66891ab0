"""The survey's noise model: per-band flux errors as a function of flux.

Fitted to a catalog, then used to draw realistic errors and noise for simulated fluxes (pure
``jax.numpy``: jit-safe, float32-friendly, differentiable w.r.t. the flux by
reparameterization). Fluxes are AB nanomaggies, shape ``(N, B)``.

Model (per band b)::

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
from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np

from .catalog import Catalog, binned_medians, fit_variance_quadratic

__all__ = [
    "NoiseModel", "fit_noise_model", "fit_noise_model_arrays", "save_noise_model",
    "load_noise_model", "noise_sigma_median", "noise_ln_scatter",
    "sample_noise_sigma", "add_noise",
]



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
