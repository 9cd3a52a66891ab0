"""Loss features: asinh magnitudes (Lupton et al. 1999) and colours, standardized.

Finite for faint, noisy and negative fluxes (AB nanomaggies, ``(N, B)``); pure ``jax.numpy``.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..physics.photometry import F0_NMGY
from .noise import NoiseModel, noise_sigma_median

__all__ = ["asinh_mag", "softening_from_noise", "feature_stats", "standardize", "make_features"]

_LN10 = float(np.log(10.0))
_POGSON = 2.5 / _LN10



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
