"""Literature relations used as references and priors, each with its source.

Masses are Chabrier-IMF stellar masses [Msun] unless stated; h = H0 / (100 km/s/Mpc).
"""
from __future__ import annotations

import numpy as np

from .cosmology import PLANCK15

__all__ = ["BALDRY12", "WEIGEL16", "double_schechter_log_smf", "weigel16_log_smf", "BALDRY04_UR_DIVIDER", "baldry04_ur_divider", "MS_SCATTER_DEX", "QUIESCENT_OFFSET_DEX", "QUIESCENT_SCATTER_DEX", "PENG10_MASS_QUENCHING", "peng10_log_quenched_fraction", "H_SHIFT_DEX", "baldry12_log_smf", "KROUPA_TO_CHABRIER_DEX", "GALLAZZI05", "baldry12_smf", "speagle14_sfms",
           "renzini_peng15_sfms", "gallazzi05_mzr"]

# Baldry et al. (2012, MNRAS 421, 621), GAMA z < 0.06 double-Schechter GSMF, H0 = 70
BALDRY12 = dict(logMstar=10.66, phi1=3.96e-3, alpha1=-0.35, phi2=0.79e-3, alpha2=-1.47, h=0.7)
H_SHIFT_DEX = 2.0 * np.log10(0.7 / 0.6774)  # Baldry's h=0.7 masses -> Planck15 h (M ~ h^-2)
# Gallazzi et al. (2005, MNRAS 362, 41), Table 2: SDSS DR2 stellar mass-stellar metallicity
# relation (BC03, Chabrier IMF, h = 0.7): log M* [Msun], then the 50th, 16th and 84th
# percentiles of log(Z*/Zsun) (Zsun = 0.02) in each mass bin
GALLAZZI05 = np.array([
    [8.87, -0.60, -1.11, -0.00], [9.07, -0.61, -1.07, -0.00], [9.27, -0.65, -1.10, -0.05],
    [9.47, -0.61, -1.03, -0.01], [9.68, -0.52, -0.97, 0.05], [9.87, -0.41, -0.90, 0.09],
    [10.07, -0.23, -0.80, 0.14], [10.27, -0.11, -0.65, 0.17], [10.47, -0.01, -0.41, 0.20],
    [10.68, 0.04, -0.24, 0.22], [10.87, 0.07, -0.14, 0.24], [11.07, 0.10, -0.09, 0.25],
    [11.27, 0.12, -0.06, 0.26], [11.47, 0.13, -0.04, 0.28], [11.68, 0.14, -0.03, 0.29],
    [11.87, 0.15, -0.03, 0.30],
])
# Peng et al. (2010, ApJ 721, 193): the SDSS DR4 red fraction, separable in mass and
# environment, f_red = 1 - exp(-(rho/p1)^p2 - (m/p3)^p4); the mass term alone ("mass quenching",
# the red fraction where environment quenching vanishes): p3 = 10^10.56 Msun, p4 = 0.80.
PENG10_MASS_QUENCHING = dict(logm_q=10.56, p4=0.80)
# the SFR - M* plane of z ~ 0 galaxies, as the physical mock and the "physical" prior draw it: the
# main sequence's intrinsic scatter (Speagle et al. 2014: ~0.2 dex) and the quenched peak ~1.5 dex
# below it with ~0.4 dex spread (Renzini & Peng 2015, ApJL 801, L29, Fig. 1; Wetzel, Tinker &
# Conroy 2012, MNRAS 424, 232: sSFR ~ 10^-12 /yr, bimodality break at 10^-11 /yr)
MS_SCATTER_DEX = 0.2
QUIESCENT_OFFSET_DEX = -1.5
QUIESCENT_SCATTER_DEX = 0.4
# Baldry et al. (2004, ApJ 600, 681, eq. 11): the optimal divider between the red and blue
# sequences of SDSS galaxies (0.004 < z < 0.08) in rest-frame (z = 0) u - r against M_r,
# C'_ur = 2.06 - 0.244 tanh((M_r + 20.07) / 1.09); Peng et al. (2010) measured their SDSS red
# fraction (f_q below) with colour-mass cuts of this kind (Baldry et al. 2006)
BALDRY04_UR_DIVIDER = dict(c0=2.06, amp=0.244, m0=-20.07, width=1.09)
KROUPA_TO_CHABRIER_DEX = -0.03  # log M (and log SFR) Chabrier - Kroupa, ~0.03 dex (e.g. Madau & Dickinson 2014: 0.61/0.66)
# Weigel, Schawinski & Bruderer (2016, MNRAS 459, 2150), SDSS DR7 0.02 < z < 0.06 (~8,000 deg^2,
# a volume ~50x GAMA's at z < 0.06): the whole sample's double Schechter with a shared M*,
# log M* = 10.79, log phi = -2.01 (alpha -0.79) and -3.31 (alpha -1.69) [h^3 Mpc^-3]; their
# masses are MPA-JHU's (Kroupa IMF, h = 0.7), taken to Chabrier with KROUPA_TO_CHABRIER_DEX. Used
# for its shape (the priors normalise it on the box): the massive end, where GAMA's small volume
# at z < 0.06 holds few galaxies, falls off 0.1 dex later than Baldry+12's
WEIGEL16 = dict(logMstar=10.79 + KROUPA_TO_CHABRIER_DEX, phi1=10**-2.01, alpha1=-0.79, phi2=10**-3.31, alpha2=-1.69, h=0.7)


def double_schechter_log_smf(logM, p: dict, h: float = PLANCK15.H0 / 100.0, xp=np):
    """ln of a double-Schechter GSMF with a shared M* [ln(Mpc^-3 dex^-1)], parameters ``p`` as in
    ``BALDRY12`` (masses and phi at Hubble parameter p['h']), in log form:
    -x + ln(phi1* x^(alpha1+1) + phi2* x^(alpha2+1)) + ln(ln10 (h/p_h)^3), x = M/M*, which stays
    finite where exp(-M/M*) underflows (float32 beyond log M ~ 12.7). ``xp``: the array module
    (``jax.numpy`` for a differentiable density in the input's dtype)."""
    shift = 2.0 * np.log10(p["h"] / h)  # masses ~ h^-2 (H_SHIFT_DEX for p_h = 0.7 at Planck15's h)
    lnx = ((np.asarray(logM, float) if xp is np else logM) - float(p["logMstar"] + shift)) * float(np.log(10.0))
    const = float(np.log(np.log(10.0)) + 3.0 * np.log(h / p["h"]))
    return const - xp.exp(lnx) + xp.logaddexp(float(np.log(p["phi1"])) + (p["alpha1"] + 1) * lnx,
                                               float(np.log(p["phi2"])) + (p["alpha2"] + 1) * lnx)


def baldry12_log_smf(logM, h: float = PLANCK15.H0 / 100.0, xp=np):
    """ln of the Baldry et al. (2012) GSMF of :func:`baldry12_smf` [ln(Mpc^-3 dex^-1)]
    (:func:`double_schechter_log_smf` of ``BALDRY12``)."""
    return double_schechter_log_smf(logM, BALDRY12, h, xp)


def weigel16_log_smf(logM, h: float = PLANCK15.H0 / 100.0, xp=np):
    """ln of the Weigel et al. (2016) SDSS DR7 GSMF (``WEIGEL16``; Chabrier masses) up to a
    constant: its shape, for priors normalised on a box (:func:`double_schechter_log_smf`)."""
    return double_schechter_log_smf(logM, WEIGEL16, h, xp)


def peng10_log_quenched_fraction(logm_surviving, xp=np):
    """(ln f_q, ln(1 - f_q)) of the mass-quenched (red) fraction of Peng et al. (2010):
    f_q = 1 - exp(-(M*/10^10.56)^0.80), M* the surviving (current) stellar mass [Msun]; both
    logs are formed without cancellation (ln(1 - f_q) = -(M*/Mq)^0.8 exactly). ``xp``: numpy or
    jax.numpy (differentiable, the input's dtype)."""
    p = PENG10_MASS_QUENCHING
    lm = np.asarray(logm_surviving, float) if xp is np else logm_surviving
    x = xp.exp((lm - p["logm_q"]) * float(p["p4"] * np.log(10.0)))
    return xp.log(-xp.expm1(-x)), -x


def baldry04_ur_divider(m_r, xp=np):
    """Rest-frame u - r [AB mag] dividing red from blue SDSS galaxies at absolute magnitude
    ``m_r`` (Baldry et al. 2004, eq. 11); numpy or jax.numpy via ``xp``."""
    p = BALDRY04_UR_DIVIDER
    return p["c0"] - p["amp"] * xp.tanh((m_r - p["m0"]) / p["width"])


def baldry12_smf(logM, h: float = PLANCK15.H0 / 100.0) -> np.ndarray:
    """Baldry et al. (2012, MNRAS 421, 621; GAMA, z < 0.06, Chabrier IMF) double Schechter GSMF.

    phi(logM) = ln10 exp(-M/M*) [phi1* (M/M*)^(alpha1+1) + phi2* (M/M*)^(alpha2+1)] [Mpc^-3 dex^-1],
    with M* = 10^10.66 Msun, phi1* = 3.96e-3, alpha1 = -0.35, phi2* = 0.79e-3, alpha2 = -1.47 for
    H0 = 70 (``BALDRY12``). Converted to Hubble parameter h: M* ∝ h^-2, phi* ∝ h^3
    (for Planck15's h = 0.6774, M* moves by ``H_SHIFT_DEX`` = +0.0285 dex).
    """
    return np.exp(baldry12_log_smf(logM, h))


def speagle14_sfms(logM, t_gyr, chabrier: bool = False, xp=np):
    """Speagle et al. (2014, ApJS 214, 15, eq. 28) main sequence, log SFR [Msun/yr]:

        log SFR = (0.84 - 0.026 t) log M - (6.51 - 0.11 t),   t = age of the universe [Gyr],

    for a Kroupa IMF. chabrier=True takes Chabrier masses and returns Chabrier SFRs: both are
    ~0.03 dex below Kroupa (``KROUPA_TO_CHABRIER_DEX``), so log M is raised by 0.03 before and
    log SFR lowered by 0.03 after (net (a - 1) x 0.03 ~ -0.015 dex at z~0). ``xp``: numpy (float64)
    or jax.numpy (differentiable, the inputs' dtype).
    """
    if xp is np:
        logM, t_gyr = np.asarray(logM, float), np.asarray(t_gyr, float)
    t = t_gyr
    d = KROUPA_TO_CHABRIER_DEX if chabrier else 0.0
    return (0.84 - 0.026 * t) * (logM - d) - (6.51 - 0.11 * t) + d


def renzini_peng15_sfms(logM):
    """Renzini & Peng (2015, ApJL 801, L29) main sequence of SDSS (z ~ 0) star-forming galaxies:
    log SFR = 0.76 log M - 7.64 [Msun/yr], applied as published (no IMF conversion)."""
    return 0.76 * np.asarray(logM, float) - 7.64


def gallazzi05_mzr(logM):
    """Gallazzi et al. (2005) stellar mass-metallicity relation at log M* [Msun]: the 16th, 50th
    and 84th percentiles of log(Z*/Zsun) (Zsun = 0.02), each shaped like ``logM``; linear
    interpolation in their Table 2, held flat beyond its mass range (8.87-11.87)."""
    x = np.asarray(logM, float)
    t = GALLAZZI05
    return tuple(np.interp(x, t[:, 0], t[:, k]) for k in (2, 1, 3))
