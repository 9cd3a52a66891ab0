"""Bad catalogs: every damage is either read correctly or refused with the project's own error
naming a column or the file; never a raw traceback, never silent garbage."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from popsed_jax.errors import CatalogError
from popsed_jax.survey.catalog import catalog_subset, catalog_summary, read_catalog, read_sdss_main, write_catalog


@pytest.fixture(scope="module")
def small():
    sdss = read_sdss_main()
    return catalog_subset(sdss, np.arange(sdss.n) < 300)


def _damaged(cat, path, edit):
    """Write ``cat`` to ``path``, apply ``edit`` to the table read back, write it again."""
    write_catalog(cat, path)
    t = Table.read(path)
    edit(t)
    t.write(path, overwrite=True)
    return path


def test_nan_flux_is_refused_naming_column_and_row_or_dropped_and_counted(small, tmp_path):
    p = _damaged(small, tmp_path / "c.fits", lambda t: t["flux_sdss2001-g"].__setitem__(17, np.nan))
    with pytest.raises(CatalogError, match=r"flux_sdss2001-g.*first at row 17"):
        read_catalog(p)
    cat = read_catalog(p, on_bad="drop")
    assert cat.n == small.n - 1 and cat.meta["dropped"] == {"sdss2001-g: non-finite flux in flux_sdss2001-g": 1}
    assert 17 not in set(cat.ids.tolist()) or cat.ids.tolist() != small.ids.tolist()


def test_unknown_band_column_is_refused_with_close_matches(small, tmp_path):
    def typo(t):
        t.rename_column("flux_sdss2001-r", "flux_sdss2001_r")
        t.rename_column("flux_err_sdss2001-r", "flux_err_sdss2001_r")

    with pytest.raises(CatalogError, match=r"sdss2001_r.*close matches: sdss2001-r"):
        read_catalog(_damaged(small, tmp_path / "c.csv", typo))


def test_missing_flux_column_of_a_band_is_named(small, tmp_path):
    drop_i = lambda t: t.remove_column("flux_sdss2001-i")  # noqa: E731
    with pytest.raises(CatalogError, match=r"band 'sdss2001-i' has a flux_err_sdss2001-i column but no flux_sdss2001-i"):
        read_catalog(_damaged(small, tmp_path / "c.csv", drop_i))
    # with the band list in the header (FITS): the missing column is named
    with pytest.raises(CatalogError, match=r"missing column 'flux_sdss2001-i'"):
        read_catalog(_damaged(small, tmp_path / "c.fits", drop_i))


def test_empty_and_tiny_catalogs(small, tmp_path):
    p = tmp_path / "c.fits"
    write_catalog(small, p)
    t = Table.read(p)
    t[:0].write(p, overwrite=True)
    with pytest.raises(CatalogError, match="0 rows"):
        read_catalog(p)
    write_catalog(catalog_subset(small, np.arange(small.n) < 5), p)
    s = catalog_summary(read_catalog(p))  # a summary of 5 rows: numbers, no NaN warnings turned errors
    assert s["n"] == 5


def test_fuzz_random_damage(small, tmp_path):
    """Random damage to a valid catalog file, in FITS and CSV: dropped columns, NaN / inf /
    negative / zero values in random cells, truncated files, renamed columns, emptied header."""
    rng = np.random.default_rng(2026)
    bands = small.bands
    outcomes = {"loaded": 0, "refused": 0}
    tried = 0
    for fmt in ("fits", "csv", "ecsv"):
        clean = tmp_path / f"clean.{fmt}"
        write_catalog(small, clean)
        raw = clean.read_bytes()
        base = Table.read(clean)
        for trial in range(40):
            p = tmp_path / f"d{trial}.{fmt}"
            kind = ["drop", "cell", "cell", "truncate", "rename", "header"][trial % 6]
            t = base.copy()
            bad_value = None
            if kind == "drop":
                t.remove_column(t.colnames[rng.integers(len(t.colnames))])
            elif kind == "cell":
                col = [c for c in t.colnames if c.startswith(("flux_", "z_spec"))][rng.integers(2 * len(bands) + 1)]
                bad_value = [np.nan, np.inf, -np.inf, -1.0, 0.0, 1e30][rng.integers(6)]
                t[col][rng.integers(len(t))] = bad_value
            elif kind == "rename":
                c = t.colnames[rng.integers(len(t.colnames))]
                t.rename_column(c, c.replace("-", "_") + "x")
            elif kind == "header":
                t.meta.clear()
            if kind == "truncate":
                p.write_bytes(raw[: int(len(raw) * rng.uniform(0.05, 0.95))])
            else:
                t.write(p, overwrite=True)
            tried += 1
            try:
                cat = read_catalog(p)
            except CatalogError as err:
                msg = str(err)
                assert str(p) in msg or any(c in msg for c in base.colnames + [b for b in bands]) or "flux_" in msg, (kind, msg)
                outcomes["refused"] += 1
                continue
            # loaded: it must be right, not garbage
            assert np.all(np.isfinite(cat.flux)) and np.all(cat.flux_err > 0) and np.all(np.isfinite(cat.flux_err))
            if kind == "cell" and (bad_value is None or not np.isfinite(bad_value)) and not col.startswith("z_spec"):
                raise AssertionError(f"a non-finite {col} was read silently")
            if kind == "cell" and col.startswith("flux_err_") and bad_value is not None and bad_value <= 0:
                raise AssertionError(f"a non-positive error in {col} was read silently")
            outcomes["loaded"] += 1
    assert tried == 120 and outcomes["refused"] > 20 and outcomes["loaded"] > 20, outcomes
    print(f"catalog fuzz: {tried} damaged files, {outcomes}")
