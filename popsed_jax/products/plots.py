"""Every figure of the package (matplotlib, Agg): a fit's loss curves, posterior-predictive
checks and corner plots; the noise model; mock vs SDSS; n(z), the stellar mass function and the
star-forming main sequence. Numbers come from the numerical modules; this module only draws."""
from __future__ import annotations

import warnings

import numpy as np

from ..physics.photometry import flux_to_mag
from ..survey.noise import noise_ln_scatter, noise_sigma_median
from ..physics.params import SFR_FLOOR
from ..physics.relations import baldry12_smf, renzini_peng15_sfms, speagle14_sfms
from . import science

__all__ = ["plot_loss_curves", "plot_ppc", "plot_corner", "plot_noise_model", "plot_mock_vs_sdss",
           "plot_nz", "plot_smf", "plot_sfms", "plot_masses_vs_kcorrect", "plot_photoz"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(history: dict, path, floor: float | None = None):
    plt = _plt()
    ess = history.get("ess") or []
    has_ess = len(ess) == len(history["step"]) and len(ess) > 0  # runs before 2026-12-07 have none
    fig, ax = plt.subplots(1, 3 if has_ess else 2, figsize=(16 if has_ess else 11, 3.8))
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
    if has_ess:  # few selected draws per step make the loss, and so the gradient, noisy
        e = np.asarray(ess, float)
        for m in range(e.shape[1]):
            ax[2].plot(steps, e[:, m], lw=0.6)
        ax[2].set(yscale="log", xlabel="step", ylabel="(sum w)$^2$ / sum w$^2$",
                  title="effective selected draws per step")
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


def plot_noise_model(model, cat, path, max_points=20000):
    """Per band: catalog sigma vs flux, with the model median and 16-84% band."""
    import jax.numpy as jnp

    plt = _plt()
    nb = len(model.bands)
    ncol = min(nb, 3)
    nrow = -(-nb // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow), squeeze=False)
    rng = np.random.default_rng(0)
    sel = rng.permutation(cat.n)[:max_points]
    for k, band in enumerate(model.bands):
        ax = axes[k // ncol, k % ncol]
        j = cat.bands.index(band)
        f, e = cat.flux[sel, j], cat.flux_err[sel, j]
        pos = f > 0
        ax.scatter(f[pos], e[pos], s=1, alpha=0.25, color="0.4", rasterized=True,
                   label="catalog")
        grid = np.logspace(np.log10(f[pos].min()), np.log10(f[pos].max()), 200)
        g = np.zeros((grid.size, nb))
        g[:, k] = grid
        med = np.asarray(noise_sigma_median(model, jnp.asarray(g)))[:, k]
        lo, hi = (np.asarray(x)[:, k] for x in noise_ln_scatter(model, jnp.asarray(g)))
        ax.fill_between(grid, med * np.exp(-lo), med * np.exp(hi), color="C1", alpha=0.35,
                        label="model 16-84%")
        ax.plot(grid, med, color="C3", lw=1.5, label="model median")
        ax.set(xscale="log", yscale="log", title=band, xlabel="flux [nmgy]",
               ylabel="sigma [nmgy]")
    for k in range(nb, nrow * ncol):
        axes[k // ncol, k % ncol].set_visible(False)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _r_index(bands):
    from ..survey.selection import band_index
    return band_index(bands, "r")


def plot_mock_vs_sdss(mock_table, sdss_catalog, path):
    """n(z), r-band counts (log N per 0.25 mag) and per-band sigma vs flux: mock vs SDSS."""
    from ..survey.mock import FORMED_MINUS_SURVIVING_DEX, counts_slope, mock_to_catalog

    plt = _plt()
    mock = mock_to_catalog(mock_table)
    sd = sdss_catalog
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    ax = axes[0, 0]
    zb = np.linspace(0, 0.42, 43)
    ax.hist(sd.z_spec, zb, density=True, histtype="step", lw=2, label=f"SDSS main ({sd.n})")
    ax.hist(mock.z_spec, zb, density=True, histtype="step", lw=2, label=f"mock ({mock.n})")
    ax.set(xlabel="z", ylabel="n(z)", title=f"median z: SDSS {np.median(sd.z_spec):.3f}, mock {np.median(mock.z_spec):.3f}")
    ax.legend()
    ax = axes[0, 1]
    mb = np.arange(12.0, 18.01, 0.25)
    slopes = []
    for c, lab in ((sd, "SDSS"), (mock, "mock")):
        f = c.flux[:, _r_index(c.bands)]
        r = flux_to_mag(f)
        h, _ = np.histogram(r[np.isfinite(r)], mb)
        s = counts_slope(r)
        slopes.append(s)
        ax.step(mb[:-1], np.log10(np.maximum(h, 0.5) / c.n), where="post", lw=2,
                label=f"{lab}: dlogN(<r)/dr = {s:.2f}")
    x = np.array([15.5, 17.5])
    ax.plot(x, np.log10(h[-4] / mock.n) + 0.6 * (x - 17.0), "k:", label="Euclidean 0.6")
    ax.set(xlabel="r (model, AB)", ylabel="log10 (N / N_tot) per 0.25 mag", title="r-band counts")
    ax.legend(fontsize=8)
    for k, b in enumerate(sd.bands):
        ax = axes.flat[2 + k]
        for c, lab, col in ((sd, "SDSS", "C0"), (mock, "mock", "C1")):
            j = c.bands.index(b)
            f, e = c.flux[:, j], c.flux_err[:, j]
            pos = f > 0
            ax.scatter(f[pos], e[pos], s=1, alpha=0.15, color=col, rasterized=True)
            bins = np.quantile(np.log10(f[pos]), np.linspace(0.01, 0.99, 15))
            idx = np.digitize(np.log10(f[pos]), bins)
            med = [(np.median(f[pos][idx == i]), np.median(e[pos][idx == i]))
                   for i in range(1, len(bins)) if (idx == i).sum() > 20]
            if med:
                ax.plot(*np.array(med).T, "-o", ms=3, color=col, label=f"{lab} median")
        ax.set(xscale="log", yscale="log", xlabel=f"flux {b} [nmgy]", ylabel="sigma [nmgy]")
        ax.legend(fontsize=8)
    ax = axes.flat[-1]
    ax.axis("off")
    ax.text(0, 0.95, "\n".join([
        "mock: Table-2 population (docs/design.md s.2)",
        "z ~ dV_c/dz on [0.005, 0.4]",
        "log M_surv ~ Baldry+12 double Schechter",
        f"logM_formed = logM_surv + {FORMED_MINUS_SURVIVING_DEX}",
        "noise: model fitted to SDSS; r<17.77 on noisy flux",
        f"count slopes 15.5<r<17.5: SDSS {slopes[0]:.3f}, mock {slopes[1]:.3f}"]),
        va="top", fontsize=10, transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_nz(z_pop_selected, z_spec, path, members=None, note: str | None = None):
    """Histograms of the selected population's z and the catalog's spec-z (None: population
    alone, with a note); thin per-member curves when ``members`` holds several indices."""
    plt = _plt()
    z_pop = np.asarray(z_pop_selected, float)
    zs = None if z_spec is None else np.asarray(z_spec, float)[np.isfinite(z_spec)]
    hi = np.nanpercentile(np.concatenate([z_pop, zs]) if zs is not None and zs.size else z_pop, 99.5)
    bins = np.linspace(0, max(hi * 1.1, 0.02), 45)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    title = "n(z)"
    if zs is not None and zs.size:
        ax.hist(zs, bins, density=True, histtype="step", color="k", lw=2, label=f"catalog spec-z ({zs.size})")
        title = f"n(z): W1(population, spec-z) = {science.nz_comparison(z_pop, zs)['w1']:.4f}"
    ax.hist(z_pop, bins, density=True, histtype="step", color="C1", lw=2, label=f"population, selected ({z_pop.size})")
    if members is not None:
        mem = np.asarray(members)
        ids = np.unique(mem)
        if ids.size > 1:
            for m in ids:
                ax.hist(z_pop[mem == m], bins, density=True, histtype="step", color="C1", lw=0.6, alpha=0.6)
            ax.plot([], [], color="C1", lw=0.6, label=f"{ids.size} members")
    if zs is None or not zs.size:
        note = note or "catalog has no spec-z: population only"
    if note:
        ax.text(0.98, 0.70, note, ha="right", va="top", transform=ax.transAxes, fontsize=8)
    ax.set(xlabel="z", ylabel="n(z) (normalised)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_smf(smf: dict, path, caption: str | None = None, sdss: bool = True) -> dict:
    """log phi vs log M_surviving: 1/V_max (pooled, error bars; members thin), the population's
    intrinsic mass function, and Baldry+12 (Planck15 h). Without an area (``smf['normalized']``
    False) our curves are scaled by one factor A to Baldry+12 over 10 <= logM <= 11.3 (shape
    comparison; A = 1 / (sky fraction x sampling rate), reported). The caption says so and, with
    ``sdss`` (default: the project's catalog), that the SDSS file lacks the survey area and
    sampling rate. Returns {scale, implied_area_times_rate_deg2}."""
    plt = _plt()
    lm, phi = smf["logM"], smf["phi"]
    scale = 1.0 if smf["normalized"] else science._match_scale(lm, phi)
    implied = None if smf["normalized"] or not np.isfinite(scale) else science.FULL_SKY_DEG2 / scale
    fig, ax = plt.subplots(figsize=(6.6, 5.0))
    fine = np.linspace(lm[0] - 0.1, lm[-1] + 0.1, 200)
    ax.plot(fine, np.log10(baldry12_smf(fine)), "k-", lw=1.5, label="Baldry+12 GAMA z<0.06 (h=0.6774)")
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log10(scale * phi)
        lo = np.log10(scale * np.maximum(phi - smf["phi_err"], 1e-30))
        hi = np.log10(scale * (phi + smf["phi_err"]))
        ok = phi > 0
        ax.errorbar(lm[ok], y[ok], yerr=[(y - lo)[ok], (hi - y)[ok]], fmt="o", color="C0", ms=4, label="population 1/Vmax (selected)")
        pm = smf["phi_members"]
        if pm.shape[0] > 1:
            for m in range(pm.shape[0]):
                ax.plot(lm, np.log10(scale * pm[m]), color="C0", lw=0.5, alpha=0.6)
            ax.plot([], [], color="C0", lw=0.5, label=f"{pm.shape[0]} members")
        yi = np.log10(scale * smf["phi_intrinsic"])
        ax.plot(lm, yi, "--", color="C3", label=f"population intrinsic, z<{smf['z_cut']:.2f}")
        if smf["phi_intrinsic_members"].shape[0] > 1:
            for m in range(smf["phi_intrinsic_members"].shape[0]):
                ax.plot(lm, np.log10(scale * smf["phi_intrinsic_members"][m]), color="C3", lw=0.4, alpha=0.5)
    allv = np.concatenate([y[np.isfinite(y)], np.log10(baldry12_smf(fine))])
    ax.set_ylim(max(allv.min() - 0.5, -8), allv.max() + 0.5)
    ax.set(xlabel="log10 M_surviving [Msun] (Chabrier, h=0.6774)", ylabel="log10 phi [Mpc^-3 dex^-1]", title="stellar mass function")
    ax.legend(fontsize=8, loc="lower left")
    if caption is None:
        if smf["normalized"]:
            caption = f"area {smf['area_deg2']:g} deg^2, sampling rate {smf['sampling_rate']:g}"
        else:
            caption = (("the SDSS file lacks the survey area and sampling rate" if sdss else "no survey area / sampling rate given")
                       + ": normalisation unknown;\n"
                       + (f"curves scaled by A = {scale:.3g} to Baldry+12 at 10<logM<11.3 (= area x rate of {implied:.3g} deg^2)"
                          if implied else "curves not scaled"))
    fig.text(0.01, 0.005, caption, fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return dict(scale=scale, implied_area_times_rate_deg2=implied)


def plot_sfms(samples, path, z_max: float = 0.1, threshold: float = -11.0, mass_bins=np.arange(8.0, 12.01, 0.25)) -> dict:
    """log SFR_100Myr vs log M_surviving of the selected samples at z < z_max: density
    contours, median SFR of star-forming samples (log sSFR >= threshold) per mass bin (pooled
    line; min-max of the per-member medians as a band), Speagle+14 (Chabrier-shifted, at the
    median t_universe of these samples) and Renzini & Peng 2015. Samples at the SFR floor
    (1e-6 Msun/yr) are counted in the legend. Returns {n, science.quiescent_fraction, t_universe,
    qf_members, sf_median (n_bins,), sf_median_members (K, n_bins), mass_bins}."""
    plt = _plt()
    cols = science._as_columns(samples)
    d = science._sfms_data(cols, z_max, threshold)
    lm, ls, lss, mem = d["logm"], d["lsfr"], d["lssfr"], d["member"]
    fq = science.quiescent_fraction(lss, threshold)
    ids = np.unique(mem)
    fq_m = [science.quiescent_fraction(lss[mem == m], threshold) for m in ids]
    centres = 0.5 * (mass_bins[1:] + mass_bins[:-1])

    def sf_medians(mask):
        out = np.full(centres.size, np.nan)
        for j in range(centres.size):
            s = mask & (lm >= mass_bins[j]) & (lm < mass_bins[j + 1]) & (lss >= threshold)
            if s.sum() >= 5:
                out[j] = np.median(ls[s])
        return out

    med = sf_medians(np.ones(lm.size, bool))
    med_m = np.array([sf_medians(mem == m) for m in ids]) if ids.size else np.zeros((0, centres.size))
    fig, ax = plt.subplots(figsize=(6.6, 5.0))
    yr = (-3.5, 2.5)
    if lm.size >= 20:
        h, xe, ye = np.histogram2d(lm, np.clip(ls, yr[0], yr[1]), bins=[np.linspace(8, 12.5, 31), np.linspace(*yr, 31)])
        h = h.T / max(h.max(), 1)
        ax.contourf(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), h, levels=[0.05, 0.2, 0.4, 0.6, 0.8, 1.01], cmap="Blues", alpha=0.8)
        ax.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), h, levels=[0.05, 0.2, 0.4, 0.6, 0.8], colors="C0", linewidths=0.6)
    else:
        ax.scatter(lm, np.clip(ls, *yr), s=4, color="C0")
    ax.plot(centres, med, "o-", color="C0", ms=4, label=f"population SF median (log sSFR >= {threshold:g})")
    if ids.size > 1:
        with warnings.catch_warnings():  # bins without star-forming samples in any member
            warnings.simplefilter("ignore", RuntimeWarning)
            band_lo, band_hi = np.nanmin(med_m, 0), np.nanmax(med_m, 0)
        ax.fill_between(centres, band_lo, band_hi, color="C0", alpha=0.3, label=f"{ids.size} members (min-max)")
    x = np.linspace(8.5, 12, 50)
    ax.plot(x, speagle14_sfms(x, d["t_u"], chabrier=True), "k-", label=f"Speagle+14 (t={d['t_u']:.2f} Gyr, Chabrier)")
    ax.plot(x, renzini_peng15_sfms(x), "k--", label="Renzini & Peng 2015 (SDSS)")
    n_floor = int(np.sum(ls <= np.log10(SFR_FLOOR) + 1e-9))
    n_low = int(np.sum(ls < yr[0]))
    ax.plot([], [], " ", label=f"quiescent fraction (log sSFR < {threshold:g}) = {fq:.3f}")
    ax.plot([], [], " ", label=f"{n_low} of {lm.size} below {yr[0]} (drawn there), {n_floor} at the 1e-6 floor")
    ax.set(xlim=(8, 12.5), ylim=yr, xlabel="log10 M_surviving [Msun]", ylabel="log10 SFR(100 Myr) [Msun/yr]",
           title=f"star-forming main sequence: selected population, z < {z_max:g}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return dict(n=int(lm.size), quiescent_fraction=fq, qf_members=fq_m, t_universe=d["t_u"], mass_bins=mass_bins,
                sf_median=med, sf_median_members=med_m, z_max=z_max, threshold=threshold)


def plot_masses_vs_kcorrect(res: dict, m_pop, m_kc, path):
    """Population (selected) vs kcorrect surviving masses: histograms and medians in z slices
    (``res`` from ``science.compare_with_kcorrect``)."""
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    bins = np.arange(7.5, 12.6, 0.1)
    ax[0].hist(m_kc, bins, density=True, histtype="step", color="k", label=f"kcorrect at spec-z (N={m_kc.size})")
    ax[0].hist(m_pop, bins, density=True, histtype="step", color="C1", label=f"population, selected (N={m_pop.size})")
    ax[0].set(xlabel=r"log$_{10}$ M$_*$ (stars + remnants) [M$_\odot$]", ylabel="density",
              title=f"W1 = {res['all']['w1']:.3f} dex, median offset {res['all']['median_offset']:+.3f}")
    ax[0].legend(fontsize=7)
    for r in res["slices"]:
        zc = 0.5 * (r["z_lo"] + r["z_hi"])
        for key, c, dx in (("pop", "C1", 0.003), ("kc", "k", -0.003)):
            med, lo16, hi84 = r[f"median_{key}"], r[f"p16_{key}"], r[f"p84_{key}"]
            ax[1].errorbar(zc + dx, med, yerr=[[med - lo16], [hi84 - med]], fmt="o", color=c, ms=4)
    ax[1].plot([], [], "o", color="C1", label="population (selected)")
    ax[1].plot([], [], "o", color="k", label="kcorrect at spec-z")
    ax[1].set(xlabel="redshift slice (population z vs spec-z)", ylabel="median and 16-84% of log M$_*$", title="in redshift slices")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_photoz(t, path, metrics: dict):
    """Per-galaxy photo-z (posterior median, 16-84%) against spec-z, and the PIT histogram."""
    plt = _plt()
    zs, zp = np.asarray(t["z_spec"], float), np.asarray(t["z_median"], float)
    lo, hi = np.asarray(t["z_p16"], float), np.asarray(t["z_p84"], float)
    flag = np.asarray(t["flag"], bool)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
    top = float(np.nanpercentile(zs, 99.5)) * 1.1
    ax[0].errorbar(zs[~flag], zp[~flag], yerr=[zp[~flag] - lo[~flag], hi[~flag] - zp[~flag]], fmt=".", ms=1.5, lw=0.3,
                   alpha=0.4, color="C0", label="galaxies")
    ax[0].plot(zs[flag], zp[flag], "x", ms=3, color="C3", label=f"flagged ({int(flag.sum())})")
    x = np.array([0, top])
    ax[0].plot(x, x, "k-", lw=0.8)
    for sgn in (-1, 1):
        ax[0].plot(x, x + sgn * 0.05 * (1 + x), "k:", lw=0.8)
    ax[0].set(xlim=(0, top), ylim=(0, top), xlabel="spectroscopic z", ylabel="photo-z (posterior median, 16-84%)",
              title=f"NMAD {metrics['nmad']:.4f}, bias {metrics['bias']:+.4f}, outliers {metrics['outlier_fraction']:.1%}")
    ax[0].legend(fontsize=7)
    h = np.asarray(metrics["pit_hist"])
    edges = np.linspace(0, 1, h.size + 1)
    ax[1].stairs(h, edges, color="C0", lw=1.5)
    ax[1].axhline(1, color="k", lw=0.8)
    ax[1].set(xlabel="PIT = P(z < z_spec)", ylabel="density / uniform", ylim=(0, max(2.0, h.max() * 1.1)),
              title=f"PIT: KS {metrics['pit_ks']:.3f}, max departure {metrics['pit_max_departure']:.2f}")
    fig.suptitle(f"per-galaxy posteriors, {metrics.get('prior', 'population')} prior", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

