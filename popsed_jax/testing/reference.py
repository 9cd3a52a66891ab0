"""Reference photometry built from DSPS's own functions, one galaxy at a time.

This is the independent path that tests and ``benchmarks/forward.py`` compare the batched
forward model with (and the "naive DSPS" speed reference). For one galaxy it:

- tabulates the continuous SFH on cosmic time (log-spaced in lookback time, 600 points),
- calls ``dsps.calc_rest_sed_sfh_table_met_table`` (metallicity given as a constant table
  with a tiny scatter, so that all weight falls in one grid bin; a logZ between grid values
  is the linear combination of the two neighbouring calls, which is what the model's
  'interp' mode means) or ``dsps.calc_rest_sed_sfh_table_lognormal_mdf`` ('lognormal'),
- applies dust with DSPS's own curves (``noll09_k_lambda`` with the Kriek & Conroy bump
  strength, ``power_law_vband_norm`` for birth clouds, on SSP ages <= 10 Myr using DSPS's
  weights),
- adds the burst as the grid SSP at the burst's age (exact when t_burst is a grid age),
- and calls ``dsps.calc_obs_mag`` per filter (its curve tabulated densely, see
  :func:`_dense_filter`) with the model's cosmology parameters.

Use it with a cosmology DSPS can express (``cosmology.DSPS_PLANCK15``): flat, no radiation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..physics import sfh as sfh_mod
from ..physics._dsps import import_dsps
from ..physics.cosmology import DSPS_PLANCK15, Cosmology
from ..physics.forward import IDX, ZSUN

__all__ = ["N_T_TABLE", "YOUNG_GYR", "dsps_params", "make_reference"]

N_T_TABLE = 600
YOUNG_GYR = sfh_mod.YOUNG_GYR


def dsps_params(cosmo: Cosmology):
    if cosmo.Tcmb0 != 0:
        raise ValueError("DSPS's cosmology has no radiation: use cosmology.DSPS_PLANCK15 for the reference path")
    return (cosmo.Om0, -1.0, 0.0, cosmo.H0 / 100.0)


def _dense_filter(w, r, dlnlam=2e-4):
    """The same filter curve tabulated every dlnlam in ln(lambda) (linear interpolation).

    ``calc_obs_mag`` samples the spectrum at the filter's wavelengths; speclite's SDSS curves
    are tabulated every ~25-50 A, too sparse for a spectrum with absorption lines, so the
    curve is densified first (the curve itself is unchanged)."""
    x = np.exp(np.arange(np.log(w[0]), np.log(w[-1]), dlnlam))
    x = np.union1d(x, w)
    return jnp.asarray(x), jnp.asarray(np.interp(x, w, r))


def make_reference(grid, bases, filter_curves, cosmo: Cosmology = DSPS_PLANCK15, met_mode="interp", lgmet_scatter=0.2):
    """Return ``mags(theta_row) -> (n_bands,)`` AB magnitudes computed with DSPS (jit/vmap-able)."""
    dsps = import_dsps("dsps")
    dcosmo = import_dsps("dsps.cosmology")
    att = import_dsps("dsps.dust.att_curves")
    cp = dsps_params(cosmo)
    ssp_flux = jnp.asarray(grid.flux, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    lgmet = jnp.asarray(grid.lgmet)
    lg_age = jnp.asarray(grid.lg_age_gyr)
    wave_um = jnp.asarray(grid.wave) / 1e4
    young = jnp.asarray(10**grid.lg_age_gyr <= YOUNG_GYR * (1 + 1e-6))
    tabs = sfh_mod.make_sfh_tables(bases, grid.lg_age_gyr, dtype=ssp_flux.dtype)
    filters = [_dense_filter(w, r) for _, w, r in filter_curves]
    wave = jnp.asarray(grid.wave)

    def sed_and_weights(t_table, sfr, lgz):
        if met_mode == "lognormal":
            res = dsps.calc_rest_sed_sfh_table_lognormal_mdf(t_table, sfr, lgz, lgmet_scatter, lgmet, lg_age, ssp_flux, t_table[-1])
            return res.rest_sed, res.weights.reshape(lgmet.size, lg_age.size), res.lgmet_weights
        lgz_c = jnp.clip(lgz, lgmet[0], lgmet[-1])
        i = jnp.clip(jnp.searchsorted(lgmet, lgz_c, side="right") - 1, 0, lgmet.size - 2)
        f = (lgz_c - lgmet[i]) / (lgmet[i + 1] - lgmet[i])
        out = []
        for node in (lgmet[i], lgmet[i + 1]):
            met_tab = jnp.full_like(t_table, node)
            res = dsps.calc_rest_sed_sfh_table_met_table(t_table, sfr, met_tab, 1e-3, lgmet, lg_age, ssp_flux, t_table[-1])
            out.append(res)
        sed = (1 - f) * out[0].rest_sed + f * out[1].rest_sed
        w = (1 - f) * out[0].weights + f * out[1].weights
        metw = jnp.zeros(lgmet.size).at[i].add(1 - f).at[i + 1].add(f)
        return sed, w, metw

    def mags(theta):
        z = theta[IDX["z"]]
        log_m = theta[IDX["logM"]]
        beta = sfh_mod.kappa_to_beta(theta[2:5])
        tb, fb_in = theta[IDX["t_burst"]], theta[IDX["f_burst"]]
        t_u = dcosmo.age_at_z(z, *cp)[0]
        fb = jnp.where(tb <= t_u, fb_in, 0.0)
        # SFH table on cosmic time, finely log-spaced in lookback time near t_obs
        lb = jnp.concatenate([jnp.zeros(1), jnp.logspace(-6, jnp.log10(t_u - 0.0101), N_T_TABLE - 1)])
        t_table = (t_u - lb)[::-1]
        sfr_frac = sfh_mod.sfr_table(lb[::-1], beta[None], tb[None], fb_in[None], t_u[None], tabs)[0]  # 1/Gyr
        sfr = sfr_frac * 10**log_m / 1e9  # Msun/yr
        lgz = theta[IDX["logZ"]] + jnp.log10(ZSUN)
        sed0, weights, metw = sed_and_weights(t_table, sfr, lgz)
        mstar = jnp.sum(sed0) / jnp.sum(jnp.sum(weights[:, :, None] * ssp_flux, axis=(0, 1)))
        # dust with DSPS's curves: A = k av / 4.05, F = 10^(-0.4 A); av = 2.5 log10(e) tau2
        n_dust = theta[IDX["n_dust"]]
        k_d = att.noll09_k_lambda(wave_um, att._get_eb_from_delta(n_dust), n_dust)
        t_d = att._frac_transmission_from_k_lambda(k_d, 2.5 * jnp.log10(jnp.e) * theta[IDX["tau2"]])
        t_bc = jnp.exp(-theta[IDX["tau1"]] * att.power_law_vband_norm(wave_um, -1.0))
        att_w = jnp.where(young[None, :, None], t_bc[None, None, :], 1.0)
        sed = mstar * jnp.sum(weights[:, :, None] * ssp_flux * att_w, axis=(0, 1)) * t_d
        # burst: the grid SSP at its age, same metallicity weights
        ia = jnp.argmin(jnp.abs(lg_age - jnp.log10(tb)))
        burst = jnp.sum(metw[:, None] * ssp_flux[:, ia, :], 0) * jnp.where(young[ia], t_bc, 1.0) * t_d
        sed = sed + fb * 10**log_m * burst
        return jnp.stack([dsps.calc_obs_mag(wave, sed, w, r, z, *cp) for w, r in filters])

    return mags
