"""Drawing the flow where the survey can see: more selected draws per forward-model evaluation.

The training loss compares the *selected* simulated galaxies (the flow's draws weighted by their
soft selection probability) with the observed ones. Where the population holds few galaxies the
survey can see -- the physical mock's fits end with 1-8% of their draws selected, SDSS fits with
~24% -- only tens of a step's ``n_sim`` draws carry its loss, and the gradient is noise.

With ``FitConfig.oversample = R > 1`` a step draws R n_sim base points, pushes them through the
flow *without* gradients (cheap next to the forward model), screens them with the exact upper
bound on their limit-band flux of :mod:`popsed_jax.survey.visibility`, and forward-models n_sim of
them, mostly visible ones, with gradients:

* **visible stratum** (bound above f_min): the first ``n_sim - n_sim // 8`` of the draws in
  visible-first order, a uniform subsample of q_phi restricted to the region V where selection is
  possible (all of them when fewer);
* **invisible stratum**: the last ``n_sim // 8`` of that order, a uniform subsample of the rest.

Selected distribution (the loss): the selection weights are softmax-normalised over the chosen
draws, and a draw outside V has a weight below 1e-6 of a selected one (f_min is the limit moved
fainter by 14 selection widths, where log_sigmoid < -14, and then by a noise margin that a
galaxy's noise crosses with probability ~1e-15, :func:`~popsed_jax.survey.visibility.noise_margin_mag`),
so the weighted draws estimate the same q_phi P(sel | theta) / Z from up to R times as many
selected draws. The stratum choice is piecewise constant in phi and the weights vanish on V's
boundary, so the pathwise gradient carries no boundary term.

KL term: an unbiased stratified estimate, each chosen draw weighing (its stratum's share of the R
n_sim draws) / (its stratum's number of chosen draws): :func:`stratified_pick`.

A limit whose noise is too large for a safe margin (2MASS Ks near its detection limit) is not
screened; the screen is then a superset of V for the limits left, still exact.
"""
from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..physics.forward import ForwardModel
from ..physics.photometry import mag_to_flux
from ..survey import visibility as vis

__all__ = ["VisibleScreen", "make_screen", "screen_visible", "stratified_pick", "SOFT_WIDTHS", "INVISIBLE_SHARE"]

# the screen's flux floor lies this many selection widths fainter than each limit: there the soft
# selection weight sigmoid(-14) = 8e-7 of a selected galaxy's
SOFT_WIDTHS = 14.0
INVISIBLE_SHARE = 8  # n_sim // INVISIBLE_SHARE chosen draws come from outside V (for the KL term)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VisibleScreen:
    """Flux tables of the screened limit bands (L, n_shift + 2, n_met, n_age) [AB0 per Msun, as
    :func:`~popsed_jax.survey.visibility.band_flux_table`] and the smallest noiseless flux in each
    that can still carry selection weight, log10 f_min (L,) [nmgy]."""

    tables: jax.Array
    log_f_min: jax.Array
    bands: tuple = dataclasses.field(metadata=dict(static=True), default=())


def make_screen(model: ForwardModel, obs) -> VisibleScreen | None:
    """The screen of an :class:`~popsed_jax.survey.observation.Observation`'s limits, or None
    when it has none (or no limit allows a safe noise margin)."""
    tables, logf, names = [], [], []
    for b, ml, w in obs.limits:
        width = obs.selection_width if w is None else w
        f_soft = float(mag_to_flux(ml)) * 10 ** (-0.4 * SOFT_WIDTHS * width)
        try:
            margin = vis.noise_margin_mag(obs.noise, b, f_soft)
        except ValueError:
            warnings.warn(f"oversample: the limit on {obs.bands[b]} is not screened (its noise near the limit is too "
                          f"large for a safe margin); the draws are screened on the other limits only", stacklevel=2)
            continue
        tables.append(vis.band_flux_table(model, b))
        logf.append(np.log10(f_soft) - 0.4 * margin)
        names.append(obs.bands[b])
    if not tables:
        return None
    return VisibleScreen(jnp.asarray(np.stack(tables), jnp.float32), jnp.asarray(logf, jnp.float32), tuple(names))


def screen_visible(model: ForwardModel, screen: VisibleScreen, theta):
    """Whether each draw theta (N, 11) may carry selection weight (N,) bool: its flux upper
    bound reaches f_min in every screened band. A draw screened out cannot be selected."""
    ok = jnp.ones(theta.shape[0], bool)
    for i in range(screen.tables.shape[0]):
        ub = vis.flux_upper_bound(model, screen.tables[i], theta)
        ok = ok & (jnp.log10(jnp.maximum(ub, 1e-30)) >= screen.log_f_min[i])
    return ok


def stratified_pick(visible, n: int):
    """Which n of the M draws (visible: (M,) bool, the draws in random order) to forward-model,
    and their weights in the KL estimate: (idx (n,) int, kl_weight (n,), summing to 1).

    Order the draws visible first (each stratum keeps its random order) and take the first
    n - n // INVISIBLE_SHARE and the last n // INVISIBLE_SHARE: the two blocks never overlap (M >= n),
    each stratum's chosen draws are a uniform subsample of it, and a draw's KL weight is
    (stratum size / M) / (stratum's chosen count)."""
    m = visible.shape[0]
    n_b = n // INVISIBLE_SHARE
    order = jnp.argsort(~visible, stable=True)
    idx = jnp.concatenate([order[:n - n_b], order[m - n_b:]])
    vis_c = visible[idx]
    n_vis = jnp.sum(visible)
    c_vis = jnp.sum(vis_c)
    share = jnp.where(vis_c, n_vis / m, (m - n_vis) / m)
    count = jnp.where(vis_c, c_vis, n - c_vis)
    return idx, share / jnp.maximum(count, 1)
