"""The model's parameters: names, units, the box of bounds, and their named (column) form.

theta is an (N, 11) array with columns PARAM_NAMES; ``theta_to_columns`` / ``theta_from_columns``
convert to and from named columns (beta1..beta4 may stand for kappa1..kappa3). Also the
conventions of the derived star-formation rates (floors of log SFR and log sSFR).
"""
from __future__ import annotations

import numpy as np

from . import sfh

__all__ = ["PARAM_NAMES", "PARAM_UNITS", "PARAM_BOUNDS", "ZSUN", "IDX", "theta_from_columns",
           "theta_to_columns", "SFR_FLOOR", "LOG_SSFR_FLOOR", "log_sfr", "with_log_sfr"]

PARAM_NAMES = ("z", "logM", "kappa1", "kappa2", "kappa3", "t_burst", "f_burst", "logZ", "n_dust", "tau1", "tau2")
PARAM_UNITS = {
    "z": "", "logM": "log10 Msun (formed)", "kappa1": "", "kappa2": "", "kappa3": "", "t_burst": "Gyr (lookback)",
    "f_burst": "", "logZ": "log10 Z/Zsun (Zsun=0.019)", "n_dust": "", "tau1": "", "tau2": "",
}
PARAM_BOUNDS = {
    "z": (0.0, 0.8), "logM": (7.5, 13.0), "kappa1": (0.0, 1.0), "kappa2": (0.0, 1.0), "kappa3": (0.0, 1.0),
    "t_burst": (0.01, 13.27), "f_burst": (0.0, 1.0), "logZ": (-2.6, 0.3), "n_dust": (-3.0, 1.0),
    "tau1": (0.0, 3.0), "tau2": (0.0, 3.0),
}
ZSUN = 0.019
IDX = {n: i for i, n in enumerate(PARAM_NAMES)}


SFR_FLOOR = 1e-6  # Msun/yr: floor of log SFR (no star formation in the window -> -6)
LOG_SSFR_FLOOR = -14.0  # log10(1/yr): floor of log sSFR


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


def theta_from_columns(cols) -> np.ndarray:
    """Mapping (dict, astropy Table, structured array) of columns -> (N, 11) array.

    SFH coefficients may be given as kappa1..kappa3 or as beta1..beta4 (on the simplex)."""
    names = set(cols.keys()) if hasattr(cols, "keys") else set(cols.colnames)
    if {"kappa1", "kappa2", "kappa3"} <= names:
        kappa = np.stack([np.asarray(cols[f"kappa{i}"], float) for i in (1, 2, 3)], -1)
    elif {"beta1", "beta2", "beta3", "beta4"} <= names:
        beta = np.stack([np.asarray(cols[f"beta{i}"], float) for i in (1, 2, 3, 4)], -1)
        s = beta.sum(-1)
        if np.any(np.abs(s - 1) > 1e-4) or np.any(beta < -1e-8):
            i = int(np.argmax(np.abs(s - 1)))
            raise ValueError(f"beta1..beta4 must be non-negative and sum to 1: row {i} sums to {s[i]:.6g}")
        kappa = np.asarray(sfh.beta_to_kappa(beta / s[:, None]))
    else:
        raise ValueError("parameter table needs kappa1..kappa3 or beta1..beta4 columns")
    need = [n for n in PARAM_NAMES if not n.startswith("kappa")]
    missing = [n for n in need if n not in names]
    if missing:
        raise ValueError(f"parameter table lacks column(s) {missing}; expected {list(PARAM_NAMES)} (or beta1..beta4)")
    cols_out = {n: np.asarray(cols[n], float) for n in need}
    cols_out.update({f"kappa{i + 1}": kappa[:, i] for i in range(3)})
    return np.stack([cols_out[n] for n in PARAM_NAMES], -1)


def theta_to_columns(theta) -> dict[str, np.ndarray]:
    theta = np.asarray(theta)
    out = {n: theta[:, i] for i, n in enumerate(PARAM_NAMES)}
    beta = np.asarray(sfh.kappa_to_beta(theta[:, 2:5]))
    out.update({f"beta{i + 1}": beta[:, i] for i in range(4)})
    return out
