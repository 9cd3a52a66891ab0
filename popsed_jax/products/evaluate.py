"""Scoring a recovered population against a mock's truth.

Normalised 1-D Wasserstein distance per quantity q:

    W1(recovered_q, truth_q) / W1(prior_q, truth_q)

0 = perfect, 1 = no better than the prior (the flow's starting point: uniform on the box, in
z uniform in comoving volume with the default ``z_prior = "volume"``).
All three samples are compared as *observed* populations: recovered and prior samples go
through the forward model, noise and the survey selection, and only the rows that would
be selected are kept, as the mock's catalog holds only selected galaxies.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from ..physics.params import with_log_sfr

__all__ = ["EVAL_QUANTITIES", "normalized_w1", "w1", "photometric_distinguishability", "photometry_verdict", "format_table"]

EVAL_QUANTITIES = (
    "z", "logM", "beta1", "beta2", "beta3", "beta4", "t_burst", "f_burst", "logZ", "n_dust", "tau1", "tau2",
    "logM_surviving", "log_sfr_100myr", "log_ssfr_100myr", "age_mw",
)


def normalized_w1(recovered: dict, truth: dict, prior: dict, names=EVAL_QUANTITIES) -> dict[str, float]:
    rec, tru, pri = with_log_sfr(recovered), with_log_sfr(truth), with_log_sfr(prior)
    out = {}
    for q in names:
        if q not in rec or q not in tru or q not in pri:
            continue
        r, t, p = (np.asarray(x[q], float) for x in (rec, tru, pri))
        r, t, p = r[np.isfinite(r)], t[np.isfinite(t)], p[np.isfinite(p)]
        den = stats.wasserstein_distance(p, t)
        out[q] = float(stats.wasserstein_distance(r, t) / den) if den > 0 else float("nan")
    return out


def w1(recovered: dict, truth: dict, q: str) -> float:
    """Plain W1(recovered_q, truth_q), in the quantity's units (finite values only)."""
    r, t = (np.asarray(with_log_sfr(x)[q], float) for x in (recovered, truth))
    return float(stats.wasserstein_distance(r[np.isfinite(r)], t[np.isfinite(t)]))


def photometric_distinguishability(rec_flux, truth_flux, softening, *, colours=True, epsilon=0.1,
                                   seed=0, n_max=3000, n_permutations=19) -> dict:
    """Can the photometry tell the recovered population from the truth? A permutation test.

    Statistic: the debiased Sinkhorn divergence T = S(recovered, truth) between n = min(n_rec,
    n_truth, n_max) rows of each (features as in the fit, standardized with the truth's
    statistics; epsilon in squared standardized units). Null distribution: T for
    ``n_permutations`` random relabellings of the pooled rows. Returns the statistic, the null's
    mean and standard deviation, ``z = (T - mean) / sd``, ``p`` (the permutation p-value,
    at least 1 / (n_permutations + 1)) and ``ratio = T / mean``. z of a few or less: the
    photometry cannot tell the recovered population from the truth at this sample size, so
    whatever parameter errors remain are not identifiable from these data; large z: the fit
    left information unused. rec_flux, truth_flux: (N, B) noisy fluxes [nmgy]; softening (B,).
    """
    import jax
    import jax.numpy as jnp

    from ..inference import loss
    from ..survey.features import feature_stats, make_features, standardize

    rng = np.random.default_rng(seed)
    rec_flux, truth_flux = np.asarray(rec_flux, np.float32), np.asarray(truth_flux, np.float32)
    n = int(min(len(rec_flux), len(truth_flux), n_max))
    if n < 50:
        raise ValueError(f"too few rows to compare photometry: {len(rec_flux)} recovered, {len(truth_flux)} truth")
    r = rec_flux[rng.permutation(len(rec_flux))[:n]]
    t = truth_flux[rng.permutation(len(truth_flux))[:n]]
    feat = lambda f: make_features(jnp.asarray(f), softening, colours=colours)  # noqa: E731
    stats = feature_stats(feat(t))
    pooled = jnp.concatenate([standardize(feat(r), stats), standardize(feat(t), stats)])
    div = jax.jit(lambda x, y: loss.sinkhorn_divergence(x, y, epsilon))
    stat, info = div(pooled[:n], pooled[n:])
    null, conv = [], bool(info.converged)
    for _ in range(n_permutations):
        idx = jnp.asarray(rng.permutation(2 * n))
        v, i = div(pooled[idx[:n]], pooled[idx[n:]])
        null.append(float(v))
        conv &= bool(i.converged)
    null = np.asarray(null)
    stat = float(stat)
    return {"statistic": stat, "null_mean": float(null.mean()), "null_sd": float(null.std(ddof=1)),
            "z": float((stat - null.mean()) / null.std(ddof=1)), "p": float((1 + np.sum(null >= stat)) / (n_permutations + 1)),
            "ratio": float(stat / null.mean()), "n": n, "epsilon": float(epsilon), "converged": conv}


def format_table(scores: dict[str, float], raw: dict[str, float] | None = None) -> str:
    head = f"{'quantity':<18}{'W1(rec,truth)/W1(prior,truth)':>32}" + (f"{'W1(rec,truth)':>16}" if raw else "")
    lines = [head]
    lines += [f"{q:<18}{v:>32.3f}" + (f"{raw[q]:>16.4f}" if raw and q in raw else "") for q, v in scores.items()]
    return "\n".join(lines)


def photometry_verdict(ph: dict, z_crit: float = 3.0) -> str:
    """What the permutation test's z-score means, in words that follow the number."""
    if ph["z"] < z_crit:
        return (f"z < {z_crit:g}: the photometry cannot tell the recovered population from the truth at this sample size, "
                "so remaining parameter errors are not identifiable from it")
    return (f"z >= {z_crit:g}: the photometry CAN tell them apart: the fit has not reproduced the observed photometry, "
            "so its parameter errors are (at least partly) a fitting failure, not a degeneracy")

