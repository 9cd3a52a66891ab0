"""The survey's observation operator: noiseless model fluxes -> what the survey records.

One frozen pytree, :class:`Observation`, holds the noise model, the selection (a flux limit in
one band), and the loss features' softening and standardization. Training, validation, mocks,
population samples and evaluation all observe simulated galaxies through it:

    flux (N, B) nmgy --noisy--> (N, B) --features--> (N, D) standardized asinh mags / colours
                                      \\--selection--> (N,) log-weights (soft) or mask (hard)

Every function is pure ``jax.numpy`` and jit-able with the Observation as an argument (its
arrays are leaves; band index, limit, width and the colour switch are static).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .features import make_features, softening_from_noise
from .noise import NoiseModel, add_noise
from .selection import band_index, hard_selection, parse_limit, soft_selection_log_weights

__all__ = ["Observation", "make_observation", "noisy_fluxes", "features", "selection_log_weights",
           "selection_weights", "is_selected"]


@dataclasses.dataclass(frozen=True)
class Observation:
    """Noise, selection and feature scaling of a survey (a pytree).

    noise: the per-band :class:`NoiseModel`; softening (B,): asinh softening b per band;
    mean, std (D,): feature standardization (None: features are not standardized);
    band_idx / mag_lim: the flux limit (None: no selection); selection_width [mag]: width of
    the soft selection used in training; colours: features are [m_ref, adjacent colours].
    """

    noise: NoiseModel
    softening: jax.Array
    mean: Optional[jax.Array] = None
    std: Optional[jax.Array] = None
    band_idx: Optional[int] = None
    mag_lim: Optional[float] = None
    selection_width: float = 0.05
    colours: bool = True

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
    meta_fields=["band_idx", "mag_lim", "selection_width", "colours"])


def make_observation(noise: NoiseModel, limit: str | None = None, *, colours: bool = True,
                     selection_width: float = 0.05, stats=None, dtype=jnp.float32) -> Observation:
    """An :class:`Observation` from a noise model and a limit such as 'r<17.77' (None: no cut).

    stats: (mean, std) of the features (e.g. from the observed catalog), or None."""
    bi = ml = None
    if limit:
        band, ml = parse_limit(limit, noise.bands)
        bi = band_index(noise.bands, band)
    mean = std = None
    if stats is not None:
        mean, std = (jnp.asarray(np.asarray(s), dtype) for s in stats)
    return Observation(noise, jnp.asarray(softening_from_noise(noise), dtype), mean, std, bi, ml,
                       float(selection_width), bool(colours))


def noisy_fluxes(obs: Observation, flux, key, noise_scale=1.0):
    """Noisy fluxes and the errors drawn for them, each (N, B) [nmgy] (see ``noise.add_noise``)."""
    return add_noise(obs.noise, flux, key, scale=noise_scale)


def features(obs: Observation, flux):
    """Loss features (N, D) of fluxes (N, B): standardized when the observation has stats."""
    return make_features(flux, obs.softening, stats=obs.stats, colours=obs.colours)


def selection_log_weights(obs: Observation, flux):
    """log of the soft selection weight (N,) of each flux row, or None without a limit."""
    if obs.band_idx is None:
        return None
    return soft_selection_log_weights(flux, obs.band_idx, obs.mag_lim, obs.selection_width)


def selection_weights(obs: Observation, flux):
    """Soft selection weights (N,) in [0, 1], or None without a limit."""
    logw = selection_log_weights(obs, flux)
    return None if logw is None else jnp.exp(logw)


def is_selected(obs: Observation, flux):
    """Hard selection mask (N,): passes the survey's flux limit (all True without one)."""
    if obs.band_idx is None:
        return jnp.ones(jnp.shape(flux)[0], bool)
    return hard_selection(flux, obs.band_idx, obs.mag_lim)
