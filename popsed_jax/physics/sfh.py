"""Star-formation histories: basis SFHs + a burst, Dirichlet coefficients, age weights.

SFH(t_lb) = M * [(1 - f_burst) * sum_k beta_k B_k(t_lb) / N(t_u) + f_burst * delta(t_lb - t_burst)]

for lookback time 0 <= t_lb <= t_u (age of the universe at the galaxy's redshift), with
N(t_u) = sum_k beta_k int_0^t_u B_k: the bases live on absolute lookback time, are
truncated at t_u and the sum is renormalised so that M = 10^logM is the total mass formed.
If t_burst > t_u there is no burst (f_burst is set to 0), as in PROVABGS.

The bases are piecewise linear between their tabulated lookback times (held constant
outside the table, like ``np.interp``), so their cumulative integrals are exact piecewise
quadratics: the mass each SSP age bin receives is computed exactly, not sampled.
SSP age-bin edges follow DSPS (midpoints in log age), except that the first bin starts at
t_lb = 0. The burst is placed between the two neighbouring SSP ages, linearly in log age
(smooth in t_burst).

beta = (beta_1..beta_4) is on the simplex; the flow's box variables kappa in [0, 1]^3 map
to it by stick breaking (Betancourt 2013): k1 = u1^(1/3), k2 = u2^(1/2), k3 = u3,
beta = (1-k1, k1(1-k2), k1 k2 (1-k3), k1 k2 k3), so kappa ~ U(0,1)^3 <=> flat Dirichlet.
"""
from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["T_LB_MAX", "T_BIG", "YOUNG_GYR", "DEFAULT_BASES_FILE", "SFHBases", "load_sfh_bases", "SFHTables",
    "ssp_age_edges", "make_sfh_tables", "cumulative_basis_mass", "kappa_to_beta", "beta_to_kappa",
    "age_mass_fractions", "effective_burst_fraction", "burst_weights", "mass_formed_within", "sfr_table"]

T_LB_MAX = 13.8  # Gyr, span on which bases are normalised
T_BIG = 1.0e3  # Gyr, far end of the constant extension of a basis
YOUNG_GYR = 0.01  # stars younger than this (SSP ages <= 10 Myr) see birth-cloud dust
DEFAULT_BASES_FILE = "sfh_bases_lognormal4.txt"


class SFHBases(NamedTuple):
    """Tabulated SFH bases: t_lb (n_t,) ascending lookback time [Gyr]; sfr (n_k, n_t) [1/Gyr]."""

    t_lb: np.ndarray
    sfr: np.ndarray
    source: str = ""


def _normalise(t, b):
    """Normalise each basis to unit integral over [0, T_LB_MAX] (with constant extension)."""
    tt = np.concatenate([[0.0], t, [T_LB_MAX]]) if t[0] > 0 else np.concatenate([t, [T_LB_MAX]])
    tt = np.unique(np.clip(tt, 0, T_LB_MAX))
    vals = np.array([np.interp(tt, t, bk) for bk in b])
    return b / np.trapezoid(vals, tt, axis=1)[:, None]


def load_sfh_bases(path=None, t_path=None, provabgs_order: bool | None = None) -> SFHBases:
    """Load SFH bases.

    path=None: the project's default (``popsed_jax/data/sfh_bases_lognormal4.txt``, columns
    t_lb, B_1..B_k). With ``t_path`` (PROVABGS/PopSED format): ``path`` holds (n_k, n_t) SFRs
    and ``t_path`` the n_t lookback times in descending order, e.g.
    ``NMF_2basis_SFH_components_nowgt_lin_Nc4.txt`` + ``sfh_t_int.txt``; both are reversed
    and, for 4 bases, reordered to [2, 0, 1, 3] as PROVABGS does (recent -> old).
    Every basis is normalised to unit integral over [0, 13.8] Gyr.
    """
    if path is None:
        with resources.as_file(resources.files("popsed_jax") / "data" / DEFAULT_BASES_FILE) as p:
            arr = np.loadtxt(p)
        t, b, src = arr[:, 0], arr[:, 1:].T, f"default ({DEFAULT_BASES_FILE})"
    elif t_path is not None:
        b = np.atleast_2d(np.loadtxt(path))
        t = np.loadtxt(t_path)
        if b.shape[1] != t.size:
            raise ValueError(f"SFH bases {path}: {b.shape[1]} columns but {t.size} times in {t_path}")
        if t[0] > t[-1]:
            t, b = t[::-1], b[:, ::-1]
        if provabgs_order is None:
            provabgs_order = b.shape[0] == 4
        if provabgs_order:
            b = b[[2, 0, 1, 3]]
        src = str(path)
    else:
        arr = np.loadtxt(path)
        t, b, src = arr[:, 0], arr[:, 1:].T, str(path)
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"SFH bases {src}: lookback times must be strictly monotonic")
    if np.any(b < 0):
        raise ValueError(f"SFH bases {src}: negative star-formation rates")
    return SFHBases(np.asarray(t, float), _normalise(np.asarray(t, float), np.asarray(b, float)), src)


class SFHTables(NamedTuple):
    """Static tables for fast SFH integrals on an SSP age grid (a pytree of arrays)."""

    t_nodes: jnp.ndarray  # (n_t,) lookback times of the piecewise-linear bases, from 0 to T_BIG
    b_nodes: jnp.ndarray  # (n_t, n_k) SFR at nodes [1/Gyr]
    c_nodes: jnp.ndarray  # (n_t, n_k) cumulative integral from 0 at nodes
    edges: jnp.ndarray  # (n_age + 1,) SSP age-bin edges in lookback time [Gyr]
    c_edges: jnp.ndarray  # (n_age + 1, n_k) cumulative integral at the edges
    lg_age: jnp.ndarray  # (n_age,) log10 SSP ages [Gyr]
    age: jnp.ndarray  # (n_age,) SSP ages [Gyr]


def ssp_age_edges(lg_age_gyr: np.ndarray) -> np.ndarray:
    """SSP age-bin edges [Gyr]: DSPS's log-midpoint convention, first edge at 0."""
    lg = np.asarray(lg_age_gyr, float)
    mids = 0.5 * (lg[1:] + lg[:-1])
    hi = lg[-1] + 0.5 * (lg[-1] - lg[-2])
    return np.concatenate([[0.0], 10**mids, [10**hi]])


def _cum_numpy(t_nodes, b_nodes, x):
    """Exact integral from 0 to x of the piecewise-linear function (numpy, float64)."""
    seg = 0.5 * (b_nodes[1:] + b_nodes[:-1]) * np.diff(t_nodes)[:, None]
    c = np.concatenate([np.zeros((1, b_nodes.shape[1])), np.cumsum(seg, 0)])
    i = np.clip(np.searchsorted(t_nodes, x, side="right") - 1, 0, t_nodes.size - 2)
    dt = (x - t_nodes[i])[:, None]
    slope = (b_nodes[i + 1] - b_nodes[i]) / (t_nodes[i + 1] - t_nodes[i])[:, None]
    return c[i] + b_nodes[i] * dt + 0.5 * slope * dt**2, c


def make_sfh_tables(bases: SFHBases, lg_age_gyr: np.ndarray, dtype=jnp.float32) -> SFHTables:
    t, b = bases.t_lb, bases.sfr.T  # (n_t,), (n_t, n_k)
    if t[0] > 0:
        t, b = np.concatenate([[0.0], t]), np.concatenate([b[:1], b])
    t, b = np.concatenate([t, [T_BIG]]), np.concatenate([b, b[-1:]])
    edges = ssp_age_edges(lg_age_gyr)
    c_edges, c_nodes = _cum_numpy(t, b, edges)
    f = lambda x: jnp.asarray(x, dtype=dtype)  # noqa: E731
    return SFHTables(f(t), f(b), f(c_nodes), f(edges), f(c_edges), f(lg_age_gyr), f(10.0 ** np.asarray(lg_age_gyr)))


def cumulative_basis_mass(t, tab: SFHTables):
    """int_0^t B_k for lookback time(s) t [Gyr]: shape t.shape + (n_k,)."""
    t = jnp.asarray(t)
    i = jnp.clip(jnp.searchsorted(tab.t_nodes, t, side="right") - 1, 0, tab.t_nodes.shape[0] - 2)
    t0, t1 = tab.t_nodes[i], tab.t_nodes[i + 1]
    b0, b1 = tab.b_nodes[i], tab.b_nodes[i + 1]
    dt = (t - t0)[..., None]
    slope = (b1 - b0) / (t1 - t0)[..., None]
    return tab.c_nodes[i] + b0 * dt + 0.5 * slope * dt * dt


def kappa_to_beta(kappa):
    """(..., 3) box variables in [0,1] -> (..., 4) Dirichlet coefficients on the simplex."""
    k1 = kappa[..., 0] ** (1.0 / 3.0)
    k2 = jnp.sqrt(kappa[..., 1])
    k3 = kappa[..., 2]
    return jnp.stack([1 - k1, k1 * (1 - k2), k1 * k2 * (1 - k3), k1 * k2 * k3], axis=-1)


def beta_to_kappa(beta):
    """Inverse of :func:`kappa_to_beta`: (..., 4) simplex -> (..., 3) in [0, 1]."""
    beta = jnp.asarray(beta)
    k1 = 1 - beta[..., 0]
    k2 = jnp.where(k1 > 0, 1 - beta[..., 1] / jnp.where(k1 > 0, k1, 1.0), 0.0)
    s34 = beta[..., 2] + beta[..., 3]
    k3 = jnp.where(s34 > 0, beta[..., 3] / jnp.where(s34 > 0, s34, 1.0), 0.0)
    return jnp.stack([k1**3, k2**2, k3], axis=-1)


def age_mass_fractions(beta, t_burst, f_burst, t_u, tab: SFHTables):
    """Fraction of the formed mass in each SSP age bin.

    beta: (N, n_k); t_burst, f_burst, t_u: (N,) [Gyr]. Returns (N, n_age), rows sum to 1.
    """
    c_tu = cumulative_basis_mass(t_u, tab)  # (N, n_k)
    below = tab.edges[None, :, None] < t_u[:, None, None]
    c_clip = jnp.where(below, tab.c_edges[None], c_tu[:, None, :])  # (N, n_age+1, n_k)
    dm = jnp.diff(c_clip, axis=1)  # (N, n_age, n_k)
    norm = jnp.sum(c_tu * beta, axis=-1)
    basis = jnp.einsum("nak,nk->na", dm, beta) / norm[:, None]
    fb = effective_burst_fraction(t_burst, f_burst, t_u)
    return (1 - fb)[:, None] * basis + fb[:, None] * burst_weights(t_burst, tab)


def effective_burst_fraction(t_burst, f_burst, t_u):
    """f_burst, or 0 where the burst would predate the Big Bang (t_burst > t_u)."""
    return jnp.where(t_burst <= t_u, f_burst, 0.0)


def burst_weights(t_burst, tab: SFHTables):
    """(N, n_age) weights placing a burst at lookback t_burst [Gyr], linear in log age."""
    lg = jnp.log10(t_burst)
    n = tab.lg_age.shape[0]
    i = jnp.clip(jnp.searchsorted(tab.lg_age, lg, side="right") - 1, 0, n - 2)
    f = jnp.clip((lg - tab.lg_age[i]) / (tab.lg_age[i + 1] - tab.lg_age[i]), 0.0, 1.0)
    idx = jnp.arange(n)
    return (1 - f)[:, None] * (idx[None] == i[:, None]) + f[:, None] * (idx[None] == (i + 1)[:, None])


def mass_formed_within(dt_gyr, beta, t_burst, f_burst, t_u, tab: SFHTables):
    """Fraction of the total formed mass formed in the last dt_gyr (lookback < dt). (N,)"""
    c_tu = cumulative_basis_mass(t_u, tab)
    c_dt = cumulative_basis_mass(jnp.minimum(dt_gyr, t_u), tab)
    basis = jnp.sum(c_dt * beta, -1) / jnp.sum(c_tu * beta, -1)
    fb = effective_burst_fraction(t_burst, f_burst, t_u)
    return (1 - fb) * basis + fb * (t_burst < dt_gyr)


def sfr_table(t_lb, beta, t_burst, f_burst, t_u, tab: SFHTables):
    """Continuous (basis) part of the SFH [fraction of M per Gyr] at lookback times t_lb (n,).

    Returns (N, n); zero beyond t_u. The burst is not included (it is a delta function)."""
    b = jnp.stack([jnp.interp(t_lb, tab.t_nodes, tab.b_nodes[:, k]) for k in range(tab.b_nodes.shape[1])], -1)
    c_tu = cumulative_basis_mass(t_u, tab)
    norm = jnp.sum(c_tu * beta, -1)
    fb = effective_burst_fraction(t_burst, f_burst, t_u)
    s = (b[None] * beta[:, None, :]).sum(-1) / norm[:, None] * (1 - fb)[:, None]
    return jnp.where(t_lb[None] <= t_u[:, None], s, 0.0)
