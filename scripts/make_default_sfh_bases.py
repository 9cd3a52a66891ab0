"""Generate popsed-jax's default SFH bases: popsed_jax/data/sfh_bases_lognormal4.txt.

Four star-formation histories, each a lognormal in cosmic time (Gladders et al. 2013,
ApJ 770, 64; Diemer et al. 2017, ApJ 839, 26):

    SFR_k(t) ∝ exp(-(ln t - mu_k)^2 / (2 s_k^2)) / t,   t = T0 - t_lookback,
    mu_k = ln t_k + s_k^2   (so that the mode of SFR_k(t) is t_k),

with modes t_k at cosmic times 12.6, 8.3, 5.3 and 2.5 Gyr (lookback 1.2, 5.5, 8.5, 11.3 Gyr, close to the peaks of the PROVABGS NMF bases
that PopSED used) and widths s_k = 0.12, 0.20, 0.25, 0.35 in ln t. Each is tabulated on
lookback time [0, T0 = 13.8 Gyr] (401 points) and normalised to unit integral there, in
1/Gyr. The basis order is recent -> old, as in PROVABGS after its reordering.

Run:  python scripts/make_default_sfh_bases.py [--out PATH]
The test suite checks that this script reproduces the committed file.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

T0 = 13.8  # Gyr, lookback-time span of the bases
PEAKS_COSMIC_GYR = (12.6, 8.3, 5.3, 2.5)
WIDTHS_LN_T = (0.12, 0.20, 0.25, 0.35)
N_T = 401
HEADER = (
    "popsed-jax default SFH bases (lognormal in cosmic time), made by scripts/make_default_sfh_bases.py\n"
    f"modes (cosmic time, Gyr): {PEAKS_COSMIC_GYR}; widths (ln t): {WIDTHS_LN_T}; T0 = {T0} Gyr\n"
    "columns: lookback time [Gyr], SFR of basis 1..4 [1/Gyr], each integrating to 1 over [0, T0]"
)


def make_bases() -> tuple[np.ndarray, np.ndarray]:
    """Return (t_lookback (N_T,) Gyr, bases (4, N_T) 1/Gyr) normalised over [0, T0]."""
    t_lb = np.linspace(0.0, T0, N_T)
    t = T0 - t_lb
    out = []
    for tk, sk in zip(PEAKS_COSMIC_GYR, WIDTHS_LN_T):
        mu = np.log(tk) + sk**2  # mode of a lognormal in t is exp(mu - s^2) = tk
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(t > 0, np.exp(-((np.log(np.where(t > 0, t, 1.0)) - mu) ** 2) / (2 * sk**2)) / np.where(t > 0, t, 1.0), 0.0)
        b /= np.trapezoid(b, t_lb)
        out.append(b)
    return t_lb, np.array(out)


def write_bases(path: Path) -> None:
    t_lb, b = make_bases()
    np.savetxt(path, np.column_stack([t_lb, b.T]), fmt="%.12e", header=HEADER)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "popsed_jax" / "data" / "sfh_bases_lognormal4.txt"))
    write_bases(Path(ap.parse_args().out))
    print("wrote", ap.parse_args().out)
