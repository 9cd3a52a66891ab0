"""Science products (popsed_jax.products.science): derived quantities, n(z), 1/Vmax SMF, main sequence.

Inputs are built here from theta arrays and the real forward model (conftest fixtures); the
real SDSS catalog is used where a catalog is needed (runs/ is not available in CI).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table

from popsed_jax.physics import cosmology, forward
from popsed_jax.products import science
from popsed_jax.inference import fit as fitlib
from popsed_jax.inference.config import FitConfig
from popsed_jax.products import plots
from popsed_jax.physics.forward import IDX, derived_quantities, forward_fluxes, forward_mags

R = 2  # index of sdss2001-r in the default filters
LIM = 17.77


def _cols(model, theta, selected=None, member=None):
    """Samples dict as runs.write_products writes it: parameters, derived quantities, selected, member."""
    d = forward.theta_to_columns(theta)
    d.update({k: np.asarray(v, float) for k, v in derived_quantities(model, theta).items() if k not in d})
    d["selected"] = np.ones(len(theta), bool) if selected is None else np.asarray(selected, bool)
    if member is not None:
        d["member"] = np.asarray(member, np.int16)
    return d


def _theta(n, **fixed):
    """n rows of a mid-box theta with some columns fixed."""
    base = dict(z=0.1, logM=10.5, kappa1=0.5, kappa2=0.5, kappa3=0.5, t_burst=5.0, f_burst=0.0, logZ=-0.3, n_dust=0.0, tau1=0.3, tau2=0.3)
    base.update(fixed)
    return np.stack([np.broadcast_to(np.asarray(base[k], float), (n,)) for k in forward.PARAM_NAMES], -1).copy()


def _noiseless_selected(model, theta):
    return np.asarray(forward_mags(model, theta))[:, R] < LIM


# ----------------------------------------------------------------------------------------
# derived quantities through the forward model
# ----------------------------------------------------------------------------------------
def test_old_bursts_have_no_recent_sfr_and_keep_bc03_mass(model, grid):
    rng = np.random.default_rng(1)
    th = _theta(40, z=rng.uniform(0.01, 0.5, 40), logM=rng.uniform(9, 12, 40), logZ=rng.uniform(-2, 0.2, 40), f_burst=1.0, t_burst=5.0)
    cols = _cols(model, th)
    assert np.all(cols["sfr_100myr"] == 0) and np.all(cols["sfr_10myr"] == 0)
    s = science.population_summary(cols)
    for q in ("log_sfr_100myr", "log_sfr_10myr"):  # floored at 1e-6 Msun/yr
        assert s[q]["p16"] == s[q]["median"] == s[q]["p84"] == pytest.approx(np.log10(science.SFR_FLOOR))
    assert s["log_ssfr_100myr"]["median"] == science.LOG_SSFR_FLOOR
    living = 10 ** (cols["logM_living"] - th[:, IDX["logM"]])
    total = 10 ** (cols["logM_surviving"] - th[:, IDX["logM"]])
    # a 5 Gyr Chabrier population has returned ~40% of its mass: living stars 0.42-0.50 of it
    # (BC03's LIV_MSTAR_FRAC), living stars + remnants ~0.6 (FSPS: 0.61 at 5 Gyr)
    assert np.all((living > 0.35) & (living < 0.55))
    assert np.all((living >= grid.surviving.min() - 1e-6) & (living <= grid.surviving.max() + 1e-6))
    assert np.all((total > 0.5) & (total < 0.66)) and np.all(total > living)
    np.testing.assert_allclose(cols["age_mw"], 5.0, rtol=0.02)  # mass-weighted age of a burst = its age
    assert s["age_mw"]["median"] == pytest.approx(5.0, rel=0.02)


def test_young_burst_sfr_is_mass_over_100myr(model):
    th = _theta(5, z=[0.02, 0.05, 0.1, 0.3, 0.5], logM=[9.0, 9.5, 10.0, 10.5, 11.0], f_burst=1.0, t_burst=0.05)
    cols = _cols(model, th)
    np.testing.assert_allclose(cols["sfr_100myr"], 10 ** th[:, 1] / 1e8, rtol=1e-4)
    assert np.all(cols["sfr_10myr"] == 0)  # the burst is 50 Myr old
    np.testing.assert_allclose(science.log_sfr(cols["sfr_100myr"]), th[:, 1] - 8, atol=1e-4)
    np.testing.assert_allclose(cols["log_ssfr_100myr"], th[:, 1] - 8 - cols["logM_surviving"], atol=1e-4)
    np.testing.assert_allclose(cols["age_mw"], 0.05, rtol=0.02)
    # surviving fraction of a 50 Myr population is higher than that of a 5 Gyr one
    old = _cols(model, _theta(5, z=th[:, 0], logM=th[:, 1], f_burst=1.0, t_burst=5.0))
    assert np.all(cols["logM_surviving"] > old["logM_surviving"])


def test_population_summary_pools_and_spreads_members(model):
    # two members: young bursts (member 0) and old bursts (member 1); one unselected row each
    young = _theta(6, logM=10.0, f_burst=1.0, t_burst=0.05)
    old = _theta(6, logM=10.0, f_burst=1.0, t_burst=5.0)
    th = np.concatenate([young, old])
    sel = np.ones(12, bool)
    sel[[0, 6]] = False
    th[[0, 6], 1] = 12.5  # unselected rows carry an outlying mass
    cols = _cols(model, th, selected=sel, member=[0] * 6 + [1] * 6)
    s = science.population_summary(cols, quantities=("age_mw", "log_sfr_100myr", "logM"))
    a = s["age_mw"]
    assert a["n"] == 10 and s["_meta"]["n_members"] == 2
    np.testing.assert_allclose(a["member_medians"], [0.05, 5.0], rtol=0.02)
    assert a["member_median_std"] == pytest.approx(np.std(a["member_medians"]))
    np.testing.assert_allclose(s["log_sfr_100myr"]["member_medians"], [2.0, -6.0], atol=1e-4)
    assert s["logM"]["p84"] == pytest.approx(10.0)  # the unselected 12.5s are excluded ...
    assert science.population_summary(cols, ("logM",), selected_only=False)["logM"]["p84"] > 10.0  # ... unless asked
    one = science.population_summary({k: v[:6] for k, v in cols.items()}, ("age_mw",))
    assert np.isnan(one["age_mw"]["member_median_std"])
    with pytest.raises(ValueError, match="tau9"):
        science.population_summary(cols, ("tau9",))
    with pytest.raises(ValueError, match="selected"):
        science.population_summary({k: v for k, v in cols.items() if k != "selected"})


# ----------------------------------------------------------------------------------------
# n(z)
# ----------------------------------------------------------------------------------------
def test_nz_comparison_on_sdss_spec_z(tmp_path):
    from popsed_jax.survey.catalog import load_catalog

    z = load_catalog("sdss").z_spec
    z = z[np.isfinite(z)]
    assert science.nz_comparison(z, z)["w1"] == pytest.approx(0.0, abs=1e-12)
    r = science.nz_comparison(z + 0.02, z)
    assert r["w1"] == pytest.approx(0.02, rel=1e-6)
    assert r["median_pop"] - r["median_spec"] == pytest.approx(0.02, abs=1e-9)
    # weights: zero weight on the shifted half leaves only the unshifted half
    zz = np.concatenate([z, z + 0.5])
    w = np.concatenate([np.ones(z.size), np.zeros(z.size)])
    assert science.nz_comparison(zz, z, weights=w)["w1"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="spec-z"):
        science.nz_comparison(z, np.array([np.nan]))
    plots.plot_nz(z + 0.01, z, tmp_path / "nz.png", members=np.arange(z.size) % 3)
    plots.plot_nz(z, None, tmp_path / "nz_alone.png")
    assert (tmp_path / "nz.png").stat().st_size > 1000 and (tmp_path / "nz_alone.png").stat().st_size > 1000


# ----------------------------------------------------------------------------------------
# z_max and Vmax
# ----------------------------------------------------------------------------------------
def test_zmax_of_a_galaxy_at_the_flux_limit_is_its_own_z(model):
    z0 = np.array([0.03, 0.1, 0.25, 0.45])
    th = _theta(4, z=z0, logM=10.5, kappa1=0.3, tau2=0.5, n_dust=-0.5)
    m0 = np.asarray(forward_mags(model, th))[:, R]
    th[:, 1] += (m0 - LIM) / 2.5  # 1 dex = 2.5 mag: now exactly at r = 17.77
    np.testing.assert_allclose(np.asarray(forward_mags(model, th))[:, R], LIM, atol=2e-3)
    zmax = science.zmax_forward(model, th, R, LIM, (0.005, 0.6), n_z=40)
    np.testing.assert_allclose(zmax, z0, rtol=3e-3)


def test_zmax_matches_a_dense_scan_and_grows_with_mass(model):
    logm = np.linspace(8.5, 12.0, 8)
    th = _theta(8, z=0.05, logM=logm, kappa1=0.8, f_burst=0.1, t_burst=1.0, tau2=1.0)
    zmax = science.zmax_forward(model, th, R, LIM, (0.005, 0.6), n_z=40)
    assert np.all(np.diff(zmax) > 0)  # brighter -> seen further
    # brute force: r mag on 3000 redshifts; z_max = largest z still brighter than the limit
    zs = np.linspace(0.005, 0.6, 3000)
    for j in (1, 4, 6):
        t = np.repeat(th[j:j + 1], zs.size, 0)
        t[:, 0] = zs
        r = np.asarray(forward_mags(model, t, chunk_size=1000))[:, R]
        vis = np.nonzero(r < LIM)[0]
        ref = zs[vis[-1]] if vis.size else 0.005
        assert zmax[j] == pytest.approx(ref, abs=2.5e-4 + 1e-3 * ref)
    # a very faint galaxy is invisible everywhere (z_min), a very bright one everywhere (z_hi)
    ext = science.zmax_forward(model, _theta(2, logM=[5.0, 13.0]), R, LIM, (0.005, 0.6))
    np.testing.assert_allclose(ext, [0.005, 0.6])
    with pytest.raises(ValueError, match="z_max"):
        science.zmax_forward(model, th, R, LIM, (0.005, 0.9))


def test_vmax_is_the_comoving_shell_volume():
    from astropy.cosmology import Planck15

    zmax = np.array([0.02, 0.1, 0.3])
    v = science.vmax(zmax, 0.005, area_deg2=1000.0)
    ref = 1000.0 / 41252.96 * (Planck15.comoving_volume(zmax).value - Planck15.comoving_volume(0.005).value)
    np.testing.assert_allclose(v, ref, rtol=1e-10)
    # independent: flat universe, V = 4/3 pi D_c^3 with the project's own D_c quadrature
    dc = cosmology.PLANCK15.comoving_distance(np.r_[0.005, zmax])
    shell = 4 / 3 * np.pi * (dc[1:] ** 3 - dc[0] ** 3) * 1000.0 / (4 * np.pi * (180 / np.pi) ** 2)
    np.testing.assert_allclose(v, shell, rtol=1e-5)
    np.testing.assert_allclose(science.vmax(zmax, 0.005), v * 41252.96 / 1000.0, rtol=1e-10)


# ----------------------------------------------------------------------------------------
# SMF
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def volume_population(model):
    """A non-evolving population uniform in comoving volume on 0.005 < z < 0.25 (z ~ dV/dz),
    Table-2 SFH/dust/metallicity, formed mass uniform in [10.3, 12]; selected = noiseless r < 17.77."""
    from popsed_jax.survey import mock

    n = 3000
    th = mock.sample_table2(n, 7, lambda m, rng: (mock.sample_z_volume(m, rng, (0.005, 0.25)), rng.uniform(10.3, 12.0, m)))
    sel = _noiseless_selected(model, th)
    cols = _cols(model, th, selected=sel, member=np.arange(n) % 2)
    zmax = science.zmax_forward(model, th[sel], R, LIM, (0.005, 0.25), n_z=40)
    return cols, zmax


def test_smf_normalisation_and_area_scaling(model, volume_population):
    cols, zmax = volume_population
    n_sel = int(cols["selected"].sum())
    bins = np.arange(9.0, 12.01, 0.25)
    kw = dict(z_range=(0.005, 0.25), n_catalog=500, bins=bins, z_max=zmax)
    a = science.vmax_smf(cols, model, "r<17.77", area_deg2=1000.0, **kw)
    w = 500 / n_sel
    lm = cols["logM_surviving"][cols["selected"]]
    inb = (lm >= bins[0]) & (lm < bins[-1])
    v = science.vmax(zmax, 0.005, 1000.0)
    assert np.sum(a["phi"] * a["dlogM"]) == pytest.approx(np.sum(w / v[inb]), rel=1e-10)
    assert a["weight"] == pytest.approx(w) and a["normalized"]
    b = science.vmax_smf(cols, model, "r<17.77", area_deg2=2000.0, **kw)
    np.testing.assert_allclose(b["phi"], a["phi"] / 2, rtol=1e-10)
    np.testing.assert_allclose(b["phi_intrinsic"], a["phi_intrinsic"] / 2, rtol=1e-10)
    c = science.vmax_smf(cols, model, "r<17.77", area_deg2=None, sampling_rate=0.5, **kw)
    assert not c["normalized"] and "area" in c["units"]
    np.testing.assert_allclose(c["phi"], a["phi"] * 1000.0 / 41252.96 * 2, rtol=1e-10)
    # members: each with its own weight; two members, two curves, spread finite
    assert a["phi_members"].shape == (2, bins.size - 1) and np.isfinite(a["phi_member_std"]).all()
    with pytest.raises(ValueError, match="z_max"):
        science.vmax_smf(cols, model, "r<17.77", **{**kw, "z_max": zmax[:-1]})


def test_vmax_recovers_the_density_of_a_volume_uniform_population(model, volume_population):
    """For a population uniform in volume, sum over selected of 1/Vmax estimates N / V."""
    cols, zmax = volume_population
    sel = cols["selected"]
    assert 150 < sel.sum() < 2500
    # selected galaxies are visible at their own z: z_max >= z, except for the few whose visibility
    # has a gap (an old burst drops out where t_u(z) < t_burst), for which z_max is effective
    assert np.mean(zmax >= cols["z"][sel] * (1 - 5e-3)) > 0.99
    bins = np.array([9.6, 10.6, 11.8])
    s = science.vmax_smf(cols, model, "r<17.77", z_range=(0.005, 0.25), n_catalog=int(sel.sum()), bins=bins, z_max=zmax, z_cut=0.25)
    est, err, truth = s["phi"] * s["dlogM"], s["phi_err"] * s["dlogM"], s["phi_intrinsic"] * s["dlogM"]
    assert np.all(err < 0.2 * est)
    assert np.all(np.abs(est - truth) < 3 * err), (est, truth, err)
    # ignoring the volume (every galaxy counted over the full volume) underestimates the density
    assert np.all(np.histogram(cols["logM_surviving"][sel], bins)[0] / s["vmax"].max() < 0.8 * truth)


# ----------------------------------------------------------------------------------------
# main sequence
# ----------------------------------------------------------------------------------------
def test_quiescent_fraction_on_constructed_arrays():
    x = np.array([-12.0, -11.5, -11.0, -10.0, -9.0, np.nan, -np.inf])
    assert science.quiescent_fraction(x) == pytest.approx(3 / 6)  # -11 itself is star-forming
    assert science.star_forming_fraction(x) == pytest.approx(3 / 6)
    assert science.quiescent_fraction(x, threshold=-10.5) == pytest.approx(4 / 6)
    w = np.array([1, 1, 0, 0, 0, 1, 0], float)
    assert science.quiescent_fraction(x, weights=w) == pytest.approx(1.0)
    assert np.isnan(science.quiescent_fraction(np.array([np.nan])))


def test_plot_sfms_counts_quiescent_galaxies(model, tmp_path):
    """Star-forming (constant-ish SFH, young burst) and quiescent (old burst) galaxies at z < 0.1."""
    rng = np.random.default_rng(3)
    n = 60
    sf = _theta(n, z=rng.uniform(0.01, 0.09, n), logM=rng.uniform(9, 11.5, n), f_burst=0.0)
    q = _theta(n // 2, z=rng.uniform(0.01, 0.09, n // 2), logM=rng.uniform(9, 11.5, n // 2), f_burst=1.0, t_burst=5.0)
    far = _theta(10, z=0.3, f_burst=1.0, t_burst=5.0)  # beyond z_max = 0.1: not counted
    cols = _cols(model, np.concatenate([sf, q, far]))
    out = plots.plot_sfms(cols, tmp_path / "sfms.png", z_max=0.1)
    lss = cols["log_ssfr_100myr"][: n + n // 2]
    assert out["n"] == n + n // 2
    assert out["quiescent_fraction"] == pytest.approx(np.mean(lss < -11))
    assert out["quiescent_fraction"] >= (n // 2) / (n + n // 2) - 1e-9  # all old bursts are quiescent
    assert 10.5 < out["t_universe"] < 13.8
    assert (tmp_path / "sfms.png").stat().st_size > 1000


# ----------------------------------------------------------------------------------------
# run folder
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_folder(model, tmp_path_factory):
    """A small run folder: 2000 box-uniform samples, 2 members, noiseless r-band selection."""
    run = tmp_path_factory.mktemp("run")
    cfg = FitConfig()
    lo, hi = fitlib.box_bounds(cfg)
    th = lo + (hi - lo) * np.random.default_rng(11).random((2000, lo.size))
    flux = np.asarray(forward_fluxes(model, th))
    cols = _cols(model, th, selected=22.5 - 2.5 * np.log10(flux[:, R]) < LIM, member=np.arange(2000) // 1000)
    cols.update({f"flux_{b}": flux[:, j] for j, b in enumerate(model.bands)})
    Table(cols).write(run / "samples.fits")
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    (run / "run_info.json").write_text(json.dumps({"catalog": "sdss", "n_catalog": 10000, "bands": list(model.bands)}))
    return run


def test_make_science_products_writes_figures_and_json(model, run_folder, tmp_path):
    out = tmp_path / "sci"
    res = science.make_science_products(run_folder, out=out, model=model, n_z=30)
    for f in ("nz.png", "smf.png", "sfms.png", "science.json"):
        assert (out / f).stat().st_size > 500, f
        assert not (run_folder / f).exists()
    js = json.loads((out / "science.json").read_text())
    assert js["n_catalog_selected"] == res["n_catalog_selected"] and 9000 < js["n_catalog_selected"] <= 10000
    assert js["nz"]["w1"] > 0 and len(js["nz"]["w1_members"]) == 2
    assert js["population_summary"]["logM_surviving"]["member_median_std"] is not None
    assert 0 <= js["quiescent_fraction"]["selected_all_z"] <= 1
    smf = js["smf"]
    assert len(smf["phi"]) == len(smf["logM"]) == len(smf["bins"]) - 1
    assert smf["normalized"] is False and "sampling rate" in " ".join(js["notes"])
    assert smf["weight"] == pytest.approx(js["n_catalog_selected"] / js["n_samples_selected"])
    # with an area: normalised, and phi scales as 1/area
    res2 = science.make_science_products(run_folder, out=tmp_path / "sci2", model=model, n_z=30, area_deg2=41252.96 / 2)
    assert res2["smf"]["normalized"] is True
    np.testing.assert_allclose(np.array(res2["smf"]["phi"], float), 2 * np.array(smf["phi"], float), rtol=1e-6)


def test_catalog_without_spec_z_gives_population_only_nz(model, run_folder, tmp_path):
    from popsed_jax.survey.catalog import Catalog, load_catalog

    c = load_catalog("sdss")
    res = science.make_science_products(run_folder, catalog=Catalog(c.flux, c.flux_err, c.bands), out=tmp_path, model=model, n_z=30)
    assert res["nz"]["w1"] is None and "spec-z" in res["nz"]["note"]
    assert (tmp_path / "nz.png").exists() and (tmp_path / "smf.png").exists()


def test_missing_run_or_samples_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        science.make_science_products(tmp_path / "no_such_run")
    (tmp_path / "config.json").write_text(json.dumps(FitConfig().to_dict()))
    with pytest.raises(FileNotFoundError, match="samples.fits"):
        science.make_science_products(tmp_path)


def test_cli_plot_and_report_write_their_files(run_folder, tmp_path, capsys):
    """`popsed-jax plot RUN` and `popsed-jax report RUN` on a run folder; bad folders are named."""
    import shutil

    from popsed_jax.cli import main

    run = tmp_path / "run"
    shutil.copytree(run_folder, run)
    (run / "summary.json").write_text(json.dumps({"steps": 10, "members": 2, "val_divergence": [0.5, 0.6], "data_floor": 0.4,
                                                   "val_over_floor": [1.25, 1.5], "flagged_members": [], "seconds": 1.0}))
    assert main(["report", str(run)]) == 0
    for f in ("nz.png", "smf.png", "sfms.png", "science.json", "report.html"):
        assert (run / f).stat().st_size > 500, f
    js = json.loads((run / "science.json").read_text())
    if "independent_masses" in js:  # kcorrect installed (it is in the [test] extra)
        assert (run / "masses_vs_kcorrect.png").exists()
        assert 10.0 < js["independent_masses"]["all"]["median_kc"] < 11.5
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "W1" in html
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "no_such_run")]) == 2
    assert "no_such_run" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2  # not a run folder: the missing file is named
    err = capsys.readouterr().err
    assert "config.json" in err or "samples.fits" in err
