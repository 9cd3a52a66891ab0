"""The survey's observation operator: noiseless model fluxes -> what the survey records.

One frozen pytree, :class:`Observation`, holds the noise model, the selection (flux limits in
one or more bands, all of which a galaxy must pass), and the loss features' bands, softening
and standardization. Training, validation, mocks,
population samples and evaluation all observe simulated galaxies through it:

    flux (N, B) nmgy --noisy--> (N, B) --features--> (N, D) standardized asinh mags / colours
                                      \\--selection--> (N,) log-weights (soft) or mask (hard)

Every function is pure ``jax.numpy`` and jit-able with the Observation as an argument (its
arrays are leaves; limits, feature bands, width and the colour switch are static). A band may
serve the selection only (``feature_idx`` leaves it out of the features): the shipped SDSS
sample is 2MASS-detected, so its Ks is simulated, noised and cut on, but not fitted.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .features import make_features, softening_from_noise
from .noise import NoiseModel, add_noise, noise_sigma_median
from .selection import band_index, hard_selection, parse_limits, soft_selection_log_weights

__all__ = ["Observation", "make_observation", "noisy_fluxes", "features", "selection_log_weights",
           "selection_weights", "is_selected", "unfitted_selection_log_probability"]


@dataclasses.dataclass(frozen=True)
class Observation:
    """Noise, selection and feature scaling of a survey (a pytree).

    noise: the per-band :class:`NoiseModel`; softening (B,): asinh softening b per band;
    mean, std (D,): feature standardization (None: features are not standardized);
    limits: ((band index, AB mag limit, completeness width or None), ...), all of which a galaxy
    must pass (empty: no selection; a width: passed with probability sigmoid((limit - m) /
    width), see ``selection.parse_limits``); selection_width [mag]: width of the soft cuts used
    in training (a completeness uses its own width); colours:
    features are [m_ref, adjacent colours]; feature_idx: the bands of the features, in order
    (None: all).
    """

    noise: NoiseModel
    softening: jax.Array
    mean: Optional[jax.Array] = None
    std: Optional[jax.Array] = None
    limits: tuple = ()
    selection_width: float = 0.05
    colours: bool = True
    feature_idx: Optional[tuple] = None

    @property
    def band_idx(self) -> Optional[int]:
        """The first limit's band index (None without a selection)."""
        return self.limits[0][0] if self.limits else None

    @property
    def mag_lim(self) -> Optional[float]:
        """The first limit's AB magnitude (None without a selection)."""
        return self.limits[0][1] if self.limits else None

    @property
    def bands(self) -> tuple:
        """The survey's bands (speclite names), in flux-column order."""
        return tuple(self.noise.bands)

    @property
    def stats(self):
        """(mean, std) of the features, or None."""
        return None if self.mean is None else (self.mean, self.std)


jax.tree_util.register_dataclass(
    Observation, data_fields=["noise", "softening", "mean", "std"],
    meta_fields=["limits", "selection_width", "colours", "feature_idx"])


def make_observation(noise: NoiseModel, limit: str | None = None, *, colours: bool = True,
                     selection_width: float = 0.05, stats=None, feature_bands=None, dtype=jnp.float32) -> Observation:
    """An :class:`Observation` from a noise model and a selection such as 'r<17.77' or
    'r<17.77 & twomass-Ks<15.92' (None: no cut).

    stats: (mean, std) of the features (e.g. from the observed catalog), or None.
    feature_bands: names of the bands the features use, in the noise model's order (None: all)."""
    limits = ()
    if limit:
        limits = tuple((band_index(noise.bands, b), float(ml), w) for b, ml, w in parse_limits(limit, noise.bands))
    fidx = None
    if feature_bands is not None:
        fidx = tuple(band_index(noise.bands, b) for b in feature_bands)
        if not fidx or list(fidx) != sorted(set(fidx)):
            raise ValueError(f"feature bands {list(feature_bands)} must be a non-empty subset of {list(noise.bands)}, in order")
        if len(fidx) == len(noise.bands):
            fidx = None
    mean = std = None
    if stats is not None:
        mean, std = (jnp.asarray(np.asarray(s), dtype) for s in stats)
    return Observation(noise, jnp.asarray(softening_from_noise(noise), dtype), mean, std, limits,
                       float(selection_width), bool(colours), fidx)


def noisy_fluxes(obs: Observation, flux, key, noise_scale=1.0):
    """Noisy fluxes and the errors drawn for them, each (N, B) [nmgy] (see ``noise.add_noise``)."""
    return add_noise(obs.noise, flux, key, scale=noise_scale)


def features(obs: Observation, flux, standardized: bool = True):
    """Loss features (N, D) of fluxes (N, B), from the feature bands only: standardized when the
    observation has stats (and ``standardized``)."""
    soft = obs.softening
    if obs.feature_idx is not None:
        idx = np.asarray(obs.feature_idx)
        flux, soft = jnp.asarray(flux)[:, idx], soft[idx]
    return make_features(flux, soft, stats=obs.stats if standardized else None, colours=obs.colours)


def selection_log_weights(obs: Observation, flux):
    """log of the soft selection weight (N,) of each flux row (the sum over the limits), or
    None without a selection."""
    if not obs.limits:
        return None
    return sum(soft_selection_log_weights(flux, b, ml, obs.selection_width if w is None else w) for b, ml, w in obs.limits)


def selection_weights(obs: Observation, flux):
    """Soft selection weights (N,) in [0, 1], or None without a limit."""
    logw = selection_log_weights(obs, flux)
    return None if logw is None else jnp.exp(logw)


def is_selected(obs: Observation, flux, key=None):
    """Selection mask (N,): passes every cut of the survey (all True without one) and, with a
    ``key``, the draws of its completeness limits (without one, a completeness acts as a cut at
    its 50% point)."""
    sel = jnp.ones(jnp.shape(flux)[0], bool)
    for i, (b, ml, w) in enumerate(obs.limits):
        if w is None or key is None:
            sel = sel & hard_selection(flux, b, ml)
        else:
            u = jax.random.uniform(jax.random.fold_in(key, i), (jnp.shape(flux)[0],))
            sel = sel & (jnp.log(u) < soft_selection_log_weights(flux, b, ml, w))
    return sel


def unfitted_selection_log_probability(obs: Observation, flux, n_nodes: int = 24):
    """log P(a galaxy of noiseless fluxes (N, B) [nmgy] passes the limits on bands outside the
    features) (N,): a galaxy's posterior from the fitted bands must weigh its parameters by it,
    since its selection also depended on a band its likelihood does not see (limits on fitted
    bands act on the observed fluxes, which the likelihood conditions on). Each such limit is
    the expectation of its soft weight (a completeness's own width; a cut's 0.01 mag) over the
    flux noise, Gaussian with the noise model's median sigma at the flux, by Gauss-Hermite
    quadrature on ``n_nodes`` nodes. Zeros without such limits."""
    flux = jnp.asarray(flux)
    out = jnp.zeros(flux.shape[0], flux.dtype)
    fitted = set(range(flux.shape[1]) if obs.feature_idx is None else obs.feature_idx)
    todo = [(b, ml, w) for b, ml, w in obs.limits if b not in fitted]
    if not todo:
        return out
    sigma = noise_sigma_median(obs.noise, flux)
    x, wq = np.polynomial.hermite.hermgauss(n_nodes)
    log_wq = jnp.asarray(np.log(wq / np.sqrt(np.pi)), flux.dtype)
    for b, ml, w in todo:
        f_obs = flux[:, b, None] + np.sqrt(2.0) * sigma[:, b, None] * jnp.asarray(x, flux.dtype)[None, :]  # (N, Q)
        lw = soft_selection_log_weights(f_obs.reshape(-1, 1), 0, ml, 0.01 if w is None else w).reshape(f_obs.shape)
        out = out + jax.scipy.special.logsumexp(lw + log_wq[None, :], axis=1)
    return out
