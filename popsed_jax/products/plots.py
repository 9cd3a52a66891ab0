"""Figures of a fit: loss curves, posterior-predictive checks, corner plots (matplotlib, Agg)."""
from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(history: dict, path, floor: float | None = None):
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    steps = np.asarray(history["step"])
    loss = np.asarray(history["loss"])  # (n_steps, K)
    for m in range(loss.shape[1]):
        ax[0].plot(steps, loss[:, m], lw=0.6, label=f"member {m}" if loss.shape[1] <= 8 else None)
    ax[0].set(yscale="log", xlabel="step", ylabel="training divergence", title="training loss")
    ax0b = ax[0].twinx()
    ax0b.plot(steps, history["epsilon"], "k--", lw=0.8, label="blur epsilon")
    ax0b.plot(steps, history["noise_scale"], "k:", lw=0.8, label="noise scale")
    ax0b.set(yscale="log", ylabel="epsilon / noise scale")
    ax0b.legend(loc="upper right", fontsize=7)
    if history.get("val"):
        val = np.asarray(history["val"])
        for m in range(val.shape[1]):
            ax[1].plot(history["val_step"], val[:, m], "o-", ms=3)
        if floor is not None:
            ax[1].axhline(floor, color="k", ls="--", label="data-vs-data floor (final blur)")
            ax[1].legend(fontsize=8)
    ax[1].set(yscale="log", xlabel="step", ylabel="validation divergence", title="held-out validation (real noise)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ppc(obs_mags: np.ndarray, sim_mags: np.ndarray, bands, path, sim_weights=None):
    """Observed vs simulated magnitudes and adjacent colours (histograms)."""
    plt = _plt()
    nb = len(bands)
    fig, ax = plt.subplots(2, max(nb, nb - 1), figsize=(3.0 * nb, 5.6))
    short = [b.split("-")[-1] for b in bands]
    for j in range(nb):
        lo, hi = np.nanpercentile(obs_mags[:, j], [0.5, 99.5])
        bins = np.linspace(lo - 0.5, hi + 0.5, 40)
        ax[0, j].hist(obs_mags[:, j], bins, density=True, histtype="step", color="k", label="observed")
        ax[0, j].hist(sim_mags[:, j], bins, density=True, histtype="step", color="C1", weights=sim_weights, label="simulated")
        ax[0, j].set_xlabel(f"{short[j]} [AB]")
    for j in range(nb - 1):
        oc = obs_mags[:, j] - obs_mags[:, j + 1]
        sc = sim_mags[:, j] - sim_mags[:, j + 1]
        lo, hi = np.nanpercentile(oc, [0.5, 99.5])
        bins = np.linspace(lo - 0.2, hi + 0.2, 40)
        ax[1, j].hist(oc, bins, density=True, histtype="step", color="k")
        ax[1, j].hist(sc, bins, density=True, histtype="step", color="C1", weights=sim_weights)
        ax[1, j].set_xlabel(f"{short[j]} - {short[j + 1]}")
    for j in range(nb - 1, ax.shape[1]):
        ax[1, j].axis("off")
    ax[0, 0].legend(fontsize=8)
    fig.suptitle("posterior predictive check: observed vs simulated (noise + selection)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_corner(samples: dict, names, path, truth: dict | None = None, labels=("recovered", "truth"), max_points=20000):
    """Lower-triangle corner plot: 1-D histograms and 2-D contours (recovered vs truth)."""
    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(n, n, figsize=(1.9 * n, 1.9 * n))
    sets = [(samples, "C0")] + ([(truth, "k")] if truth is not None else [])
    for i in range(n):
        for j in range(n):
            a = ax[i, j]
            if j > i:
                a.axis("off")
                continue
            xi = names[j]
            allx = np.concatenate([np.asarray(s[xi])[:max_points] for s, _ in sets])
            xr = np.nanpercentile(allx, [0.5, 99.5])
            if i == j:
                for s, c in sets:
                    a.hist(np.asarray(s[xi])[:max_points], np.linspace(*xr, 30), density=True, histtype="step", color=c)
                a.set_yticks([])
            else:
                yi = names[i]
                ally = np.concatenate([np.asarray(s[yi])[:max_points] for s, _ in sets])
                yr = np.nanpercentile(ally, [0.5, 99.5])
                for s, c in sets:
                    h, xe, ye = np.histogram2d(np.asarray(s[xi])[:max_points], np.asarray(s[yi])[:max_points], bins=20, range=[xr, yr])
                    h = h.T / max(h.max(), 1)
                    a.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), h, levels=[0.1, 0.4, 0.8], colors=c, linewidths=0.8)
            if i == n - 1:
                a.set_xlabel(xi, fontsize=8)
            else:
                a.set_xticklabels([])
            if j == 0 and i > 0:
                a.set_ylabel(names[i], fontsize=8)
            elif j > 0:
                a.set_yticklabels([])
            a.tick_params(labelsize=6)
    handles = [plt.Line2D([], [], color=c) for _, c in sets]
    fig.legend(handles, list(labels[: len(sets)]), loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
