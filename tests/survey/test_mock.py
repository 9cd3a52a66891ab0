"""Mock surveys (popsed_jax.survey.mock): Table-2 prior, SDSS-like observation, round trip."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from scipy import stats

from popsed_jax.cli import build_parser
from popsed_jax.physics.photometry import SDSS_UGRIZ
from popsed_jax.survey import mock as M
from popsed_jax.physics.forward import PARAM_NAMES

R = SDSS_UGRIZ[2]  # the r band (speclite name), whichever SDSS curves are the default


def _rmag(f):
    f = np.asarray(f, float)
    return 22.5 - 2.5 * np.log10(np.where(f > 0, f, np.nan))


def test_table2_marginals_ks():
    th = M.sample_table2(4000, 3)
    assert th.shape == (4000, 11)
    for j, name in enumerate(PARAM_NAMES[2:], start=2):
        spec = M.TABLE2[name]
        if spec is None:
            cdf = stats.uniform(0, 1).cdf
        else:
            mu, sd, lo, hi = spec
            cdf = stats.truncnorm((lo - mu) / sd, (hi - mu) / sd, loc=mu, scale=sd).cdf
            assert th[:, j].min() >= lo and th[:, j].max() <= hi
        assert stats.kstest(th[:, j], cdf).pvalue > 1e-3, name
    # default (z, logM): inside the documented ranges
    assert th[:, 0].min() >= M.Z_RANGE[0] and th[:, 0].max() <= M.Z_RANGE[1]
    assert th[:, 1].min() >= M.LOGM_RANGE[0] - 1e-9 and th[:, 1].max() <= M.LOGM_RANGE[1] + 1e-9
    # reproducible, and a custom sampler is used
    np.testing.assert_array_equal(th, M.sample_table2(4000, 3))
    th2 = M.sample_table2(10, 0, lambda n, r: (np.full(n, 0.1), np.full(n, 10.0)))
    assert np.all(th2[:, 0] == 0.1) and np.all(th2[:, 1] == 10.0)


@pytest.fixture(scope="module")
def sdss():
    from popsed_jax.survey.catalog import read_sdss_main
    from popsed_jax.survey.noise import fit_noise_model
    from popsed_jax.survey.selection import select_catalog

    cat = read_sdss_main()
    return cat, fit_noise_model(cat), select_catalog(cat, "r<17.77")


@pytest.fixture(scope="module")
def fwd():
    from popsed_jax.physics.forward import build_forward_model

    return build_forward_model(filters=list(SDSS_UGRIZ), z_max=M.Z_RANGE[1])


@pytest.fixture(scope="module")
def mock_tab(sdss, fwd):
    return M.draw_mock(3000, seed=0, noise_model=sdss[1], model=fwd)


def test_mock_selection_and_columns(mock_tab):
    t = mock_tab
    assert len(t) == 3000
    for c in (*PARAM_NAMES, "beta1", "beta4", "logM_surviving", "sfr_100myr", "sfr_10myr",
              "log_ssfr_100myr", "age_mw", "z_spec"):
        assert c in t.colnames, c
    for b in SDSS_UGRIZ:
        for c in (f"flux_{b}", f"flux_err_{b}", f"flux_true_{b}"):
            assert c in t.colnames and np.all(np.isfinite(t[c])), c
    assert np.all(_rmag(t[f"flux_{R}"]) < 17.77)
    np.testing.assert_array_equal(t["z_spec"], t["z"])


def test_mock_noise_matches_sdss(mock_tab, sdss):
    cat = sdss[2]
    mc = M.mock_to_catalog(mock_tab)
    for k, b in enumerate(cat.bands):
        fs, es = cat.flux[:, k], cat.flux_err[:, k]
        fm, em = mc.flux[:, k], mc.flux_err[:, k]
        edges = np.quantile(np.log10(fs[fs > 0]), np.linspace(0.05, 0.95, 10))
        ratios = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            ins = (np.log10(np.maximum(fs, 1e-9)) >= lo) & (np.log10(np.maximum(fs, 1e-9)) < hi)
            inm = (np.log10(np.maximum(fm, 1e-9)) >= lo) & (np.log10(np.maximum(fm, 1e-9)) < hi)
            if ins.sum() >= 30 and inm.sum() >= 30:
                ratios.append(np.median(em[inm]) / np.median(es[ins]))
        assert len(ratios) >= 4, b
        assert np.max(np.abs(np.log(ratios))) < np.log(1.15), (b, np.round(ratios, 3))


def test_mock_counts_slope_like_sdss(mock_tab, sdss):
    s_sdss = M.counts_slope(_rmag(sdss[2].flux[:, 2]))
    s_mock = M.counts_slope(_rmag(mock_tab[f"flux_{R}"]))
    assert 0.4 < s_sdss < 0.65
    assert abs(s_mock - s_sdss) < 0.1, (s_mock, s_sdss)


@pytest.mark.parametrize("population", ["table2", "physical"])
def test_visibility_bounds_bound(fwd, population):
    """The per-draw bound is at least the forward model's flux and equal to it without dust;
    the per-(z, logM) bound is at least every draw's flux per unit mass."""
    import jax
    import jax.numpy as jnp

    from popsed_jax.physics.forward import forward_fluxes
    from popsed_jax.survey import visibility as V

    th = M.sample_table2(20000, 11) if population == "table2" else M.sample_physical(20000, 11)
    th[:500, 9:] = 0.0  # some dust-free rows: the bound is exact there
    table = jnp.asarray(V.band_flux_table(fwd, 2), jnp.float32)
    b = np.asarray(jax.jit(V.flux_upper_bound)(fwd, table, th), float)
    f = np.asarray(jax.jit(forward_fluxes)(fwd, th), float)[:, 2]
    assert np.all(f <= b), np.max(f / b)
    np.testing.assert_allclose(f[:500] * V.SAFETY, b[:500], rtol=2e-4)
    z_edges, lfpm = V.visible_cells(fwd, table, M.Z_RANGE)
    cell = np.searchsorted(z_edges, th[:, 0], side="right") - 1
    per_mass = np.log10(np.maximum(f, 1e-300)) - th[:, 1]
    assert np.all(per_mass <= lfpm[cell]), np.max(per_mass - lfpm[cell])
    # and the region bound is attained: the brightest SED of the box (a dust-free burst at the
    # youngest age allowed, or a single basis, at its best metallicity) reaches it within 0.12 dex
    # (the cell's distance factor is its near end's: 0.09 dex brighter across a cell at z = 0.02)
    zs = np.array([0.02, 0.1, 0.3])
    rows = [(z, 0.0, k1, k2, k3, 0.01, fb, lz, 0.0, 0.0, 0.0) for z in zs
            for (k1, k2, k3, fb) in [(1, 1, 1, 1.0), (0, 0, 0, 0.0), (1, 0, 0, 0.0), (1, 1, 0, 0.0), (1, 1, 1, 0.0)]
            for lz in np.linspace(-2.2, 0.3, 11)]
    ext = np.asarray(rows)
    fe = np.log10(np.asarray(jax.jit(forward_fluxes)(fwd, ext), float)[:, 2]).reshape(3, -1).max(1)
    gap = lfpm[np.searchsorted(z_edges, zs, side="right") - 1] - fe
    assert np.all((gap >= 0) & (gap < 0.12)), gap


def test_visible_sampler_is_the_restricted_prior():
    """Drawing only where the survey can see = drawing the whole prior and keeping that region."""
    from popsed_jax.survey import visibility as V

    z_edges = np.linspace(M.Z_RANGE[0], M.Z_RANGE[1], 41)
    lfpm = -9.0 - 2.0 * np.log10(z_edges[:-1] / z_edges[0])  # fainter with z, as a distance law
    zx, zc = M.z_volume_cdf()
    mx, mc = M.logm_baldry12_cdf()
    s = V.visible_zlogm_sampler((zx, zc), (mx + M.FORMED_MINUS_SURVIVING_DEX, mc), z_edges, lfpm, 1.2)
    z, lm = s(40000, np.random.default_rng(1))
    zp, lmp = M.sample_zlogm_volume(400000, 2)
    keep = lmp > 1.2 - lfpm[np.clip(np.searchsorted(z_edges, zp, side="right") - 1, 0, 39)]
    assert abs(s.visible_fraction - keep.mean()) < 4 * np.sqrt(keep.mean() / keep.size)
    assert stats.ks_2samp(z, zp[keep]).pvalue > 1e-3
    assert stats.ks_2samp(lm, lmp[keep]).pvalue > 1e-3
    assert np.all(lm > 1.2 - lfpm[np.searchsorted(z_edges, z, side="right") - 1])


def test_prescreen_keeps_the_distribution(fwd, sdss):
    """A mock drawn with the exact pre-screens and one drawn everywhere are the same population:
    two-sample KS tests on z, mass, r and g - r, and far fewer forward-model calls."""
    a = M.draw_mock(800, seed=21, noise_model=sdss[1], model=fwd, population="physical")
    b = M.draw_mock(800, seed=22, noise_model=sdss[1], model=fwd, population="physical", prescreen=False)
    ma, mb = (json.loads(t.meta["PSMETA"]) for t in (a, b))
    assert ma["n_forward"] < 0.1 * mb["n_forward"], (ma["n_forward"], mb["n_forward"])
    assert 0.1 < ma["visible_fraction"] < 0.6
    for col in ("z", "logM_surviving", f"flux_{R}", "logZ"):
        assert stats.ks_2samp(np.asarray(a[col]), np.asarray(b[col])).pvalue > 1e-3, col
    gr = lambda t: _rmag(t[f"flux_{SDSS_UGRIZ[1]}"]) - _rmag(t[f"flux_{R}"])  # noqa: E731
    assert stats.ks_2samp(gr(a), gr(b)).pvalue > 1e-3
    # the acceptance over the whole prior agrees between the two
    assert abs(np.log(ma["acceptance"] / mb["acceptance"])) < 0.15, (ma["acceptance"], mb["acceptance"])


def test_round_trip_read_catalog(mock_tab, tmp_path):
    from popsed_jax.survey.catalog import read_catalog

    for name in ("m.fits", "m.ecsv"):
        p = tmp_path / name
        mock_tab.write(p, overwrite=True)
        cat = read_catalog(p)
        assert cat.bands == SDSS_UGRIZ
        np.testing.assert_allclose(cat.flux[:, 2], mock_tab[f"flux_{R}"], rtol=1e-12)
        np.testing.assert_allclose(cat.flux_err, M.mock_to_catalog(mock_tab).flux_err, rtol=1e-12)
        np.testing.assert_allclose(cat.z_spec, mock_tab["z"])


def test_empty_params_table_is_refused_and_no_rows_compute_nothing(fwd, sdss):
    from astropy.table import Table

    with pytest.raises(ValueError, match="has no rows"):
        M.draw_mock(None, noise_model=sdss[1], model=fwd, params_table=Table({k: np.zeros(0) for k in PARAM_NAMES}))
    assert M._chunk_rows(0, 16384) == 1024 and M._chunk_rows(3000, 16384) == 4096 and M._chunk_rows(10**6, 16384) == 16384
    calls = []
    out = M._padded_chunks(lambda t: (calls.append(t.shape), t[:, :2] * 2.0)[1], np.zeros((0, 11)), 8)
    assert out.shape == (0, 2) and calls == [(8, 11)]


def test_params_table_and_cli(fwd, sdss, tmp_path):
    from astropy.table import Table

    th = M.sample_table2(50, 1)
    th[:, 0], th[:, 1] = 0.05, 11.5  # bright: all pass r < 17.77
    tab = Table(dict(zip(PARAM_NAMES, th.T)))
    out = M.draw_mock(None, seed=2, noise_model=sdss[1], model=fwd, params_table=tab, return_all=True)
    assert len(out) == 50 and out["selected"].all()
    np.testing.assert_allclose(out["tau2"], th[:, 10])
    nm_path = tmp_path / "nm.json"
    from popsed_jax.survey.noise import save_noise_model
    save_noise_model(sdss[1], nm_path)
    tab.write(tmp_path / "p.fits")
    ap = build_parser()
    a = ap.parse_args(["mock", "--params", str(tmp_path / "p.fits"), "--noise-model", str(nm_path),
                       "--out", str(tmp_path / "o.fits"), "--seed", "4"])
    assert a.func(a) == 0
    back = Table.read(tmp_path / "o.fits")
    assert len(back) == 50 and f"flux_true_{R}" in back.colnames
    with pytest.raises(ValueError, match="noise model bands"):
        M.draw_mock(5, noise_model=sdss[1], filters=[SDSS_UGRIZ[1], R])


def test_formed_minus_surviving_constant_matches_the_forward_model():
    """The mock's formed-minus-surviving mass offset is the median the forward model gives
    (surviving = living stars + remnants) over Table-2 draws."""
    from popsed_jax.survey import mock

    med, mean, sd = mock.measure_formed_minus_surviving(n=3000)
    assert abs(med - mock.FORMED_MINUS_SURVIVING_DEX) < 0.01, med
    assert 0.0 < sd < 0.05


def test_pairs_sampler_keeps_pairs_and_extends_the_model_range(sdss, fwd):
    """A (z, logM) pairs sampler draws whole rows of its table; draw_mock builds its model up
    to the sampler's largest z, and a model built for less is refused naming the value."""
    z = np.array([0.03, 0.08, 0.45])
    lm = np.array([10.5, 11.2, 12.3])
    s = M.zlogm_pairs_sampler(z, lm, name="three galaxies")
    zz, ll = s(500, np.random.default_rng(0))
    pairs = set(zip(z.tolist(), lm.tolist()))
    assert set(zip(zz.tolist(), ll.tolist())) == pairs
    assert s.z_max == 0.45 and s.__name__ == "three galaxies"
    with pytest.raises(ValueError, match="finite"):
        M.zlogm_pairs_sampler([np.nan], [10.0])
    with pytest.raises(ValueError, match="'z' = 0.45"):
        M.draw_mock(50, seed=1, noise_model=sdss[1], model=fwd, zlogm_sampler=s)


@pytest.mark.skipif(importlib.util.find_spec("kcorrect") is None, reason="kcorrect not installed")
def test_sdss_zlogm_population_is_the_sdss_main_sample(sdss):
    """The paper-recipe (z, logM): SDSS spec-z with kcorrect masses. The median stellar mass
    of the r < 17.77 main sample lies between 10.6 and 11.1 (Chabrier; the main sample's
    masses are mostly 10-11.5, Kauffmann et al. 2003), and z follows the spec-z distribution."""
    s = M.sdss_zlogm_sampler()
    assert s.n_pairs == sdss[2].n
    zz, lm = s(20000, np.random.default_rng(1))
    assert stats.ks_2samp(zz, sdss[2].z_spec).pvalue > 1e-3
    med_surv = np.median(lm) - M.FORMED_MINUS_SURVIVING_DEX
    assert 10.6 < med_surv < 11.1, med_surv
    assert set(np.round(zz, 6)) <= set(np.round(sdss[2].z_spec, 6))


def test_default_noise_model_covers_the_sdss_file_2mass_bands():
    """ugriz + 2MASS: the noise model comes from the SDSS file's own errors, and 2MASS
    extended-source errors are far larger than SDSS ones at the same flux (the XSC is several
    magnitudes shallower than SDSS imaging), as measured per band."""
    from popsed_jax.survey.noise import noise_sigma_median
    import jax.numpy as jnp

    bands = SDSS_UGRIZ + ("twomass-J", "twomass-H", "twomass-Ks")
    nm = M._default_noise_model(bands)
    assert tuple(nm.bands) == bands
    sig = np.asarray(noise_sigma_median(nm, jnp.full((1, len(bands)), 100.0, jnp.float32)))[0]
    assert np.all(sig[5:] > 20 * sig[2]), sig  # J, H, Ks vs r at 100 nmgy (r = 17.5)
    with pytest.raises(ValueError, match="hsc-r"):
        M._default_noise_model((R, "hsc-r"))
    ap = build_parser()
    assert ap.parse_args(["mock", "--n", "5", "--zlogm", "sdss", "--out", "x.fits"]).zlogm == "sdss"
