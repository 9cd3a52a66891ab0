"""Figures for the README: model spectra with their photometry, and the SFH bases.

    python scripts/make_figures.py [--outdir docs]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from popsed_jax.physics import photometry, sfh  # noqa: E402
from popsed_jax.physics.cosmology import lum_distance  # noqa: E402
from popsed_jax.physics.forward import build_forward_model, forward_fluxes, rest_spectra  # noqa: E402

SHARED_NMF = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmf_sfh"


def spectra_figure(path):
    model = build_forward_model()
    gals = {
        "star-forming, z=0.05": [0.05, 10.3, 0.25, 0.5, 0.5, 0.5, 0.02, -0.3, -0.3, 0.6, 0.3],
        "quiescent, z=0.10": [0.10, 11.0, 1.0, 0.9, 0.95, 8.0, 0.0, 0.1, 0.0, 0.0, 0.1],
        "dusty starburst, z=0.20": [0.20, 10.8, 0.3, 0.5, 0.5, 0.05, 0.3, 0.0, -0.7, 1.5, 1.2],
    }
    th = np.array(list(gals.values()))
    spec = np.asarray(rest_spectra(model, th)) * photometry.AB0_LSUN_HZ  # Lsun/Hz per Msun formed
    flux = np.asarray(forward_fluxes(model, th))
    curves = photometry.load_filter_curves(model.bands)
    pivot = [np.sqrt(np.trapezoid(r * w, w) / np.trapezoid(r / w, w)) for _, w, r in curves]
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    for j, (name, t) in enumerate(gals.items()):
        z = t[0]
        wobs = np.asarray(model.wave_rest) * (1 + z)
        # observed f_nu in nanomaggies for the same normalisation as the photometry
        dl = float(lum_distance(np.float32(z), model.cosmo))
        fnu = spec[j] / photometry.AB0_LSUN_HZ * 0.1 * (1 + z) / dl**2 * 10 ** t[1]
        line = ax[0].plot(wobs, fnu, lw=0.6, label=name)[0]
        ax[0].plot(pivot, flux[j], "o", color=line.get_color(), mec="k")
        ax[1].plot(np.asarray(model.wave_rest), spec[j], lw=0.6, color=line.get_color())
    for _, w, r in curves:
        ax[0].fill_between(w, 0, r / r.max() * ax[0].get_ylim()[1] * 0.15, color="0.8", zorder=0)
    ax[0].set(xscale="log", yscale="log", xlabel="observed wavelength [A]", ylabel="f_nu [nanomaggies]", title="observed spectra and SDSS ugriz fluxes (dots)")
    ax[0].set_ylim(bottom=max(ax[0].get_ylim()[0], 1e-3 * flux.max()))
    ax[0].legend(fontsize=8)
    ax[1].set(xscale="log", yscale="log", xlabel="rest wavelength [A]", ylabel="L_nu [Lsun/Hz per Msun formed]", title="rest frame, dust attenuated")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bases_figure(path):
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6), sharey=False)
    b = sfh.load_sfh_bases()
    for k in range(b.sfr.shape[0]):
        ax[0].plot(b.t_lb, b.sfr[k], label=f"B{k + 1}")
    ax[0].set(xlabel="lookback time [Gyr]", ylabel="SFR [1/Gyr] (unit integral)", title="popsed-jax default bases (lognormal in cosmic time)")
    ax[0].legend()
    if SHARED_NMF.exists():
        p = sfh.load_sfh_bases(SHARED_NMF / "NMF_2basis_SFH_components_nowgt_lin_Nc4.txt", SHARED_NMF / "sfh_t_int.txt")
        for k in range(p.sfr.shape[0]):
            ax[1].plot(p.t_lb, p.sfr[k], label=f"B{k + 1}")
        ax[1].set(xlabel="lookback time [Gyr]", title="PROVABGS NMF bases (PopSED's; load by path)")
        ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--outdir", default="docs")
    out = Path(ap.parse_args().outdir)
    out.mkdir(parents=True, exist_ok=True)
    spectra_figure(out / "forward_spectra.png")
    bases_figure(out / "sfh_bases.png")
    print("wrote", out / "forward_spectra.png", out / "sfh_bases.png")
