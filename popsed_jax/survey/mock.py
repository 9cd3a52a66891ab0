"""Mock surveys: the paper's Table-2 population or a "physical" one, observed like the SDSS main sample.

Population (docs/design.md section 2, the paper's Table 2; TN(mu, sd) on [lo, hi] is a
normal truncated to the interval)::

    kappa1 ~ TN(0.5, 0.3) on [0, 1]        kappa2, kappa3 ~ U(0, 1)
    t_burst ~ TN(12, 7) on [0.01, 13.27]   f_burst ~ TN(0.1, 0.7) on [0, 1]
    logZ ~ TN(-1.2, 0.9) on [-2.6, 0.3]    n_dust ~ TN(2, 2) on [-3, 1]
    tau1 ~ TN(1, 0.8) on [0, 3]            tau2 ~ TN(0.6, 0.8) on [0, 3]

(z, logM): the paper took these from GAMA DR3, which we do not have. Instead the default
is a *volume-weighted, non-evolving* population, independent in z and mass:

* z ~ dV_c/dz (Planck15, astropy) on [0.005, 0.4] -- uniform in comoving volume;
  r < 17.77 sees essentially nothing beyond z = 0.4 at logM <= 12.5.
* log M_surviving ~ the double-Schechter stellar mass function of Baldry et al. (2012,
  MNRAS 421, 621; GAMA, z < 0.06, Chabrier IMF): log M* = 10.66, phi1 = 3.96e-3,
  alpha1 = -0.35, phi2 = 0.79e-3, alpha2 = -1.47 (h = 0.7), i.e.
  phi(log M) dlogM = ln10 exp(-M/M*) [phi1 (M/M*)^(alpha1+1) + phi2 (M/M*)^(alpha2+1)] dlogM.
  Masses are moved to Planck15's h = 0.6774 (M ~ h^-2: +0.0285 dex, ``H_SHIFT_DEX``).
* logM (mass *formed*, theta column 1) = log M_surviving + ``FORMED_MINUS_SURVIVING_DEX``
  = 0.23 dex: the median of logM - logM_surviving (living stars + remnants, as GAMA's masses)
  from ``forward.derived_quantities`` over Table-2 draws (5000 draws, z in [0.02, 0.3]:
  median 0.226, mean 0.225, sd 0.013, 5-95% 0.204-0.241; re-measure with
  :func:`measure_formed_minus_surviving`; a test keeps the two in step), truncated to [8.0, 12.5].

Physical preset (``draw_mock(..., population="physical")``, ``popsed-jax mock --population
physical``; :func:`sample_physical`): the same (z, logM), but metallicity, SFH and dust follow
published relations instead of mass-independent Table-2 marginals. At log M* = logM - 0.23:
quenched with the mass-quenching probability of Peng et al. (2010), 1 - exp(-(M*/10^10.56)^0.8);
100-Myr sSFR on the Speagle et al. (2014) main sequence at the galaxy's cosmic time (0.2 dex
scatter) for star-forming galaxies, 1.5 dex below it (0.4 dex scatter) for quenched ones, reached
by mixing a flat-Dirichlet SFH shape with the recent or the oldest basis (no bursts); log Z from
the Gallazzi et al. (2005) mass-metallicity relation with its percentiles, in [-2.27, 0.3];
tau2 from the Garn & Best (2010) H-alpha attenuation-mass relation (star-forming) or ~0.1
(quenched), tau1 = 2.33 tau2 (Charlot & Fall 2000, mu = 0.3), n_dust ~ TN(-0.3, 0.3) on
[-1, 0.4]. Nothing in it is tuned to SDSS redshifts; the docstring of :func:`sample_physical`
gives each relation and its reference, docs/validation.md how its colours compare with SDSS.

``zlogm = "sdss"`` (:func:`sdss_zlogm_sampler`) follows the paper's recipe instead: (z, logM)
pairs drawn, with replacement, from a real survey's joint distribution -- the shipped SDSS
main sample after r < 17.77, at its spectroscopic redshifts, with kcorrect (Blanton & Roweis
2007; ``popsed_jax.survey.independent``) surviving masses + ``FORMED_MINUS_SURVIVING_DEX``. That
population is already magnitude-limited, so most draws pass the cut again (not all: the
Table-2 SEDs are not the galaxies' own); it needs the optional ``kcorrect`` package.

Most volume-weighted draws are far below the flux limit, so :func:`draw_mock` oversamples
and applies the selection (on the *noisy* flux) round after round until n rows are
selected, skipping exactly what cannot pass (``survey.visibility``; ``prescreen=False``
draws everywhere, with the same distribution): with the default (z, logM) prior it draws only
where the brightest unit-mass SED could reach the limit (~1/3 of the prior), and it
forward-models only draws whose exact dust-free flux bound (one contraction of the SSP
weights with a table of SSP band fluxes per redshift cell) reaches the limit less a noise
margin (~7% of those for the Table-2 population), so a mock costs ~3-5 forward-model
evaluations per selected galaxy instead of ~130.
"""
from __future__ import annotations

import json
import time
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..physics.forward import (PARAM_NAMES, build_forward_model, check_theta, derived_quantities,
                               forward_fluxes, theta_from_columns, theta_to_columns)
from ..physics.dust import LAM_V, RV_C00, calzetti00_k
from ..physics.params import ZSUN
from ..physics.photometry import SDSS_UGRIZ, mag_to_flux
from ..physics.relations import (MS_SCATTER_DEX, QUIESCENT_OFFSET_DEX, QUIESCENT_SCATTER_DEX, baldry12_smf,
                                 gallazzi05_mzr, peng10_log_quenched_fraction, speagle14_sfms)
from .observation import is_selected, make_observation, noisy_fluxes

__all__ = [
    "TABLE2", "sample_table2", "POPULATIONS", "sample_physical", "quiescent_fraction_peng10",
    "garn_best10_a_halpha", "sample_logz_gallazzi05", "sfh_for_ssfr", "sample_z_volume", "sample_logm_baldry12",
    "sample_zlogm_volume", "measure_formed_minus_surviving", "draw_mock",
    "mock_to_catalog", "counts_slope",
    "FORMED_MINUS_SURVIVING_DEX", "zlogm_pairs_sampler",
    "sdss_zlogm_sampler", "ZLOGM_SAMPLERS",
]


# Table 2: (mean, sd, lo, hi) of truncated normals; None -> U(0, 1)
TABLE2 = {
    "kappa1": (0.5, 0.3, 0.0, 1.0),
    "kappa2": None,
    "kappa3": None,
    "t_burst": (12.0, 7.0, 0.01, 13.27),
    "f_burst": (0.1, 0.7, 0.0, 1.0),
    "logZ": (-1.2, 0.9, -2.6, 0.3),
    "n_dust": (2.0, 2.0, -3.0, 1.0),
    "tau1": (1.0, 0.8, 0.0, 3.0),
    "tau2": (0.6, 0.8, 0.0, 3.0),
}

FORMED_MINUS_SURVIVING_DEX = 0.23
LOGM_RANGE = (8.0, 12.5)  # formed mass
Z_RANGE = (0.005, 0.4)


def _rng(key_or_seed):
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed
    if isinstance(key_or_seed, (int, np.integer)) or key_or_seed is None:
        return np.random.default_rng(key_or_seed)
    # a jax PRNG key: turn it into a seed
    data = np.asarray(jax.random.key_data(key_or_seed) if jnp.issubdtype(
        getattr(key_or_seed, "dtype", np.uint32), jax.dtypes.prng_key) else key_or_seed)
    return np.random.default_rng(data.astype(np.uint64).ravel().tolist())


def _truncnorm(rng, n, mu, sd, lo, hi):
    from scipy.stats import truncnorm
    return truncnorm.ppf(rng.random(n), (lo - mu) / sd, (hi - mu) / sd, loc=mu, scale=sd)


def _cdf_table(x, pdf):
    """(x, piecewise-linear CDF) of a tabulated pdf (trapezoids), normalized to 1."""
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(x))])
    return x, cdf / cdf[-1]


def z_volume_cdf(z_range=Z_RANGE):
    """(z nodes, CDF) of z ~ dV_c/dz (Planck15) on z_range: what :func:`sample_z_volume` inverts."""
    from astropy.cosmology import Planck15
    z = np.linspace(z_range[0], z_range[1], 2001)
    return _cdf_table(z, Planck15.differential_comoving_volume(z).value)


def logm_baldry12_cdf(logm_range=(LOGM_RANGE[0] - FORMED_MINUS_SURVIVING_DEX,
                                  LOGM_RANGE[1] - FORMED_MINUS_SURVIVING_DEX)):
    """(log10 surviving mass nodes, CDF) of the Baldry+12 double Schechter (Planck15 h):
    what :func:`sample_logm_baldry12` inverts."""
    lm = np.linspace(logm_range[0], logm_range[1], 4001)
    return _cdf_table(lm, baldry12_smf(lm))


def sample_z_volume(n, rng, z_range=Z_RANGE):
    """z ~ dV_c/dz (Planck15) on z_range, (n,)."""
    x, cdf = z_volume_cdf(z_range)
    return np.interp(_rng(rng).random(n), cdf, x)


def sample_logm_baldry12(n, rng, logm_range=(LOGM_RANGE[0] - FORMED_MINUS_SURVIVING_DEX,
                                             LOGM_RANGE[1] - FORMED_MINUS_SURVIVING_DEX)):
    """log10 surviving stellar mass (Planck15 h) from the Baldry+12 double Schechter, (n,)."""
    x, cdf = logm_baldry12_cdf(logm_range)
    return np.interp(_rng(rng).random(n), cdf, x)


def sample_zlogm_volume(n, rng, z_range=Z_RANGE):
    """Default (z, logM formed) sampler: volume-weighted z, Baldry+12 masses + FORMED_MINUS_SURVIVING_DEX."""
    rng = _rng(rng)
    z = sample_z_volume(n, rng, z_range)
    logm = sample_logm_baldry12(n, rng) + FORMED_MINUS_SURVIVING_DEX
    return z, logm


def zlogm_pairs_sampler(z, logm, name="given (z, logM) pairs"):
    """Sampler drawing (z, logM formed) pairs with replacement from the given (N,) arrays;
    `name` labels the population in the mock's metadata."""
    z, logm = np.asarray(z, float), np.asarray(logm, float)
    ok = np.isfinite(z) & np.isfinite(logm)
    if z.shape != logm.shape or not ok.any():
        raise ValueError(f"z and logM must be equal-shape arrays with finite rows; got {z.shape}, {logm.shape}, {int(ok.sum())} finite")
    z, logm = z[ok], logm[ok]

    def sample(n, rng):
        i = _rng(rng).integers(0, z.size, n)
        return z[i], logm[i]

    sample.n_pairs = int(z.size)
    sample.z_max = float(z.max())  # draw_mock builds its forward model up to this z
    sample.__name__ = name
    return sample


def sdss_zlogm_sampler(limit="r<17.77"):
    """(z, logM formed) of the shipped SDSS main sample: spec-z and kcorrect surviving masses
    + ``FORMED_MINUS_SURVIVING_DEX``, after `limit` (the paper's recipe with GAMA replaced by
    SDSS; needs ``pip install kcorrect``)."""
    from .catalog import load_catalog
    from .independent import kcorrect_masses
    from .selection import select_catalog

    cat = load_catalog("sdss")
    if limit:
        cat = select_catalog(cat, limit)
    kc = kcorrect_masses(cat)
    return zlogm_pairs_sampler(kc["z"], kc["logM_surviving_kc"] + FORMED_MINUS_SURVIVING_DEX,
                               name=f"the SDSS main sample ({limit}; spec-z, kcorrect masses)")


ZLOGM_SAMPLERS = {"volume": lambda: sample_zlogm_volume, "sdss": sdss_zlogm_sampler}


def sample_table2(n, key_or_seed=0, zlogm_sampler: Callable | None = None) -> np.ndarray:
    """(n, 11) draws of the Table-2 mock population (columns ``PARAM_NAMES``).

    zlogm_sampler(n, rng) -> (z, logM) replaces the default :func:`sample_zlogm_volume`.
    key_or_seed: int seed, numpy Generator or jax PRNG key.
    """
    rng = _rng(key_or_seed)
    out = np.empty((n, len(PARAM_NAMES)))
    z, logm = (zlogm_sampler or sample_zlogm_volume)(n, rng)
    out[:, 0], out[:, 1] = z, logm
    for j, name in enumerate(PARAM_NAMES[2:], start=2):
        spec = TABLE2[name]
        out[:, j] = rng.random(n) if spec is None else _truncnorm(rng, n, *spec)
    return out


def measure_formed_minus_surviving(model=None, n=5000, seed=0):
    """Median, mean, sd of logM - logM_surviving over Table-2 draws (z in [0.02, 0.3])."""
    model = model or build_forward_model(z_max=0.45)
    th = sample_table2(n, seed, lambda m, r: (r.uniform(0.02, 0.3, m), np.full(m, 10.5)))
    off = th[:, 1] - np.asarray(derived_quantities(model, th)["logM_surviving"])
    return float(np.median(off)), float(off.mean()), float(off.std())


# --------------------------------------------------------------------------
# the "physical" preset: metallicity, SFH and dust from published relations
# --------------------------------------------------------------------------

POPULATIONS = ("table2", "physical")

LOGZ_BOX = (-2.27, 0.3)  # log Z/Zsun (0.019) box of the fit's default prior (inference.config.logz_range)
_G05_TO_MODEL_DEX = float(np.log10(0.02 / ZSUN))  # Gallazzi's Zsun = 0.02 -> the model's 0.019: +0.022 dex

# Garn & Best (2010, MNRAS 409, 421), SDSS DR7 Balmer decrements of ~90,000 star-forming
# galaxies: A_Halpha = 0.91 + 0.77 X + 0.11 X^2 - 0.09 X^3 [mag], X = log(M*/1e10 Msun),
# scatter ~0.3 mag; fitted over ~8.5 < log M* < 11.5 (X is held inside [-1.5, 1.5]).
GARN_BEST10 = dict(coeffs=(0.91, 0.77, 0.11, -0.09), scatter_mag=0.3, x_range=(-1.5, 1.5))
CF00_MU = 0.3  # Charlot & Fall (2000, ApJ 539, 718): diffuse ISM share of the young stars' tau_V, mu ~ 0.3
N_DUST_PHYSICAL = (-0.3, 0.3, -1.0, 0.4)   # TN(mu, sd) on [lo, hi]; see sample_physical
TAU2_QUIESCENT = (0.1, 0.1, 0.0, 3.0)      # TN(mu, sd) on [lo, hi]; see sample_physical
_LAM_HALPHA_UM = 0.65628


def quiescent_fraction_peng10(logm_surviving):
    """Mass-quenched (red) fraction of Peng et al. (2010, ApJ 721, 193; the mass term of their fit):
    f_q = 1 - exp(-(M*/10^10.56)^0.80), M* the surviving (current) stellar mass [Msun]."""
    return np.exp(peng10_log_quenched_fraction(logm_surviving)[0])


def garn_best10_a_halpha(logm_surviving):
    """Median H-alpha attenuation [mag] of star-forming galaxies at stellar mass M* (Garn & Best 2010):
    0.91 + 0.77 X + 0.11 X^2 - 0.09 X^3, X = log(M*/1e10), X held inside [-1.5, 1.5]."""
    c0, c1, c2, c3 = GARN_BEST10["coeffs"]
    x = np.clip(np.asarray(logm_surviving, float) - 10.0, *GARN_BEST10["x_range"])
    return c0 + c1 * x + c2 * x ** 2 + c3 * x ** 3


def sample_logz_gallazzi05(logm_surviving, rng, box=LOGZ_BOX):
    """log Z/Zsun (model units, Zsun = 0.019) at surviving mass log M* [Msun] from the Gallazzi et
    al. (2005, MNRAS 362, 41) stellar mass-metallicity relation with its scatter: their 16th, 50th
    and 84th percentiles at M* (``relations.gallazzi05_mzr``: interpolated in their Table 2, held
    flat beyond 8.87-11.87), Zsun = 0.02 moved to 0.019 (+0.022 dex), joined as two half-normals,
    x = p50 + (p50 - p16) y below the median and p50 + (p84 - p50) y above (y ~ N(0, 1)), so the
    draws have those three percentiles. Each half keeps probability 1/2 and is truncated at the
    `box` edge on its side (no pile-up at the edges): the median stays Gallazzi's, and only the
    upper percentiles move where 0.3 cuts into the upper half (p84 at log M* < 10.3, whose
    upper widths are 0.4-0.6 dex, and above 11, where p84 is near 0.3)."""
    from scipy.special import ndtr, ndtri
    rng = _rng(rng)
    p16, p50, p84 = (np.asarray(v, float) + _G05_TO_MODEL_DEX for v in gallazzi05_mzr(logm_surviving))
    s1, s2 = p50 - p16, p84 - p50
    c_lo = ndtr((box[0] - p50) / s1)  # <= 1/2: the box's lower edge in the lower half
    c_hi = ndtr((box[1] - p50) / s2)  # >= 1/2
    u = rng.random(np.shape(p50))
    uu = np.where(u < 0.5, c_lo + (0.5 - c_lo) * 2.0 * u, 0.5 + (c_hi - 0.5) * (2.0 * u - 1.0))
    y = ndtri(np.clip(uu, 1e-12, 1.0 - 1e-12))
    return np.clip(p50 + np.where(y < 0, s1, s2) * y, *box)


def _age_gyr(z):
    """Age of the universe at z [Gyr] (Planck15, the forward model's cosmology), tabulated."""
    from ..physics.cosmology import PLANCK15, age_gyr_f64

    return age_gyr_f64(z, PLANCK15)


_BASIS_NODES = None


def _basis_cumulative(t_gyr):
    """int_0^t B_k dt' for the project's default SFH bases at lookback times t (N,) -> (N, n_k),
    exactly as the forward model integrates them (``sfh.make_sfh_tables``)."""
    global _BASIS_NODES
    if _BASIS_NODES is None:
        from ..physics import sfh
        b = sfh.load_sfh_bases()
        t, s = b.t_lb, b.sfr.T
        if t[0] > 0:
            t, s = np.concatenate([[0.0], t]), np.concatenate([s[:1], s])
        _BASIS_NODES = (np.concatenate([t, [sfh.T_BIG]]), np.concatenate([s, s[-1:]]))
    from ..physics.sfh import _cum_numpy
    return _cum_numpy(*_BASIS_NODES, np.asarray(t_gyr, float))[0]


def _beta_to_kappa_np(beta):
    """numpy (float64) twin of ``sfh.beta_to_kappa``."""
    k1 = 1.0 - beta[:, 0]
    k2 = np.where(k1 > 0, 1.0 - beta[:, 1] / np.where(k1 > 0, k1, 1.0), 0.0)
    s34 = beta[:, 2] + beta[:, 3]
    k3 = np.where(s34 > 0, beta[:, 3] / np.where(s34 > 0, s34, 1.0), 0.0)
    return np.clip(np.stack([k1 ** 3, k2 ** 2, k3], -1), 0.0, 1.0)


def sfh_for_ssfr(shape, log_ssfr, z, formed_minus_surviving=FORMED_MINUS_SURVIVING_DEX):
    """Dirichlet weights (N, 4) with log sSFR over the last 100 Myr equal to `log_ssfr` [1/yr].

    shape: (N, 4) starting weights on the simplex (bases ordered recent -> old). The SFR
    averaged over 100 Myr per unit formed mass, f100(beta) = sum_k beta_k a_k / sum_k beta_k c_k
    with a_k = int_0^0.1Gyr B_k and c_k = int_0^t_u B_k (no burst), is a ratio of linear forms,
    so the mix beta = (1 - w) shape + w e_1 (too little star formation: add the recent basis) or
    (1 - w) shape + w e_4 (too much: add the oldest) that hits the target is found in closed form.
    sSFR is per surviving mass, taken as formed mass - `formed_minus_surviving` dex. Targets beyond
    what the bases reach (above ~10^-9.4 /yr: pure basis 1) end at the nearest pure basis.
    """
    shape = np.asarray(shape, float)
    t_u = _age_gyr(np.asarray(z, float))
    a = _basis_cumulative(np.full(t_u.shape, 0.1))
    c = _basis_cumulative(t_u)
    f = 10.0 ** (np.asarray(log_ssfr, float) - formed_minus_surviving) * 1e8  # target f100 per formed mass
    A = a - f[:, None] * c  # sum_k beta_k A_k = 0 on target
    a_s = np.sum(shape * A, -1)
    e1, e4 = np.eye(4)[0], np.eye(4)[3]
    w1 = np.clip(-a_s / np.where(A[:, 0] - a_s > 0, A[:, 0] - a_s, 1.0), 0.0, 1.0)
    w1 = np.where(A[:, 0] - a_s > 0, w1, 1.0)
    w4 = np.clip(a_s / np.where(a_s - A[:, 3] > 0, a_s - A[:, 3], 1.0), 0.0, 1.0)
    w4 = np.where(a_s - A[:, 3] > 0, w4, 1.0)
    up = (a_s <= 0)[:, None]
    beta = np.where(up, (1 - w1)[:, None] * shape + w1[:, None] * e1,
                    (1 - w4)[:, None] * shape + w4[:, None] * e4)
    return beta / beta.sum(-1, keepdims=True)


def sample_physical(n, key_or_seed=0, zlogm_sampler: Callable | None = None, return_info=False):
    """(n, 11) draws of the *physical* mock population (columns ``PARAM_NAMES``).

    Same contract as :func:`sample_table2`; (z, logM formed) from `zlogm_sampler` (default
    :func:`sample_zlogm_volume`: volume-weighted z, Baldry et al. 2012 masses; no spectroscopic
    redshifts are used anywhere). With log M* = logM - ``FORMED_MINUS_SURVIVING_DEX`` the surviving
    stellar mass and t_u the age of the universe at z:

    * **quenched or star-forming**: quenched with probability f_q(M*) = 1 - exp(-(M*/10^10.56)^0.8),
      the mass-quenching term of Peng et al. (2010, ApJ 721, 193; their fit to the SDSS DR4 red
      fraction). Environment quenching (their density term) is left out: the mock has no
      environments.
    * **sSFR (100 Myr)**: star-forming galaxies on the main sequence of Speagle et al. (2014, ApJS
      214, 15, eq. 28; Chabrier) at t_u, with ``MS_SCATTER_DEX`` = 0.2 dex of Gaussian scatter
      (their intrinsic scatter); quenched galaxies ``QUIESCENT_OFFSET_DEX`` = 1.5 dex below it with
      0.4 dex scatter: the quenched peak of SDSS galaxies in the SFR-M* plane lies ~1.5 dex below
      the main sequence (Renzini & Peng 2015, ApJL 801, L29, Fig. 1; Wetzel, Tinker & Conroy 2012,
      MNRAS 424, 232: sSFR ~ 10^-12 /yr, bimodality break at 10^-11 /yr).
    * **SFH**: a starting shape from the flat Dirichlet (the box prior), over all four bases for
      star-forming galaxies, over the three older ones (beta1 = 0: nothing formed in the recent
      basis) for quenched ones; then mixed with the recent basis (e_1) or the oldest (e_4) until
      the 100-Myr sSFR is the target (:func:`sfh_for_ssfr`; star-forming galaxies need more
      recent-basis weight, quenched ones end with most weight on basis 4). No bursts
      (f_burst = 0; t_burst, then irrelevant, is uniform on [0.01, 13.27]): the tight main
      sequence leaves little room for bursts (Noeske et al. 2007, ApJL 660, L43), and recent
      bursts matter only in the lowest-mass galaxies (Kauffmann et al. 2003, MNRAS 341, 54),
      which r < 17.77 barely reaches. The solve uses the project's default SFH bases (those of
      ``build_forward_model()``); with other bases the sSFRs land elsewhere.
    * **metallicity**: Gallazzi et al. (2005) mass-metallicity relation with their scatter
      (:func:`sample_logz_gallazzi05`), truncated to ``LOGZ_BOX`` = [-2.27, 0.3].
    * **dust**: star-forming galaxies: H-alpha attenuation A_Ha ~ N(Garn & Best 2010 at M*, 0.3 mag)
      (:func:`garn_best10_a_halpha`), turned into tau2 with the model's own curves: H-alpha
      comes from stars < 10 Myr, behind tau1 (lam/0.55um)^-1 + the diffuse tau2 curve, and
      tau1 = tau2 (1 - mu) / mu with Charlot & Fall's (2000) mu = 0.3 (tau1 = 2.33 tau2).
      Quenched galaxies have little dust: tau2 ~ TN(0.1, 0.1) on [0, 3] (A_V ~ 0.1 mag; an
      assumption), same tau1/tau2. n_dust (Kriek & Conroy 2013 slope, the model's convention)
      ~ TN(-0.3, 0.3) on [-1, 0.4]: local galaxies' attenuation curves are on average steeper than
      Calzetti's, with a wide spread (Salim, Boquien & Lee 2018, ApJ 859, 11). tau1, tau2 <= 3.

    return_info: also return a dict with ``quiescent`` (bool), ``log_ssfr_target``, ``logm_surviving``.
    """
    rng = _rng(key_or_seed)
    z, logm = (zlogm_sampler or sample_zlogm_volume)(n, rng)
    z, logm = np.asarray(z, float), np.asarray(logm, float)
    lms = logm - FORMED_MINUS_SURVIVING_DEX
    out = np.empty((n, len(PARAM_NAMES)))
    out[:, 0], out[:, 1] = z, logm

    # quenched or star-forming; target sSFR
    q = rng.random(n) < quiescent_fraction_peng10(lms)
    ms = speagle14_sfms(lms, _age_gyr(z), chabrier=True) - lms
    s = ms + np.where(q, QUIESCENT_OFFSET_DEX + QUIESCENT_SCATTER_DEX * rng.standard_normal(n),
                      MS_SCATTER_DEX * rng.standard_normal(n))
    # SFH
    shape = rng.dirichlet(np.ones(4), n)
    shape_q = np.concatenate([np.zeros((n, 1)), rng.dirichlet(np.ones(3), n)], 1)
    shape = np.where(q[:, None], shape_q, shape)
    beta = sfh_for_ssfr(shape, s, z)
    out[:, 2:5] = _beta_to_kappa_np(beta)
    out[:, 5] = rng.uniform(0.01, 13.27, n)  # t_burst: no burst
    out[:, 6] = 0.0
    # metallicity
    out[:, 7] = sample_logz_gallazzi05(lms, rng)
    # dust
    out[:, 8] = _truncnorm(rng, n, *N_DUST_PHYSICAL)
    r_bc = (1.0 - CF00_MU) / CF00_MU
    k_ha = float(np.asarray(calzetti00_k(_LAM_HALPHA_UM))) / RV_C00
    lnx = np.log(_LAM_HALPHA_UM / LAM_V)
    diffuse_ha = k_ha * np.exp(out[:, 8] * lnx)  # tau(Halpha) / tau2 (no bump at Halpha)
    a_ha = np.maximum(garn_best10_a_halpha(lms) + GARN_BEST10["scatter_mag"] * rng.standard_normal(n), 0.0)
    tau2_sf = a_ha / (2.5 * np.log10(np.e)) / (r_bc * np.exp(-lnx) + diffuse_ha)
    tau2_q = _truncnorm(rng, n, *TAU2_QUIESCENT)
    tau2 = np.clip(np.where(q, tau2_q, tau2_sf), 0.0, 3.0)
    out[:, 9] = np.clip(r_bc * tau2, 0.0, 3.0)
    out[:, 10] = tau2
    if return_info:
        return out, dict(quiescent=q, log_ssfr_target=s, logm_surviving=lms)
    return out


_POPULATION_SAMPLERS = {"table2": sample_table2, "physical": sample_physical}


# --------------------------------------------------------------------------
# observing
# --------------------------------------------------------------------------

def _default_noise_model(bands):
    """Noise model fitted to the shipped SDSS main sample in `bands`: SDSS ugriz and the
    file's 2MASS/GALEX columns (rows lacking an extra band are dropped before the fit)."""
    from .catalog import _SDSS_EXTRA, read_sdss_main, sdss_bands_as
    from .noise import fit_noise_model
    short, extra = [], []
    for b in bands:
        if b.startswith(("sdss2001-", "sdss2010-")) and b[-1] in "ugriz":
            short.append(b[-1])
        elif b in _SDSS_EXTRA:
            extra.append(b)
        else:
            raise ValueError(f"no default noise model for band {b!r} (the SDSS file has ugriz and "
                             f"{sorted(_SDSS_EXTRA)}): pass noise_model= (a NoiseModel or a JSON file "
                             "from save_noise_model)")
    cat = sdss_bands_as(read_sdss_main(bands=tuple(short), extra=tuple(extra)), bands)
    nm = fit_noise_model(cat)
    if tuple(nm.bands) != tuple(bands):
        raise ValueError(f"the default noise model needs the SDSS bands first, in order: got {list(bands)}")
    return nm


def _visible_setup(model, noise_model, kb, f_lim, zlogm_sampler):
    """Exact pre-screens of :func:`draw_mock` (``survey.visibility``): the (z, logM) sampler
    (the default prior restricted to where the survey can see, or the user's unchanged), a
    per-draw bound function theta -> bool mask, and what they are, for the mock's metadata."""
    from . import visibility as vis
    table = jnp.asarray(vis.band_flux_table(model, kb), model.ssp_all.dtype)
    margin = vis.noise_margin_mag(noise_model, kb, f_lim)
    log_f_min = float(np.log10(f_lim) - 0.4 * margin)
    meta = dict(prescreen_margin_mag=margin)
    if zlogm_sampler in (None, sample_zlogm_volume):
        z_edges, lfpm = vis.visible_cells(model, table, Z_RANGE)
        zlx, zlc = logm_baldry12_cdf()
        zlogm_sampler = vis.visible_zlogm_sampler(z_volume_cdf(Z_RANGE), (zlx + FORMED_MINUS_SURVIVING_DEX, zlc),
                                                  z_edges, lfpm, log_f_min)
        meta["visible_fraction"] = zlogm_sampler.visible_fraction
    bound = jax.jit(vis.flux_upper_bound)

    def can_pass(theta, chunk=32768):
        if not len(theta):
            return np.zeros(0, bool)
        return _padded_chunks(lambda t: bound(model, table, t), theta, _chunk_rows(len(theta), chunk)) > 10 ** log_f_min

    return zlogm_sampler, can_pass, meta


def _chunk_rows(n, chunk, least=1024):
    """Rows per chunk for n rows: ``chunk``, or for fewer rows the next power of two (at least
    ``least``), so that the small last rounds of a mock reuse a few compiled shapes."""
    return int(min(chunk, max(least, 1 << max(int(n) - 1, 0).bit_length())))


def _padded_chunks(fn, theta, chunk):
    """fn over theta (N, P) in chunks of exactly `chunk` rows (the last one padded), so that a
    jitted fn compiles once whatever N; the outputs' rows are concatenated (numpy). N = 0
    gives fn's outputs with no rows."""
    if not len(theta):
        return jax.tree_util.tree_map(lambda a: np.asarray(a)[:0], fn(np.zeros((chunk, np.shape(theta)[1]), np.float32)))
    out = []
    for i in range(0, len(theta), chunk):
        t = theta[i:i + chunk]
        pad = chunk - len(t)
        r = fn(np.concatenate([t, np.repeat(t[:1], pad, 0)]) if pad else t)
        out.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:len(t)], r))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *out)


_forward_noisy = jax.jit(lambda model, obs, theta, key: (lambda f: (f, *noisy_fluxes(obs, f, key)))(forward_fluxes(model, theta)))


def _observe(model, obs, theta, key, chunk=16384):
    """Noiseless fluxes, noisy fluxes and the errors drawn, each (N, B) float64 [nmgy]."""
    chunk = _chunk_rows(len(theta), chunk)
    keys = iter(jax.random.split(key, max(-(-len(theta) // chunk), 1)))
    flux, noisy, sigma = _padded_chunks(lambda t: _forward_noisy(model, obs, t, next(keys)), theta, chunk)
    return flux.astype(np.float64), noisy.astype(np.float64), sigma.astype(np.float64)


def draw_mock(n=None, seed=0, filters=SDSS_UGRIZ, noise_model=None, limit="r<17.77",
              params_table=None, return_all=False, *, model=None, zlogm_sampler=None,
              z_range=Z_RANGE, prescreen=True, max_rounds=200, max_batch=2_000_000,
              progress=False, population="table2", library="bc03"):
    """Mock catalog (astropy Table) of a mock population observed with a noise model.

    population: 'table2' (:func:`sample_table2`, the paper's; default) or 'physical'
    (:func:`sample_physical`: metallicity, SFH and dust from published relations), each with
    (z, logM) from `zlogm_sampler` (default: volume-weighted z, Baldry+12 masses).

    n: number of *selected* rows wanted (oversampling rounds until reached, at most
    `max_rounds`; RuntimeError otherwise). With ``return_all`` n rows are drawn from the
    prior once and all are returned with a ``selected`` column. With `params_table`
    (any table with the parameter columns) the prior is skipped: every row is observed and
    the selected ones (or all, flagged, with ``return_all``) are returned; n is ignored.
    limit: 'r<17.77'-style cut on the noisy flux, or None for no selection.
    noise_model: NoiseModel, path to its JSON, or None (fit to ``read_sdss_main()``).
    model: a prebuilt forward model (its bands must equal `filters`); without one, the model is
    built with the stellar ``library`` ('bc03', the fit's default, or 'bc03+emiles').

    Columns: id, the 11 parameters, beta1..4, logM_surviving, sfr_100myr, sfr_10myr,
    log_ssfr_100myr, age_mw, flux_<band> (noisy), flux_err_<band> (the sigma used),
    flux_true_<band>, z_spec (= z) [, selected]; meta PSBANDS/PSMETA as in
    ``catalog.write_catalog`` so ``catalog.read_catalog`` reads the file back.
    """
    from astropy.table import Table

    from .noise import load_noise_model

    if population not in _POPULATION_SAMPLERS:
        raise ValueError(f"population must be one of {list(POPULATIONS)}, got {population!r}")
    sample_population = _POPULATION_SAMPLERS[population]
    if isinstance(filters, str):
        filters = [f.strip() for f in filters.split(",") if f.strip()]
    filters = tuple(filters)
    if noise_model is None:
        noise_model = _default_noise_model(filters)
    elif not hasattr(noise_model, "var_coeffs"):
        noise_model = load_noise_model(noise_model)
    if tuple(noise_model.bands) != filters:
        raise ValueError(f"noise model bands {list(noise_model.bands)} differ from filters {list(filters)}")
    theta_in = None
    if params_table is not None:
        theta_in = theta_from_columns(params_table)
        if not len(theta_in):
            raise ValueError("the parameter table (params_table / --params) has no rows: nothing to observe")
        z_max = max(z_range[1], float(np.max(theta_in[:, 0])))
    else:
        if n is None or int(n) < 1:
            raise ValueError("draw_mock needs n >= 1 or a params_table")
        n = int(n)
        z_max = max(z_range[1], float(getattr(zlogm_sampler, "z_max", 0.0)))
    model_given = model is not None
    if model is None:
        model = build_forward_model(filters=list(filters), z_max=z_max, library=library)
    if tuple(model.bands) != filters:
        raise ValueError(f"forward model bands {list(model.bands)} differ from filters {list(filters)}")
    if theta_in is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*outside the SSP grid.*")
            check_theta(theta_in, model)
    obs = make_observation(noise_model, limit)
    if limit is not None:
        kb, f_lim = obs.band_idx, float(mag_to_flux(obs.mag_lim))
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)

    completeness = any(w is not None for *_, w in obs.limits)
    sel_key = jax.random.fold_in(key, 7)

    def select(noisy):  # completeness limits drawn with their own keys; without them the draws are as they were
        nonlocal sel_key
        if not completeness:
            return np.asarray(is_selected(obs, noisy))
        sel_key, k = jax.random.split(sel_key)
        return np.asarray(is_selected(obs, noisy, k))

    t_start = time.perf_counter()
    info = dict(seed=seed, limit=limit, rounds=0, n_drawn=0, n_forward=0)
    if theta_in is not None or return_all:
        theta = theta_in if theta_in is not None else sample_population(n, rng, zlogm_sampler)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*outside the SSP grid.*")
            check_theta(theta, model)
        flux, noisy, sigma = _observe(model, obs, theta, key)
        sel = select(noisy)
        info.update(rounds=1, n_drawn=len(theta), n_forward=len(theta))
        if not return_all:
            theta, flux, noisy, sigma = theta[sel], flux[sel], noisy[sel], sigma[sel]
    else:
        sampler, can_pass = zlogm_sampler, None
        if prescreen and limit is not None:
            sampler, can_pass, vis_meta = _visible_setup(model, noise_model, kb, f_lim, zlogm_sampler)
            info.update(vis_meta)
        parts, n_sel, acc = [], 0, None
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n, unit="gal", desc="mock (selected)")
        for rnd in range(max_rounds):
            need = n - n_sel
            m = min(max_batch, 20_000) if acc is None else int(np.clip(1.3 * need / max(acc, 1e-7) + 1000, 2000, max_batch))
            th = sample_population(m, rng, sampler)
            info["n_drawn"] += m
            if can_pass is not None:
                th = th[can_pass(th)]
            info["rounds"] = rnd + 1
            if len(th):
                with warnings.catch_warnings():  # Table-2 logZ reaches below BC03's grid: clamped
                    warnings.filterwarnings("ignore", message=".*outside the SSP grid.*")
                    check_theta(th, model)
                f, nz, sg = _observe(model, obs, th, jax.random.fold_in(key, rnd))
                info["n_forward"] += len(th)
                s = select(nz)
                parts.append((th[s], f[s], nz[s], sg[s]))
                n_sel += int(s.sum())
                if bar is not None:
                    bar.update(min(int(s.sum()), n - (n_sel - int(s.sum()))))
            acc = n_sel / info["n_drawn"]
            if n_sel >= n:
                break
        if bar is not None:
            bar.close()
        if n_sel < n:
            raise RuntimeError(
                f"draw_mock: only {n_sel} of {n} galaxies pass {limit!r} after {max_rounds} rounds "
                f"({info['n_drawn']} drawn; acceptance {acc:.2e}); raise max_rounds/max_batch, loosen the "
                "limit or change the (z, logM) sampler")
        theta, flux, noisy, sigma = (np.concatenate([p[i] for p in parts])[:n] for i in range(4))
        sel = np.ones(n, bool)
    if theta_in is None and not return_all:
        # over every draw of the prior, surplus selected rows included (draws made only where the
        # survey can see stand for n_drawn / visible_fraction draws of the whole prior)
        info["n_prior_equivalent"] = int(round(info["n_drawn"] / info.get("visible_fraction", 1.0)))
        info["acceptance"] = float(n_sel / max(info["n_prior_equivalent"], 1))
    else:
        info["acceptance"] = float(sel.mean())

    t = Table()
    t["id"] = np.arange(len(theta), dtype=np.int64)
    for k, v in theta_to_columns(theta).items():
        t[k] = v
    if len(theta):
        parts_d = [derived_quantities(model, theta[i:i + 65536]) for i in range(0, len(theta), 65536)]
        d = {k: np.concatenate([np.asarray(p[k], np.float64) for p in parts_d]) for k in parts_d[0]}
    else:
        d = {k: np.zeros(0) for k in ("logM_surviving", "sfr_100myr", "sfr_10myr", "log_ssfr_100myr", "age_mw")}
    for k in ("logM_surviving", "sfr_100myr", "sfr_10myr", "log_ssfr_100myr", "age_mw"):
        t[k] = d[k]
    for j, b in enumerate(filters):
        t[f"flux_{b}"] = noisy[:, j]
        t[f"flux_err_{b}"] = sigma[:, j]
    for j, b in enumerate(filters):
        t[f"flux_true_{b}"] = flux[:, j]
    t["z_spec"] = theta[:, 0]
    if return_all:
        t["selected"] = sel
    label = {"table2": "Table 2",
             "physical": "physical (Gallazzi+05 MZR, Peng+10 quenching, Speagle+14 MS, Garn & Best 10 dust)"}[population]
    detail = "params_table" if params_table is not None else (
        f"{label} + volume-weighted Baldry+12" if zlogm_sampler in (None, sample_zlogm_volume)
        else f"{label} + (z, logM) from {getattr(zlogm_sampler, '__name__', 'a custom sampler')}")
    info["seconds"] = round(time.perf_counter() - t_start, 1)
    meta = dict(source="popsed_jax.survey.mock.draw_mock",
                population="params_table" if params_table is not None else population,
                population_detail=detail, library="the model passed in" if model_given else library, **info)
    t.meta["PSBANDS"] = json.dumps(list(filters))
    t.meta["PSMETA"] = json.dumps(meta)
    return t


def mock_to_catalog(table):
    """The observed part of a mock table as a :class:`catalog.Catalog`."""
    from .catalog import Catalog
    bands = json.loads(table.meta["PSBANDS"])
    return Catalog(flux=np.stack([np.asarray(table[f"flux_{b}"]) for b in bands], 1),
                   flux_err=np.stack([np.asarray(table[f"flux_err_{b}"]) for b in bands], 1),
                   bands=tuple(bands), z_spec=np.asarray(table["z_spec"]),
                   ids=np.asarray(table["id"]), meta=json.loads(table.meta["PSMETA"]))


# --------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------

def counts_slope(rmag, lo=15.5, hi=17.5):
    """Least-squares slope of log10 N(<r) on a 0.1 mag grid over (lo, hi)."""
    r = np.sort(np.asarray(rmag)[np.isfinite(rmag)])
    grid = np.arange(lo, hi + 1e-9, 0.1)
    nc = np.searchsorted(r, grid)
    ok = nc > 0
    return float(np.polyfit(grid[ok], np.log10(nc[ok]), 1)[0])
