"""Population priors: what the fit prefers among populations that match the photometry equally.

The fit adds ``kl_weight`` x KL(q_phi || prior) to the loss. The flow starts at its reference
density p_ref (uniform on the box; in z uniform in comoving volume with ``z_prior = "volume"``);
a prior is p_ref times a density ratio, so KL(q || prior) = KL(q || p_ref) - E_q[log(prior / p_ref)],
estimated from the step's own flow samples. Presets (``FitConfig.prior``):

- ``"flat"``: the paper's, prior = p_ref (the box, and the volume prior in z).
- ``"mzr+smf"``: ``"mzr"`` with log M following the galaxy stellar mass function
  ``FitConfig.mass_function`` (below) at log M* = logM - 0.23, normalised on the box: with the volume prior in z it is the number
  density of galaxies per unit volume and mass, the population that the default mocks draw.
- ``"mzr+smf-type"``: ``"mzr"`` with log M following the mass function of the galaxy's own
  type: p(log M | quenched) ∝ phi(M*) f_q(M*) and p(log M | star-forming) ∝ phi(M*) (1 - f_q(M*)),
  phi the configured GSMF and f_q the mass-quenched fraction of Peng et al. (2010, ApJ 721, 193;
  ``physics.relations.peng10_log_quenched_fraction``), each normalised on the box. The type is
  the galaxy's 100-Myr sSFR against the main sequence of Speagle et al. (2014; Chabrier, at the
  galaxy's M* and cosmic time): quenched more than ``MS_SPLIT_DEX`` = 0.75 dex below it, halfway
  to the quenched peak 1.5 dex below (Renzini & Peng 2015, ApJL 801, L29; the mock's
  ``QUIESCENT_OFFSET_DEX``), as a logistic of width ``MS_SPLIT_WIDTH`` dex so that the density is
  differentiable in the SFH: p(log M | sSFR) = w_q p(log M | quenched) + (1 - w_q) p(log M |
  star-forming), normalised in log M at every offset from the main sequence, so the prior does
  not set how many galaxies are quenched. The offset itself moves with log M (the main sequence
  rises with M*), so the term is divided by its integral over the box's log M at the galaxy's
  other parameters (``typed_smf_log_density(type_at=...)``; until 2026-12-07 it was not, and
  the colour-typed prior below weighed green-valley colours down by up to 0.9 nats). The width also caps the penalty on a massive galaxy that is star-forming at
  1 / width nats per dex of sSFR above the split (beyond it the quenched term dominates the mix).
  The physical mock draws Baldry+12 masses and quenches them with Peng+10's f_q, putting its
  quenched galaxies 1.5 +- 0.4 dex below the same main sequence: the same joint distribution up
  to the few galaxies its scatters carry across the split. Why: one mass function for all types
  pulls red galaxies to low masses (hence low z and, through the MZR, low Z), where the quenched
  mass function turns over (Peng et al. 2010: it is the star-forming one times ~(M/M_q)^0.8).
- ``"mzr+smf-colour"`` (the default): ``"mzr+smf-type"`` with the type from the galaxy's colour instead of
  its sSFR: red when its rest-frame (z = 0) u - r, dust included, lies above the red/blue
  divider of Baldry et al. (2004, ApJ 600, 681) at its rest-frame absolute M_r (2.06 - 0.244
  tanh((M_r + 20.07) / 1.09); ``physics.relations.baldry04_ur_divider``), as a logistic of width
  ``UR_SPLIT_WIDTH`` mag, normalised over log M as above (the divider moves with M_r). This is how Peng et al. (2010) typed the SDSS galaxies behind f_q
  (red by colour, whatever reddens them), and it is what the SDSS photometry constrains: the
  sSFR of a red galaxy is degenerate with its dust, and typed by sSFR 55-95% of red SDSS
  galaxies were fitted as dusty star-formers and given the star-forming mass function.
- ``"physical"``: the population the physical mock (``survey.mock.sample_physical``) draws, as a
  prior: log Z from ``"mzr"``, log M from the Baldry+12 mass function (``"mzr+smf"``), and the
  100-Myr sSFR's offset d from the Speagle+14 main sequence (Chabrier, at M* = logM - 0.23 and
  the galaxy's cosmic time) from the mixture g(d | M) = f_q N(d; -1.5, 0.4) + (1 - f_q) N(d; 0, 0.2),
  f_q Peng+10's mass-quenched fraction, 0.2 dex Speagle's intrinsic main-sequence scatter and the
  quenched peak 1.5 dex below it (Renzini & Peng 2015; constants shared with the mock). The box's
  SFH coordinates put another distribution on the sSFR (the reference's: at z = 0.1 only 6% of
  box SFHs lie below 10^-11.5 /yr, so the box itself prefers star-forming galaxies, and red SDSS
  galaxies were fitted as dusty star-formers); the prior divides it out: prior / p_ref includes
  g(d | M) / h_ref(log sSFR | z), h_ref the reference density of log sSFR at z, tabulated once
  per fit from box draws through the model (:func:`ssfr_reference_table`), so that the prior's
  sSFR distribution at each (z, M) is g's.
- ``"mzr"``: p_ref with log Z replaced by the stellar mass-metallicity relation of Gallazzi et
  al. (2005, MNRAS 362, 41; SDSS DR2, BC03, Chabrier): at log M* = logM - 0.23 (formed to
  surviving mass, ``mock.FORMED_MINUS_SURVIVING_DEX``), log Z/Zsun follows two half-normals
  joined at their median, each holding half the probability, with widths their 16-50% and 50-84%
  ranges (floored at 0.1 dex): so the prior's 16, 50 and 84% points are theirs. Each half is
  truncated to the box on its own side and keeps probability 1/2, so the median is theirs even
  where the box's top (0.3) cuts into the upper half (as the physical mock, ``survey.mock``, draws). Their Zsun = 0.02 is converted to the model's 0.019. (Until 0.2.0 a continuous split
  normal peaking at their median was used; its median sat up to 0.08 dex below theirs.) The two
  halves' densities differ at the median; they are joined by a 0.02-dex logistic
  (``MZR_JOIN_DEX``), because the KL term's gradient, taken through the flow's samples, cannot
  see a jump: until 2026-12-07 the join was a hard step and the fit followed, in effect, the
  continuous split normal again (up to 0.2 dex below Gallazzi's median at log M* 10-10.7).

The mass function of the ``"mzr+smf*"`` presets is ``FitConfig.mass_function`` (``MASS_FUNCTIONS``):
Weigel et al. (2016, MNRAS 459, 2150; SDSS DR7, 0.02 < z < 0.06; the default) or Baldry et
al. (2012; GAMA, z < 0.06, ~1/50 of the volume, so few galaxies above M*; the only one before
2026-12-06, and the physical mock's, which ``"physical"`` keeps; Chabrier masses;
``physics.relations.weigel16_log_smf``, ``baldry12_log_smf``).

Measured (docs/validation.md): ``"mzr+smf-colour"`` with Weigel+16 is the default. Since
2026-12-07 the shipped SDSS sample is fitted with its 2MASS Ks detection
(``survey.catalog.SHIPPED_SDSS_SELECTION``), which brings red galaxies and the median z within
the goals on every seed; the numbers below are of r < 17.77 alone. On SDSS,
with the two faults fixed on 2026-12-07 (the MZR's step, the typed term's normalisation), it
meets 14 of 21 seed-goals on three seeds (median z 0.089-0.095); before the fixes (four seeds) 24 of the issue's 28 seed-goals (three seeds: ``"mzr"`` 11 of 21, with
Baldry+12 14), n(z) W1 0.005-0.008 against 0.010-0.013 under ``"mzr"``, red galaxies
0.006-0.016 and the median z 0.001-0.009 below the spectroscopic ones, blue ones 0.008-0.010 too far.
``"mzr+smf-type"`` and ``"physical"`` recover the physical mock best but, on SDSS, place red
galaxies much too near: typed by sSFR, the fit makes them dusty star-formers, which the
star-forming mass function pushes to low mass.

Why a prior at all: with five broad bands old metal-poor populations at low z mimic metal-rich
ones at z ~ 0.1 (docs/validation.md); the fit cannot tell them apart from the photometry, so
without knowledge of which SEDs real galaxies have it picks look-alikes.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr
from jax.scipy.stats import norm as normal

from ..physics.forward import derived_quantities, rest_frame_abs_mags
from ..physics.params import IDX, ZSUN
from ..physics.relations import (GALLAZZI05, baldry04_ur_divider, weigel16_log_smf, MS_SCATTER_DEX, QUIESCENT_OFFSET_DEX, QUIESCENT_SCATTER_DEX, baldry12_log_smf,
                                 peng10_log_quenched_fraction, speagle14_sfms)

__all__ = ["PRIORS", "MASS_FUNCTIONS", "log_prior_ratio", "mzr_log_density", "smf_log_density", "typed_smf_log_density",
           "log_ssfr_vs_main_sequence", "red_colour_margin", "ur_band_indices", "ssfr_log_density", "ssfr_reference_table", "NEEDS_MODEL", "FORMED_TO_SURVIVING_DEX", "MZR_MIN_WIDTH", "MZR_JOIN_DEX", "TYPE_NORM_NODES", "MS_SPLIT_DEX",
           "MS_SPLIT_WIDTH", "UR_SPLIT_WIDTH"]

PRIORS = ("flat", "mzr", "mzr+smf", "mzr+smf-type", "mzr+smf-colour", "physical")
NEEDS_MODEL = ("mzr+smf-type", "mzr+smf-colour", "physical")
MS_SPLIT_DEX = -0.75  # log sSFR - main sequence [dex] between quenched and star-forming (see above)
MS_SPLIT_WIDTH = 0.15  # dex: logistic scale of the split
UR_SPLIT_WIDTH = 0.1  # mag: logistic scale of the colour split (the green valley is +-0.128 wide)
FORMED_TO_SURVIVING_DEX = 0.23  # median logM_formed - logM_surviving of the project's populations (mock.py)
MZR_MIN_WIDTH = 0.1  # dex: floor of the split-normal half-widths
_G05_TO_MODEL = math.log10(0.02 / ZSUN)  # log Z/Zsun(0.02) -> log Z/Zsun(0.019)


MZR_JOIN_DEX = 0.02  # dex: logistic width over which the MZR's two halves are joined at the median


def _half_normal_logpdf(x, mu, s):
    return -0.5 * math.log(2.0 * math.pi) - jnp.log(s) - 0.5 * ((x - mu) / s) ** 2


def mzr_log_density(log_z, log_m_formed, lo: float, hi: float):
    """log p(logZ | logM) [per dex of logZ] of the Gallazzi+05 preset, truncated to [lo, hi]
    (the box's logZ range, model units Zsun = 0.019). Arrays of equal shape; differentiable.

    Two half-normals joined at Gallazzi's median, each holding probability 1/2 inside the box
    (truncated on its own side), as the physical mock draws them; their densities differ at the
    median, so they are joined by a logistic of width ``MZR_JOIN_DEX``: the KL term's gradient is
    taken through the flow's samples and cannot see a jump (with a hard join it followed a
    continuous split normal whose median lies up to 0.2 dex below Gallazzi's). The join keeps
    the normalisation to O(width^2); the halves start lower by the join's first-order shift of the
    median, so the median is kept to O(width^2) too."""
    dt = jnp.result_type(log_z)
    t = jnp.asarray(GALLAZZI05, dt)
    lm = log_m_formed - FORMED_TO_SURVIVING_DEX
    p50 = jnp.interp(lm, t[:, 0], t[:, 1]) + _G05_TO_MODEL
    s1 = jnp.maximum(jnp.interp(lm, t[:, 0], t[:, 1] - t[:, 2]), MZR_MIN_WIDTH)
    s2 = jnp.maximum(jnp.interp(lm, t[:, 0], t[:, 3] - t[:, 1]), MZR_MIN_WIDTH)
    lo_, hi_ = jnp.asarray(lo, dt), jnp.asarray(hi, dt)

    def halves(mu):  # each half keeps probability 1/2 inside the box, truncated on its own side
        mass_lo = jnp.maximum(0.5 - ndtr((lo_ - mu) / s1), 1e-30)
        mass_hi = jnp.maximum(ndtr((hi_ - mu) / s2) - 0.5, 1e-30)
        return mu, mass_lo, mass_hi

    # the logistic join moves the median up by (p_lower - p_upper) w ln2 / p at the median: start
    # the halves that much lower, so that the median is Gallazzi's to O(w^2)
    _, m_lo, m_hi = halves(p50)
    pl, pu = 1.0 / (2.0 * s1 * m_lo), 1.0 / (2.0 * s2 * m_hi)  # densities at the median / phi(0)
    mu, mass_lo, mass_hi = halves(p50 - (pl - pu) / (0.5 * (pl + pu)) * MZR_JOIN_DEX * math.log(2.0))
    lower = _half_normal_logpdf(log_z, mu, s1) - jnp.log(2.0 * mass_lo)
    upper = _half_normal_logpdf(log_z, mu, s2) - jnp.log(2.0 * mass_hi)
    u = (log_z - mu) / MZR_JOIN_DEX
    return jnp.logaddexp(jax.nn.log_sigmoid(-u) + lower, jax.nn.log_sigmoid(u) + upper)


def _log_norm_on_box(log_v, lo: float, hi: float) -> float:
    """ln of the integral over [lo, hi] of exp(log_v(x)) (numpy, float64, trapezoid on 4001 nodes)."""
    grid = np.linspace(lo, hi, 4001)
    lv = log_v(grid)
    top = float(np.max(lv))
    v = np.exp(lv - top)
    return top + math.log(float(np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(grid))))


MASS_FUNCTIONS = {"weigel16": weigel16_log_smf, "baldry12": baldry12_log_smf}  # FitConfig.mass_function


def smf_log_density(log_m_formed, lo: float, hi: float, mass_function: str = "baldry12"):
    """log p(logM formed) [per dex] of a mass function (``MASS_FUNCTIONS``: Baldry+12 or
    Weigel+16) at log M* = logM - 0.23, normalised on the box's formed-mass range [lo, hi];
    differentiable, finite on the whole box."""
    smf = MASS_FUNCTIONS[mass_function]
    log_norm = _log_norm_on_box(lambda g: smf(g - FORMED_TO_SURVIVING_DEX), lo, hi)
    return smf(log_m_formed - FORMED_TO_SURVIVING_DEX, xp=jnp) - log_norm


def _ssfr_and_time(model, theta):
    """log sSFR (100 Myr) [1/yr] and the age of the universe [Gyr] of theta (..., 11): (...) each."""
    d = derived_quantities(model, theta.reshape(-1, theta.shape[-1]))
    shape = theta.shape[:-1]
    return d["log_ssfr_100myr"].reshape(shape).astype(theta.dtype), d["t_universe"].reshape(shape).astype(theta.dtype)


def _ms_offset(log_ssfr, t_gyr, log_m_formed):
    """log sSFR minus the Speagle+14 main sequence's (Chabrier) at M* = logM - 0.23 [dex]."""
    lms = log_m_formed - FORMED_TO_SURVIVING_DEX
    return log_ssfr - (speagle14_sfms(lms, t_gyr, chabrier=True, xp=jnp) - lms)


def log_ssfr_vs_main_sequence(model, theta, with_ssfr: bool = False):
    """log sSFR (100 Myr) minus the Speagle+14 main sequence (Chabrier) at the galaxy's M*
    (logM - 0.23) and cosmic time [dex], from the forward model's SFH: (..., 11) -> (...);
    with_ssfr: also the log sSFR [1/yr] itself."""
    lssfr, t = _ssfr_and_time(model, theta)
    d_ms = _ms_offset(lssfr, t, theta[..., IDX["logM"]]).astype(theta.dtype)
    return (d_ms, lssfr) if with_ssfr else d_ms


def ur_band_indices(bands) -> tuple[int, int]:
    """Indices of the u and r bands (names ending in '-u', '-r') among ``bands``, which the
    colour-typed prior needs for rest-frame u - r; a ValueError naming the bands otherwise."""
    names = [b.rsplit("-", 1)[-1] for b in bands]
    if "u" not in names or "r" not in names:
        raise ValueError(f"prior 'mzr+smf-colour' types galaxies by rest-frame u - r, but the bands {list(bands)} have no "
                         "u or no r band: set prior = 'mzr+smf-type' (typed by sSFR) or 'mzr' in the fit configuration")
    return names.index("u"), names.index("r")


def red_colour_margin(model, theta, rest_mags=None):
    """Rest-frame (z = 0) u - r minus the Baldry+04 red/blue divider at the galaxy's rest-frame
    M_r [mag], dust included: > 0 red. (..., 11) -> (...). The model needs a u and an r band.
    rest_mags: the rest-frame absolute magnitudes (..., n_bands) if already computed
    (``forward.forward_fluxes(..., with_rest=True)``), else computed here."""
    u_r, m_r = _ur_and_mr(model, theta, rest_mags)
    return (u_r - baldry04_ur_divider(m_r, xp=jnp)).astype(theta.dtype)


def _ur_and_mr(model, theta, rest_mags=None):
    """Rest-frame u - r and absolute M_r [AB mag] of theta (..., 11): (...) each."""
    iu, ir = ur_band_indices(model.bands)
    if rest_mags is None:
        rest_mags = rest_frame_abs_mags(model, theta.reshape(-1, theta.shape[-1]))
    mags = rest_mags.reshape(-1, rest_mags.shape[-1])
    shape = theta.shape[:-1]
    return (mags[:, iu] - mags[:, ir]).reshape(shape), mags[:, ir].reshape(shape)


TYPE_NORM_NODES = 128  # log M nodes of the typed mass term's normalisation at fixed other parameters


def typed_smf_log_density(log_m_formed, d_ms, lo: float, hi: float, red_margin=None, mass_function: str = "baldry12",
                          type_at=None):
    """log p(logM formed | type) [per dex] of the typed presets: the mass function
    (``mass_function``) times the Peng+10 quenched fraction (or its complement), each normalised on the box's
    formed-mass range [lo, hi], mixed by the logistic quenched weight of ``d_ms``, the 100-Myr
    sSFR minus the main sequence [dex] (:func:`log_ssfr_vs_main_sequence`; ``"mzr+smf-type"``),
    or, when ``d_ms`` is None, of ``red_margin``, the rest-frame u - r above the red/blue divider
    [mag] (:func:`red_colour_margin`; ``"mzr+smf-colour"``). ``mass_function``: a key of
    ``MASS_FUNCTIONS``. Arrays that broadcast; differentiable.

    type_at: the type variable (``d_ms``, or ``red_margin``) the same galaxy would have at other
    formed masses, a function of log M nodes (G,) -> (..., G). The type moves with the mass (the
    main sequence's slope; the divider's dependence on M_r), so p(log M | type(log M)) does not
    integrate to 1 over log M by itself: with type_at the density is divided by its integral over
    the box's log M at the galaxy's other parameters (trapezoid on ``TYPE_NORM_NODES`` nodes), so
    that the prior weighs no colour or sSFR more than the reference does."""
    def parts(lm_formed, xp):
        lm = lm_formed - FORMED_TO_SURVIVING_DEX
        log_phi = MASS_FUNCTIONS[mass_function](lm, xp=xp)
        lq, lsf = peng10_log_quenched_fraction(lm, xp=xp)
        return log_phi + lq, log_phi + lsf

    norm_q = _log_norm_on_box(lambda g: parts(g, np)[0], lo, hi)
    norm_sf = _log_norm_on_box(lambda g: parts(g, np)[1], lo, hi)
    def logit(v):  # > 0: quenched / red
        return (MS_SPLIT_DEX - v) / MS_SPLIT_WIDTH if d_ms is not None else v / UR_SPLIT_WIDTH

    def density(lm, u):
        lp_q, lp_sf = parts(lm, jnp)
        return jnp.logaddexp(jax.nn.log_sigmoid(u) + lp_q - norm_q, jax.nn.log_sigmoid(-u) + lp_sf - norm_sf)

    out = density(log_m_formed, logit(d_ms if d_ms is not None else red_margin))
    if type_at is None:
        return out
    nodes = np.linspace(lo, hi, TYPE_NORM_NODES)
    log_w = np.log(np.full(nodes.size, nodes[1] - nodes[0]) * np.r_[0.5, np.ones(nodes.size - 2), 0.5])
    lg = density(jnp.asarray(nodes, out.dtype), logit(type_at(jnp.asarray(nodes, out.dtype))))  # (..., G)
    return out - jax.scipy.special.logsumexp(lg + jnp.asarray(log_w, out.dtype), axis=-1)


def ssfr_log_density(d_ms, log_m_formed):
    """log g(d | M) [per dex of d] of the ``"physical"`` preset: d = log sSFR (100 Myr) - main
    sequence [dex], the mixture f_q N(-1.5, 0.4) + (1 - f_q) N(0, 0.2) at M* = logM - 0.23 (the
    physical mock's distribution). Arrays that broadcast; differentiable."""
    lq, lsf = peng10_log_quenched_fraction(log_m_formed - FORMED_TO_SURVIVING_DEX, xp=jnp)
    return jnp.logaddexp(lq + normal.logpdf(d_ms, QUIESCENT_OFFSET_DEX, QUIESCENT_SCATTER_DEX),
                         lsf + normal.logpdf(d_ms, 0.0, MS_SCATTER_DEX))


SSFR_TABLE_GRID = (-14.0, -8.0, 241)  # log sSFR [1/yr] nodes of the reference table
SSFR_TABLE_BANDWIDTH = 0.05  # dex: Gaussian kernel of the reference density estimate


def ssfr_reference_table(model, lo, hi, n_z: int = 12, n_draws: int = 20_000, seed: int = 0):
    """The box reference's density of log sSFR (100 Myr) at each z: (z nodes (n_z,), log sSFR
    nodes (241,), log density (n_z, 241) per dex), numpy float32. ``n_draws`` uniform box draws
    (SFH coordinates, burst, metallicity; mass and dust do not change the sSFR) per z node through
    the model's ``derived_quantities``, a Gaussian KDE of ``SSFR_TABLE_BANDWIDTH`` dex, floored at
    1e-6 of its peak so that its log stays finite where the box has (almost) no SFH."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    rng = np.random.default_rng(seed)
    zs = np.linspace(lo[IDX["z"]], hi[IDX["z"]], n_z)
    s_grid = np.linspace(*SSFR_TABLE_GRID)
    th = lo + (hi - lo) * rng.random((n_draws, lo.size))
    dq = jax.jit(derived_quantities)
    out = np.empty((n_z, s_grid.size))
    for i, z in enumerate(zs):
        th[:, IDX["z"]] = z
        ls = np.asarray(dq(model, jnp.asarray(th, model.ssp_all.dtype))["log_ssfr_100myr"], float)
        ls = ls[np.isfinite(ls)]
        dens = np.zeros(s_grid.size)
        for chunk in np.array_split(ls, max(1, ls.size // 2000)):
            dens += np.exp(-0.5 * ((s_grid[:, None] - chunk[None]) / SSFR_TABLE_BANDWIDTH) ** 2).sum(1)
        dens /= ls.size * SSFR_TABLE_BANDWIDTH * math.sqrt(2.0 * math.pi)
        out[i] = np.log(np.maximum(dens, 1e-6 * dens.max()))
    return zs.astype(np.float32), s_grid.astype(np.float32), out.astype(np.float32)


def _interp_table(table, z, s):
    """Bilinear interpolation of the reference log density at (z, log sSFR), clamped to the table."""
    zs, sg, lh = (jnp.asarray(a) for a in table)
    fz = jnp.clip((z - zs[0]) / (zs[-1] - zs[0]) * (zs.size - 1), 0.0, zs.size - 1.0)
    fs = jnp.clip((s - sg[0]) / (sg[-1] - sg[0]) * (sg.size - 1), 0.0, sg.size - 1.0)
    i = jnp.minimum(jnp.floor(fz).astype(jnp.int32), zs.size - 2)
    j = jnp.minimum(jnp.floor(fs).astype(jnp.int32), sg.size - 2)
    a, b = fz - i, fs - j
    return ((1 - a) * (1 - b) * lh[i, j] + a * (1 - b) * lh[i + 1, j] + (1 - a) * b * lh[i, j + 1]
            + a * b * lh[i + 1, j + 1])


def log_prior_ratio(theta, prior: str, lo, hi, model=None, ssfr_table=None, rest_mags=None, mass_function: str = "baldry12"):
    """log(prior / p_ref) at theta (..., 11), for the box ``lo``, ``hi`` (11,) -> (...). ``model``
    (the forward model: SFH bases, cosmology, mass fractions, filters) is needed by
    ``"mzr+smf-type"`` and ``"mzr+smf-colour"``, whose mass function depends on the sSFR or the
    colour, and ``"physical"``, which also needs ``ssfr_table`` (:func:`ssfr_reference_table` of
    the same model and box). rest_mags: ``"mzr+smf-colour"``'s rest-frame absolute magnitudes
    (..., n_bands) when the caller has them (:func:`red_colour_margin`). ``mass_function``
    (``MASS_FUNCTIONS``) serves ``"mzr+smf"`` and the typed presets; ``"physical"`` is the
    physical mock's population and keeps its Baldry+12."""
    if prior == "flat":
        return jnp.zeros(theta.shape[:-1], theta.dtype)
    if prior in PRIORS[1:]:
        j, m = IDX["logZ"], IDX["logM"]
        lz_lo, lz_hi = float(np.asarray(lo)[j]), float(np.asarray(hi)[j])
        out = mzr_log_density(theta[..., j], theta[..., m], lz_lo, lz_hi) + math.log(lz_hi - lz_lo)
        lm_lo, lm_hi = float(np.asarray(lo)[m]), float(np.asarray(hi)[m])
        if prior in NEEDS_MODEL and model is None:
            raise ValueError(f"prior {prior!r} needs the forward model (the sSFR or the colour decides the type)")
        if prior in ("mzr+smf", "physical"):
            mf = mass_function if prior == "mzr+smf" else "baldry12"
            out = out + smf_log_density(theta[..., m], lm_lo, lm_hi, mf) + math.log(lm_hi - lm_lo)
        if prior == "physical":
            if ssfr_table is None:
                raise ValueError("prior 'physical' needs ssfr_table (prior.ssfr_reference_table of the model and box)")
            d_ms, lssfr = log_ssfr_vs_main_sequence(model, theta, with_ssfr=True)
            out = out + ssfr_log_density(d_ms, theta[..., m]) - _interp_table(ssfr_table, theta[..., IDX["z"]], lssfr)
        lm = theta[..., m]
        if prior == "mzr+smf-type":
            lssfr, t = _ssfr_and_time(model, theta)
            out = out + typed_smf_log_density(lm, _ms_offset(lssfr, t, lm), lm_lo, lm_hi, mass_function=mass_function,
                                              type_at=lambda g: _ms_offset(lssfr[..., None], t[..., None], g)) + math.log(lm_hi - lm_lo)
        if prior == "mzr+smf-colour":
            u_r, m_r = _ur_and_mr(model, theta, rest_mags)

            def margin(g):  # at formed mass g the galaxy is 2.5 (g - logM) mag brighter in M_r, as red in u - r
                return u_r[..., None] - baldry04_ur_divider(m_r[..., None] - 2.5 * (g - lm[..., None]), xp=jnp)

            red = u_r - baldry04_ur_divider(m_r, xp=jnp)
            out = out + typed_smf_log_density(lm, None, lm_lo, lm_hi, red_margin=red, mass_function=mass_function,
                                              type_at=margin) + math.log(lm_hi - lm_lo)
        return out
    raise ValueError(f"prior must be one of {list(PRIORS)}, got {prior!r}")
