"""Where a flux-limited survey can see: exact upper bounds on a galaxy's limit-band flux.

A magnitude-limited survey sees a tiny corner of a volume-weighted population (r < 17.77 keeps
~0.3% of the Table-2 or physical draws), so a mock that draws everywhere and forward-models
every draw wastes almost all of its time. Two bounds let :func:`popsed_jax.survey.mock.draw_mock`
skip what cannot be selected without changing the distribution of what is:

1. **Per draw** (:func:`flux_upper_bound`): the model's noiseless flux in the limit band is
   ``T_diffuse * (L_all + (T_birth - 1) L_young)`` observed through the filter. The birth-cloud
   term only removes light (tau1 >= 0, young SSP light >= 0) and the diffuse transmission is
   at most ``t_max(lambda)``, its largest value over the parameter box (1 wherever the
   attenuation curve is non-negative), so the flux is at most the *dust-free* flux of the same
   SSP weights seen through ``t_max``. On the model's uniform ln(lambda) grid a redshift is a
   shift by u = ln(1+z)/dlnlam cells, linearly interpolated between whole cells, so the band
   flux of every SSP row at every whole shift, a table (n_shift, n_met, n_age), gives that
   dust-free flux *exactly* by the same interpolation: one small contraction with the SSP
   weights per draw instead of the forward model's (n_met n_age) x n_rest matmul.
2. **Per (z, log M)** (:func:`visible_cells`): the age-bin masses of any SFH in the box are a
   convex mix of the four normalized bases and a burst no younger than t_burst's lower bound
   (10 Myr), so over one cell of whole shifts no unit-mass SED is brighter in the limit band
   (dust-free) than the brightest single basis or burst-reachable SSP age, at either end of
   the cell, times the distance factor (1+z)/d_L^2 at the cell's near end (it falls with z). Below
   log M = log f_min - log(that flux) nothing can be selected, whatever the SFH, metallicity or
   dust; :func:`visible_zlogm_sampler` draws the volume-weighted (z, log M) prior restricted to
   the region above it, exactly (same tabulated CDFs as the unrestricted sampler).

f_min is the flux limit lowered by a noise margin (:func:`noise_margin_mag`) wide enough that a
galaxy below it reaches the limit through its noise with probability ~1e-15: both bounds are
exact, the mock's distribution is the same as drawing everywhere (a test compares the two).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..physics import cosmology as cosmo_mod
from ..physics import dust
from ..physics.forward import ForwardModel, ssp_weights
from ..physics.params import IDX, PARAM_BOUNDS

__all__ = ["dust_max_transmission", "band_flux_table", "flux_upper_bound", "visible_cells",
           "visible_zlogm_sampler", "noise_margin_mag", "SAFETY"]

SAFETY = 1.01  # relative allowance on every bound: float32 forward model against float64 tables


def dust_max_transmission(model: ForwardModel, n_grid: int = 401) -> np.ndarray:
    """Largest diffuse-dust transmission exp(-tau_d) over the box of (tau2, n_dust), per rest
    wavelength (n_rest,): 1 where the attenuation curve kcal + E_b D is non-negative for every
    slope n (E_b = 0.85 - 1.9 n), above 1 where a negative bump makes it negative."""
    n_lo, n_hi = PARAM_BOUNDS["n_dust"]
    tau2_hi = PARAM_BOUNDS["tau2"][1]
    n = np.linspace(n_lo, n_hi, n_grid)
    kcal, dunit, lnx = (np.asarray(a, float) for a in (model.kcal, model.dunit, model.lnx))
    shape = (kcal[None] + (0.85 - 1.9 * n)[:, None] * dunit[None]) * np.exp(n[:, None] * lnx[None])
    worst = np.minimum(shape.min(0), 0.0)  # most negative optical depth per unit tau2
    return np.exp(-tau2_hi * worst)


def band_flux_table(model: ForwardModel, band: int) -> np.ndarray:
    """Dust-free `band` flux per unit formed mass of every SSP row at every whole redshift shift,
    before the distance factor: (n_shift + 2, n_met, n_age) [AB0 units, as the filter matrix],
    n_shift = floor(ln(1 + z_max) / dlnlam). Row m is the filter-weighted mean of the rest
    spectrum shifted by m cells, i.e. ``redshift_to_obs_grid`` at u = m, times
    :func:`dust_max_transmission`."""
    n_met = model.lgmet.shape[0]
    ssp = np.asarray(model.ssp_all, float) * dust_max_transmission(model)[None]
    filt = np.asarray(model.filt, float)[:, band]
    n_obs, k0 = filt.size, int(model.k0)
    n_shift = int(np.floor(np.log1p(model.z_max) / model.dlnlam))
    rows = [ssp[:, k0 - m: k0 - m + n_obs] @ filt for m in range(n_shift + 2) if k0 - m >= 0]
    if len(rows) < n_shift + 2:
        raise ValueError(f"the model's rest grid does not reach z_max = {model.z_max} by whole shifts")
    return np.stack(rows).reshape(n_shift + 2, n_met, -1)


def _distance_factor(model: ForwardModel, z):
    """0.1 (1 + z) / d_L^2 [Mpc^-2]: AB0-unit band flux per Msun -> nanomaggies (as the model)."""
    return 0.1 * (1 + z) / cosmo_mod.lum_distance(z, model.cosmo) ** 2


def flux_upper_bound(model: ForwardModel, table, theta):
    """Upper bound (N,) [nmgy] on the noiseless limit-band flux of theta (N, 11): the dust-free
    flux through the largest dust transmission (see the module docstring), times ``SAFETY``.

    table: :func:`band_flux_table` for the limit band (a jnp array). Pure and jit-able."""
    theta = jnp.asarray(theta, table.dtype)
    z = theta[:, IDX["z"]]
    wmet, mass, _ = ssp_weights(model, theta)
    u = jnp.log1p(z) / model.dlnlam
    m = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, table.shape[0] - 2)
    f = (u - m)[:, None, None]
    tz = (1 - f) * table[m] + f * table[m + 1]  # (N, n_met, n_age)
    per_mass = jnp.einsum("nm,na,nma->n", wmet.astype(table.dtype), mass.astype(table.dtype), tz)
    dist = _distance_factor(model, z).astype(table.dtype)
    return SAFETY * per_mass * dist * 10.0 ** theta[:, IDX["logM"]]


def _brightest_unit_mass(model: ForwardModel, table, ms, t_u):
    """Largest dust-free limit-band flux (before the distance factor) per unit formed mass that any
    SFH of the parameter box can give at whole shifts ms (C,) with universe ages t_u (C,) [Gyr]:
    (C,). The age-bin masses are (1 - f_b) x a convex mix of the normalized bases + f_b x a
    burst at lookback >= t_burst's lower bound, so the flux is at most the largest of the single
    bases and of the SSP ages a burst can reach, each at its best metallicity."""
    from ..physics import sfh
    n_k = model.sfh.c_edges.shape[-1]
    c = len(ms)
    beta = jnp.repeat(jnp.eye(n_k, dtype=table.dtype)[None], c, 0).reshape(c * n_k, n_k)
    tu = jnp.repeat(jnp.asarray(t_u, table.dtype), n_k)
    zero = jnp.zeros(c * n_k, table.dtype)
    w = np.asarray(sfh.age_mass_fractions(beta, zero + 1.0, zero, tu, model.sfh), float).reshape(c, n_k, -1)
    t = np.asarray(table, float)[ms]  # (C, n_met, n_age)
    bases = np.nanmax(np.einsum("cka,cma->ckm", w, t).reshape(c, -1), 1)  # a basis with no mass yet: NaN, skipped
    lg_min = np.log10(PARAM_BOUNDS["t_burst"][0])
    lg_age = np.asarray(model.sfh.lg_age, float)
    i0 = int(np.clip(np.searchsorted(lg_age, lg_min, side="right") - 1, 0, lg_age.size - 2))
    burst = t[:, :, i0:].reshape(c, -1).max(1)
    return np.maximum(bases, burst)


def visible_cells(model: ForwardModel, table, z_range):
    """Cells of whole redshift shifts over `z_range` and the largest limit-band flux a unit
    formed mass can have in each: (z_edges (C + 1,), log10 flux per Msun (C,)) [nmgy].

    In a cell the flux of fixed SSP weights interpolates linearly between the cell's two whole
    shifts and the distance factor falls with z; the bases' age-bin masses change slightly with
    the age of the universe across the cell, so both ends' ages are tried at both shifts. (Where
    an age-bin edge falls between the two ages the masses in between are not quite a mix of the
    ends'; the difference, < 0.1% from the two oldest bins, is inside ``SAFETY``.)"""
    dl = model.dlnlam
    m_lo = int(np.floor(np.log1p(z_range[0]) / dl))
    m_hi = int(np.ceil(np.log1p(z_range[1]) / dl))
    ms = np.arange(m_lo, m_hi + 1)
    if ms[-1] > table.shape[0] - 1:
        raise ValueError(f"z_range {z_range} reaches beyond the forward model's z_max = {model.z_max}")
    z_edges = np.expm1(ms * dl)
    t_u = np.asarray(cosmo_mod.age_at_z(jnp.asarray(z_edges, jnp.float32), model.cosmo), float)
    cell_max = np.max([_brightest_unit_mass(model, table, ms[i:len(ms) - 1 + i], t_u[j:len(ms) - 1 + j])
                       for i in (0, 1) for j in (0, 1)], axis=0)
    z_edges[0], z_edges[-1] = z_range
    z_near = np.maximum(z_edges[:-1], 1e-6)
    dist = np.asarray(_distance_factor(model, jnp.asarray(z_near, jnp.float32)), float)
    return z_edges, np.log10(np.maximum(SAFETY * cell_max * dist, 1e-300))


def _cell_probabilities(x, cdf, edges):
    """Probability of each interval [edges[i], edges[i+1]] under the piecewise-linear CDF (x, cdf)."""
    return np.diff(np.interp(edges, x, cdf))


def visible_zlogm_sampler(z_tab, logm_tab, z_edges, log_flux_per_mass, log_f_min):
    """(z, log M formed) sampler of the prior restricted to where the survey can see, exactly.

    z_tab = (z nodes, CDF) and logm_tab = (log M formed nodes, CDF): the piecewise-linear CDFs
    the unrestricted sampler inverts (so the restricted draws follow the same prior); z_edges,
    log_flux_per_mass: :func:`visible_cells`; log_f_min: log10 of the smallest flux that can
    still be selected [nmgy]. In each cell (split at the z nodes too, where the density is
    uniform), log M must exceed log_f_min - log_flux_per_mass: the cell is chosen with its z
    probability times the mass-function probability above that, z uniformly in it and log M
    from the mass CDF above the threshold. ``sampler.visible_fraction`` is the prior
    probability of the region (draws saved = 1 / it)."""
    zx, zc = (np.asarray(a, float) for a in z_tab)
    mx, mc = (np.asarray(a, float) for a in logm_tab)
    edges = np.unique(np.concatenate([z_edges, zx[(zx > z_edges[0]) & (zx < z_edges[-1])]]))
    which = np.clip(np.searchsorted(z_edges, 0.5 * (edges[:-1] + edges[1:])) - 1, 0, len(log_flux_per_mass) - 1)
    logm_min = log_f_min - np.asarray(log_flux_per_mass)[which]
    c_min = np.interp(logm_min, mx, mc)  # mass CDF at the threshold (0 below, 1 above the range)
    w = _cell_probabilities(zx, zc, edges) * (1.0 - c_min)
    total = w.sum()
    if total <= 0:
        raise ValueError("no part of the (z, logM) prior can pass the flux limit: widen z_range/logM range or loosen the limit")
    cum = np.cumsum(w) / total

    def sample(n, rng):
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        i = np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(w) - 1)
        z = edges[i] + (edges[i + 1] - edges[i]) * rng.random(n)
        c = c_min[i] + (1.0 - c_min[i]) * rng.random(n)
        return z, np.interp(c, mc, mx)

    sample.visible_fraction = float(total / (zc[-1] - zc[0]) / (mc[-1] - mc[0]))
    sample.z_max = float(z_edges[-1])
    sample.__name__ = "the volume-weighted prior where the survey can see"
    return sample


def noise_margin_mag(noise, band: int, f_lim: float, n_sigma: float = 8.0, n_scatter: float = 8.0) -> float:
    """Smallest margin dm [mag] (in steps of 0.05, at least 0.1) such that a galaxy fainter than
    f_lim 10^(-0.4 dm) reaches f_lim through its noise only by an n_sigma deviation of a flux
    error that is itself n_scatter widths above its median: P ~ 1e-15 (each tail 6e-16).
    noise: NoiseModel."""
    from .noise import noise_ln_scatter, noise_sigma_median
    b = len(noise.bands)
    for dm in np.arange(0.1, 3.0001, 0.05):
        f_min = f_lim * 10 ** (-0.4 * dm)
        f = np.linspace(0.0, f_min, 64)
        ff = jnp.asarray(np.repeat(f[:, None], b, 1), jnp.float32)
        sig = np.asarray(noise_sigma_median(noise, ff))[:, band]
        hi = np.asarray(noise_ln_scatter(noise, ff)[1])[:, band]
        # the scatter draw eps @ chol.T is N(0, 1) in each band (chol: of a correlation matrix)
        worst = np.max(f + n_sigma * sig * np.exp(n_scatter * hi))
        if worst < f_lim:
            return float(round(dm, 2))
    raise ValueError(f"noise in band {noise.bands[band]} is too large near the limit for a safe margin < 3 mag")
