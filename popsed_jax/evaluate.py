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

EVAL_QUANTITIES = (
    "z", "logM", "beta1", "beta2", "beta3", "beta4", "t_burst", "f_burst", "logZ", "n_dust", "tau1", "tau2",
    "logM_surviving", "log_sfr_100myr", "log_ssfr_100myr", "age_mw",
)


SFR_FLOOR = 1e-6  # Msun/yr: floor of log SFR (no star formation in the window -> -6)
LOG_SSFR_FLOOR = -14.0  # log10(1/yr): floor of log sSFR
FLAG_RATIO = 3.0  # a fit member whose validation divergence exceeds this multiple of the data floor is flagged


def log_sfr(sfr, floor: float = SFR_FLOOR):
    """log10 SFR [Msun/yr] with SFR floored at ``floor`` (1e-6 Msun/yr by default)."""
    return np.log10(np.maximum(np.asarray(sfr, float), floor))


def with_log_sfr(cols: dict) -> dict:
    out = dict(cols)
    if "sfr_100myr" in cols and "log_sfr_100myr" not in cols:
        out["log_sfr_100myr"] = log_sfr(cols["sfr_100myr"])
    if "log_ssfr_100myr" in out:
        out["log_ssfr_100myr"] = np.maximum(np.asarray(out["log_ssfr_100myr"], float), LOG_SSFR_FLOOR)
    return out


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


def format_table(scores: dict[str, float], raw: dict[str, float] | None = None) -> str:
    head = f"{'quantity':<18}{'W1(rec,truth)/W1(prior,truth)':>32}" + (f"{'W1(rec,truth)':>16}" if raw else "")
    lines = [head]
    lines += [f"{q:<18}{v:>32.3f}" + (f"{raw[q]:>16.4f}" if raw and q in raw else "") for q, v in scores.items()]
    return "\n".join(lines)
