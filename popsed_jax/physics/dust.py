"""Dust attenuation: FSPS dust_type=4 (Kriek & Conroy 2013) with a birth cloud.

Diffuse dust (all stars): tau(lam) = tau2 * [k_C00(lam) + E_b D(lam)] / R_V * (lam/5500 A)^n_dust,
with k_C00 the Calzetti et al. (2000) curve (R_V = 4.05), a Drude 2175 A bump
D(lam) = E_b lam^2 dlam^2 / ((lam^2 - lam0^2)^2 + lam^2 dlam^2) (lam0 = 0.2175 um,
dlam = 0.035 um) whose strength follows the slope, E_b = 0.85 - 1.9 n_dust
(Kriek & Conroy 2013). Birth clouds (stars <= 10 Myr): tau_bc = tau1 (lam/5500 A)^-1.
Transmission is exp(-tau). Calzetti's UV polynomial is extrapolated below 0.12 um and its
optical/IR law above 2.2 um; k is clipped at 0 (it would turn negative beyond ~3.1 um).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["RV_C00", "BUMP_W0", "BUMP_DW", "LAM_V", "calzetti00_k", "drude_bump", "dust_basis", "diffuse_tau",
    "birth_cloud_tau"]

RV_C00 = 4.05
BUMP_W0 = 0.2175  # um
BUMP_DW = 0.035  # um
LAM_V = 0.55  # um


def calzetti00_k(wave_um):
    """Calzetti et al. (2000) k(lambda) for wavelength in micron (numpy or jax)."""
    x = 1.0 / wave_um
    k_uv = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + RV_C00
    k_ir = 2.659 * (-1.857 + 1.040 * x) + RV_C00
    k = jnp.where(wave_um < 0.63, k_uv, k_ir)
    return jnp.maximum(k, 0.0)


def drude_bump(wave_um, amplitude=1.0):
    """2175 A bump profile D(lambda) with the given amplitude E_b (micron input)."""
    w2 = wave_um**2
    return amplitude * w2 * BUMP_DW**2 / ((w2 - BUMP_W0**2) ** 2 + w2 * BUMP_DW**2)


def dust_basis(wave_angstrom: np.ndarray):
    """Static per-wavelength pieces: (k_C00/R_V, D_unit/R_V, ln(lam/lam_V)), each (n_wave,)."""
    w = np.asarray(wave_angstrom, float) / 1e4
    return (np.asarray(calzetti00_k(w)) / RV_C00, np.asarray(drude_bump(w)) / RV_C00, np.log(w / LAM_V))


def diffuse_tau(tau2, n_dust, kcal, dunit, lnx):
    """Diffuse optical depth (N, n_wave) from (N,) parameters and (n_wave,) static pieces."""
    eb = 0.85 - 1.9 * n_dust
    shape = kcal[None, :] + eb[:, None] * dunit[None, :]
    return tau2[:, None] * shape * jnp.exp(n_dust[:, None] * lnx[None, :])


def birth_cloud_tau(tau1, lnx):
    """Birth-cloud optical depth (N, n_wave): tau1 (lam/5500 A)^-1."""
    return tau1[:, None] * jnp.exp(-lnx)[None, :]
