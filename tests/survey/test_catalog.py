"""Catalog I/O on the real SDSS main-sample file (packaged copy from kcorrect)."""
import numpy as np
import pytest
from astropy.table import Table

from popsed_jax.cli import main
from popsed_jax.physics import photometry
from popsed_jax.survey import catalog as C

UGRIZ = tuple(f"sdss2001-{b}" for b in "ugriz")


@pytest.fixture(scope="module")
def raw():
    with C.resources.as_file(C.default_sdss_path()) as p:
        return Table.read(p)


@pytest.fixture(scope="module")
def sdss():
    return C.read_sdss_main()


@pytest.fixture(scope="module")
def flux_table(sdss):
    """A generic table derived from the real catalog: nanomaggies, 1-sigma errors."""
    t = Table()
    for k, b in enumerate("ugriz"):
        t[f"{b}_flux"] = sdss.flux[:, k]
        t[f"{b}_err"] = sdss.flux_err[:, k]
    t["zz"] = sdss.z_spec
    return t


def _bands_cols():
    return dict(bands=list(UGRIZ), flux_cols=[f"{b}_flux" for b in "ugriz"],
                err_cols=[f"{b}_err" for b in "ugriz"])


# ----------------------------------------------------------------- SDSS reader

def test_sdss_reader_rows_bands_and_redshifts(sdss, raw):
    assert sdss.n == len(raw) == 10000
    assert sdss.bands == UGRIZ and sdss.n_bands == 5
    assert sdss.meta["dropped"] == {} and sdss.meta["n_input"] == 10000
    assert np.array_equal(sdss.ids, np.arange(10000))
    assert 0.0100 < sdss.z_spec.min() and sdss.z_spec.max() < 0.59
    assert 0.09 < np.median(sdss.z_spec) < 0.11          # DESIGN: median 0.10
    assert np.all(np.isfinite(sdss.flux_err)) and np.all(sdss.flux_err > 0)
    assert (sdss.flux <= 0).sum() == 12                  # negative u fluxes are kept


def test_sdss_extinction_and_ab_offsets(sdss, raw):
    f_raw = np.asarray(raw["MODELFLUX"], np.float64)
    ext = np.asarray(raw["EXTINCTION"], np.float64)
    pos = (f_raw > 0).all(1)
    # magnitude change: m_cat = m_raw - EXTINCTION + (AB - SDSS offset)
    dm = photometry.flux_to_mag(sdss.flux[pos]) - photometry.flux_to_mag(f_raw[pos]) + ext[pos]
    expected = np.array([-0.04, 0.0, 0.0, 0.0, 0.02])
    assert np.allclose(dm, expected, atol=2e-6)
    # dereddening makes every g, r, i flux brighter; u brighter still (AB offset)
    assert np.all(sdss.flux[pos][:, 1:4] > f_raw[pos][:, 1:4])
    assert np.all(sdss.flux[pos][:, 0] > f_raw[pos][:, 0] * 10 ** (0.4 * 0.04))
    # errors scale with the flux: S/N is unchanged
    snr_raw = f_raw * np.sqrt(np.asarray(raw["MODELFLUX_IVAR"], np.float64))
    assert np.allclose(sdss.flux / sdss.flux_err, snr_raw, rtol=1e-10)
    assert np.array_equal(sdss.extinction, ext)


def test_petrosian_r_17_77_selects_97_8_percent():
    from popsed_jax.survey.selection import hard_selection, parse_limit
    cat = C.read_sdss_main(flux="PETROFLUX")
    band, lim = parse_limit("r<17.77", cat.bands)
    frac = float(np.mean(np.asarray(hard_selection(cat.flux, cat.bands.index(band), lim))))
    assert abs(frac - 0.978) < 0.002, frac
    # without dereddening the fraction would be far lower: the correction matters
    raw_r = cat.flux[:, 2] * 10 ** (-0.4 * cat.extinction[:, 2])
    assert np.mean(photometry.flux_to_mag(raw_r) < 17.77) < 0.965


def test_sdss_extra_bands_units(sdss):
    cat = C.read_sdss_main(extra=("2mass-J", "H", "Ks"))
    assert cat.bands == UGRIZ + ("twomass-J", "twomass-H", "twomass-Ks")
    d = cat.meta["dropped"]
    assert d["twomass-H: missing (H_M_EXT or H_MSIG_EXT <= 0)"] == 714
    assert cat.n == 10000 - sum(d.values())
    # Vega -> AB: r - Ks(AB) of low-z galaxies is ~1; left in Vega it would be ~-0.6
    r_ks = photometry.flux_to_mag(cat.flux[:, 2]) - photometry.flux_to_mag(cat.flux[:, 7])
    assert 0.8 < np.median(r_ks) < 1.6
    assert np.all(cat.extinction[:, 5:] < cat.extinction[:, 2:3])  # NIR extinction < A_r
    uv = C.read_sdss_main(extra=("NUV",))
    assert 700 < uv.n < 800  # GALEX is sparse
    # counts/s with the GALEX zero point: NUV - u ~ 1.6; read as uJy it would be ~5.5
    assert 1.0 < np.median(photometry.flux_to_mag(uv.flux[:, 5]) - photometry.flux_to_mag(uv.flux[:, 0])) < 2.5
    with pytest.raises(ValueError, match="W1"):
        C.read_sdss_main(extra=("W1",))


# ----------------------------------------------------------------- round trips

@pytest.mark.parametrize("ext", ["fits", "ecsv", "h5", "csv"])
def test_write_read_round_trip(tmp_path, ext):
    cat = C.read_sdss_main(extra=("J",))
    cat = C.catalog_subset(cat, np.arange(0, cat.n, 7))
    path = tmp_path / f"cat.{ext}"
    C.write_catalog(cat, path)
    back = C.read_catalog(path)
    assert back.bands == cat.bands
    for name in ("flux", "flux_err", "z_spec", "extinction", "ids"):
        assert np.array_equal(getattr(back, name), getattr(cat, name)), name
    if ext != "csv":  # CSV cannot hold table meta: bands come from column names
        assert back.meta == cat.meta


# ----------------------------------------------------------------- generic tables

def test_read_table_units_and_magnitudes(sdss, flux_table):
    cat = C.read_table(flux_table, **_bands_cols(), z_col="zz")
    assert np.array_equal(cat.flux, sdss.flux) and np.array_equal(cat.z_spec, sdss.z_spec)
    # microjansky (1 nmgy = 3.631 uJy) and maggies
    t = flux_table.copy()
    for b in "ugriz":
        t[f"{b}_flux"] *= 3.631
        t[f"{b}_err"] *= 3.631
    assert np.allclose(C.read_table(t, **_bands_cols(), unit="uJy").flux, sdss.flux,
                       rtol=1e-12)
    # AB magnitudes + magnitude errors (negative u fluxes have no magnitude)
    m = Table()
    for k, b in enumerate("ugriz"):
        with np.errstate(invalid="ignore"):
            m[f"{b}_flux"] = photometry.flux_to_mag(sdss.flux[:, k])
        m[f"{b}_err"] = 2.5 / np.log(10) * sdss.flux_err[:, k] / np.abs(sdss.flux[:, k])
    with pytest.raises(ValueError, match="sdss2001-u.*u_flux"):
        C.read_table(m, **_bands_cols(), unit="mag")
    cm = C.read_table(m, **_bands_cols(), unit="mag", on_bad="drop")
    assert cm.meta["dropped"] == {"sdss2001-u: non-finite magnitude in u_flux": 12}
    keep = (sdss.flux > 0).all(1)
    assert np.allclose(cm.flux, sdss.flux[keep], rtol=1e-12)
    assert np.allclose(cm.flux_err, sdss.flux_err[keep], rtol=1e-12)


@pytest.mark.parametrize("col,row,value,band", [
    ("g_flux", 7, np.nan, "sdss2001-g"),
    ("r_err", 3, 0.0, "sdss2001-r"),
    ("z_err", 11, -0.5, "sdss2001-z"),
])
def test_bad_values_raise_naming_them(flux_table, col, row, value, band):
    t = flux_table.copy()
    t[col][row] = value
    with pytest.raises(ValueError) as exc:
        C.read_table(t, **_bands_cols())
    msg = str(exc.value)
    assert band in msg and repr(col) in msg and f"row {row}" in msg
    assert f"= {float(value)!r}" in msg


def test_on_bad_drop_counts_per_reason(flux_table):
    t = flux_table.copy()
    t["g_flux"][[7, 9]] = np.nan
    t["r_err"][[3, 9]] = [0.0, -1.0]  # row 9 is bad twice: counted once (g first)
    cat = C.read_table(t, **_bands_cols(), on_bad="drop")
    assert cat.n == len(t) - 3
    assert cat.meta["dropped"] == {"sdss2001-g: non-finite flux in g_flux": 2,
                                   "sdss2001-r: error <= 0 in r_err": 1}
    assert not np.isin([3, 7, 9], cat.ids).any()
    t["i_err"][:] = 0.0
    with pytest.raises(ValueError, match="no rows left"):
        C.read_table(t, **_bands_cols(), on_bad="drop")


def test_structural_errors(flux_table):
    kw = _bands_cols()
    with pytest.raises(ValueError, match="'x_flux'"):
        C.read_table(flux_table, **{**kw, "flux_cols": ["u_flux", "g_flux", "x_flux",
                                                        "i_flux", "z_flux"]})
    with pytest.raises(ValueError, match="3 entries for 5 bands"):
        C.read_table(flux_table, **{**kw, "err_cols": ["u_err", "g_err", "r_err"]})
    with pytest.raises(ValueError, match="'sdss-r'.*sdss2001-r"):
        C.read_table(flux_table, **{**kw, "bands": ["sdss2001-u", "sdss2001-g", "sdss-r",
                                                    "sdss2001-i", "sdss2001-z"]})
    with pytest.raises(ValueError, match="'hsc2017-q'"):
        photometry.validate_filter_names(["hsc2017-q"])
    with pytest.raises(ValueError, match="empty table"):
        C.read_table(flux_table[:0], **kw)
    with pytest.raises(ValueError, match="exactly one of err_cols or ivar_cols"):
        C.read_table(flux_table, bands=kw["bands"], flux_cols=kw["flux_cols"])


def test_ivar_columns_and_band_dict(sdss, flux_table):
    t = flux_table.copy()
    for b in "ugriz":
        t[f"{b}_ivar"] = 1.0 / t[f"{b}_err"] ** 2
    cat = C.read_table(t, dict(zip(UGRIZ, [f"{b}_flux" for b in "ugriz"])),
                       ivar_cols=[f"{b}_ivar" for b in "ugriz"])
    assert np.allclose(cat.flux_err, sdss.flux_err, rtol=1e-12)


def test_empty_selection_raises(sdss):
    from popsed_jax.survey.selection import select_catalog
    with pytest.raises(ValueError, match=r"empty selection: 'r<5'.*sdss2001-r.*0 of 10000"):
        select_catalog(sdss, "r<5")
    sel = select_catalog(sdss, "r<16")
    assert 0 < sel.n < sdss.n
    assert sel.meta["dropped"]["selection: not sdss2001-r < 16.0"] == sdss.n - sel.n


# ----------------------------------------------------------------- summaries

def test_mag_flux_helpers():
    assert photometry.mag_to_flux(22.5) == 1.0 and photometry.flux_to_mag(1e9) == 0.0
    assert np.isnan(photometry.flux_to_mag(-1.0)) and np.isnan(photometry.flux_to_mag(0.0))
    m = np.linspace(10, 25, 7)
    assert np.allclose(photometry.flux_to_mag(photometry.mag_to_flux(m)), m, atol=1e-12)


def _catalog_info(capsys, path):
    """What ``popsed-jax catalog info PATH`` prints."""
    capsys.readouterr()
    assert main(["catalog", "info", path]) == 0
    return capsys.readouterr().out


def test_summary_and_info(sdss, tmp_path, capsys):
    d = C.catalog_summary(sdss)
    assert d["n"] == 10000 and d["frac_z_spec"] == 1.0
    u = d["per_band"]["sdss2001-u"]
    # u has objects near S/N 5: its depth is measured, not extrapolated
    assert u["depth_method"] == "median error at 3<S/N<7"
    for b, p in d["per_band"].items():
        # 5-sigma depth fainter than the median object, brighter than SDSS ~23
        assert p["median_mag"] + 1 < p["depth_5sigma_mag"] < 23.5, (b, p)
    # main-sample r is bright: median r (model) ~ 16.7
    assert 16.4 < d["per_band"]["sdss2001-r"]["median_mag"] < 17.0
    text = C.format_summary(d)
    assert all(b in text for b in UGRIZ) and "objects: 10000" in text
    with C.resources.as_file(C.default_sdss_path()) as p:
        assert _catalog_info(capsys, str(p)).splitlines()[1:] == text.splitlines()[1:]
    C.write_catalog(sdss, tmp_path / "c.ecsv")
    assert _catalog_info(capsys, str(tmp_path / "c.ecsv")).splitlines()[1:] == \
        text.splitlines()[1:]


def test_shipped_catalog_names(sdss):
    """'sdss' is the shipped file in ugriz; 'sdss+2mass' adds its 2MASS J, H, Ks, dropping only
    rows that lack one (the file is a 2MASS-detected subsample: 714 lack H)."""
    assert C.load_catalog("SDSS").n == sdss.n
    nir = C.load_catalog("sdss+2mass")
    assert nir.bands == UGRIZ + ("twomass-J", "twomass-H", "twomass-Ks")
    assert nir.n == sdss.n - sum(nir.meta["dropped"].values())
    assert C.is_shipped_sdss("sdss+2mass") and not C.is_shipped_sdss("sdss.fits")
    i = np.searchsorted(sdss.ids, nir.ids)
    np.testing.assert_allclose(nir.flux[:, :5], sdss.flux[i])


def test_sdss_bands_as_relabels_only_between_sdss_curve_sets(sdss):
    from popsed_jax.survey.catalog import sdss_bands_as

    old = tuple(f"sdss2010-{b}" for b in "ugriz")
    back = sdss_bands_as(sdss, old)
    assert back.bands == old and back.flux is sdss.flux
    assert sdss_bands_as(sdss, old[:2]) is sdss  # other bands: unchanged
    assert sdss_bands_as(sdss, tuple(f"sdss2010-{b}" for b in "guriz")) is sdss  # other order: unchanged
