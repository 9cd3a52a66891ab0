"""Survey catalogs: reading, validating, writing and summarizing photometry.

Conventions
-----------
* Fluxes are AB nanomaggies (``m = 22.5 - 2.5 log10(f)``), corrected for
  Galactic extinction, float64, shape ``(N, B)``.
* Errors are 1-sigma flux errors in nanomaggies, finite and strictly positive.
* Bands are full filter names, speclite's or popsed-jax's own (``'sdss2001-r'``, ``'twomass-Ks'``,
  ``'galex-nuv'``...).
* Bad rows are either refused with a ``ValueError`` naming the column, band and
  value at fault, or (``on_bad='drop'``) dropped and counted in
  ``meta['dropped']`` as ``{"<band>: <reason>": count}``. A row failing several
  checks is counted once, under the first failing band/check (bands in order).
"""
from __future__ import annotations

import difflib
from contextlib import nullcontext
import json
import os
import warnings
import dataclasses
from dataclasses import dataclass, field
from importlib import resources

from pathlib import Path

import numpy as np

from ..errors import CatalogError
from ..physics.photometry import (SDSS_UGRIZ, ZP_NMGY, flux_to_mag, mag_to_flux, magerr_to_fluxerr,
                                  validate_filter_names)

__all__ = [
    "Catalog", "read_sdss_main",
    "read_table", "write_catalog", "read_catalog", "catalog_subset",
    "catalog_summary", "format_summary", "load_catalog", "is_shipped_sdss",
    "binned_medians", "fit_variance_quadratic", "sdss_bands_as",
    "default_sdss_path",
]

# SDSS main-sample conventions (DR7 photometry as shipped by kcorrect).
SDSS_FILTERS = dict(zip("ugriz", SDSS_UGRIZ))
# m_AB = m_SDSS + offset  (u_AB = u_SDSS - 0.04, z_AB = z_SDSS + 0.02)
SDSS_AB_OFFSET = {"u": -0.04, "g": 0.0, "r": 0.0, "i": 0.0, "z": 0.02}
# SFD98 A_b / E(B-V) used by the SDSS pipeline for EXTINCTION (ugriz).
SDSS_EXT_COEFF = {"u": 5.155, "g": 3.793, "r": 2.751, "i": 2.086, "z": 1.479}
# Extra bands in the kcorrect file: (speclite name, kind, columns, Vega->AB or
# zero point, A_b / E(B-V)).
#  * 2MASS XSC extended magnitudes are Vega; AB - Vega = 0.91, 1.39, 1.85
#    (Blanton & Roweis 2007, kcorrect k_vega2ab); A/E(B-V) = 0.902, 0.576,
#    0.367 (SFD98 table 6, as in kcorrect twomass_to_maggies).
#  * GALEX FLUX_AUTO is in counts/s; m_AB = ZP - 2.5 log10(cps) with
#    ZP = 18.82 (FUV), 20.08 (NUV) (Morrissey et al. 2007);
#    A/E(B-V) = 8.24 (FUV), 8.20 (NUV) (Wyder et al. 2007).
_SDSS_EXTRA = {
    "twomass-J": ("vega_mag", ("J_M_EXT", "J_MSIG_EXT"), 0.91, 0.902),
    "twomass-H": ("vega_mag", ("H_M_EXT", "H_MSIG_EXT"), 1.39, 0.576),
    "twomass-Ks": ("vega_mag", ("K_M_EXT", "K_MSIG_EXT"), 1.85, 0.367),
    "galex-nuv": ("cps", ("NUV_FLUX_AUTO", "NUV_FLUXERR_AUTO"), 20.08, 8.20),
    "galex-fuv": ("cps", ("FUV_FLUX_AUTO", "FUV_FLUXERR_AUTO"), 18.82, 8.24),
}
_EXTRA_ALIASES = {
    "j": "twomass-J", "2mass-j": "twomass-J", "twomass-j": "twomass-J",
    "h": "twomass-H", "2mass-h": "twomass-H", "twomass-h": "twomass-H",
    "k": "twomass-Ks", "ks": "twomass-Ks", "2mass-k": "twomass-Ks",
    "2mass-ks": "twomass-Ks", "twomass-k": "twomass-Ks", "twomass-ks": "twomass-Ks",
    "nuv": "galex-nuv", "galex-nuv": "galex-nuv",
    "fuv": "galex-fuv", "galex-fuv": "galex-fuv",
}

# Flux units -> nanomaggies factor (AB: 1 nmgy = 3.631 uJy).
_UNIT_TO_NMGY = {
    "nanomaggies": 1.0, "nmgy": 1.0, "maggies": 1e9,
    "jy": 1e9 / 3631.0, "mjy": 1e6 / 3631.0, "ujy": 1e3 / 3631.0,
    "njy": 1.0 / 3631.0,
}


@dataclass(frozen=True, eq=False)
class Catalog:
    """Photometric catalog (see module docstring for units).

    flux, flux_err: (N, B) float64 nanomaggies; bands: B speclite names;
    z_spec: (N,) or None; extinction: (N, B) mag applied, or None;
    ids: (N,) row identifiers; meta: 'source', 'n_input', 'dropped', ...
    """

    flux: np.ndarray
    flux_err: np.ndarray
    bands: tuple
    z_spec: np.ndarray | None = None
    extinction: np.ndarray | None = None
    ids: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        flux = np.asarray(self.flux, dtype=np.float64)
        err = np.asarray(self.flux_err, dtype=np.float64)
        bands = tuple(str(b) for b in self.bands)
        if flux.ndim != 2 or flux.shape != err.shape or flux.shape[1] != len(bands):
            raise CatalogError(
                f"flux {flux.shape} and flux_err {err.shape} must both be (N, B) "
                f"with B = len(bands) = {len(bands)}")
        if flux.shape[0] == 0:
            raise CatalogError("the catalog has no galaxies (0 rows)")
        for what, arr, ok in (("flux", flux, np.isfinite(flux)), ("flux_err", err, np.isfinite(err) & (err > 0))):
            if not ok.all():
                i, k = (int(x[0]) for x in np.nonzero(~ok))
                raise CatalogError(f"{what} of band {bands[k]} is {arr[i, k]!r} in row {i} ({int((~ok).sum())} bad values); "
                                   f"{what} must be finite" + (" and > 0" if what == "flux_err" else ""))
        n = flux.shape[0]
        object.__setattr__(self, "flux", flux)
        object.__setattr__(self, "flux_err", err)
        object.__setattr__(self, "bands", bands)
        for name, shape in (("z_spec", (n,)), ("extinction", (n, len(bands))),
                            ("ids", (n,))):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v)
                if name != "ids":
                    v = v.astype(np.float64)
                if v.shape != shape:
                    raise CatalogError(f"{name} has shape {v.shape}, expected {shape}")
                object.__setattr__(self, name, v)
        if self.ids is None:
            object.__setattr__(self, "ids", np.arange(n, dtype=np.int64))
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def n(self) -> int:
        """Number of objects N."""
        return self.flux.shape[0]

    @property
    def n_bands(self) -> int:
        """Number of bands B."""
        return self.flux.shape[1]


# --------------------------------------------------------------------------
# SDSS main sample (kcorrect file)
# --------------------------------------------------------------------------

def default_sdss_path():
    """Path of the packaged SDSS main-sample file (10,000 galaxies, from kcorrect)."""
    return resources.files("popsed_jax").joinpath("data").joinpath("sdss_main_kcorrect.fits")


def _mark(bad, reason, drop_reason, dropped):
    """Assign `reason` to rows newly flagged in `bad` (first reason wins)."""
    new = bad & (drop_reason < 0)
    if new.any():
        dropped.append((reason, int(new.sum())))
        drop_reason[new] = len(dropped) - 1


def read_sdss_main(path=None, bands=("u", "g", "r", "i", "z"), flux="MODELFLUX",
                   extra=()) -> Catalog:
    """Read the kcorrect SDSS main-sample file into a :class:`Catalog`.

    flux: 'MODELFLUX' or 'PETROFLUX' (nanomaggies, with ``*_IVAR``). Fluxes and
    errors are multiplied by 10^(0.4 EXTINCTION) and put on AB
    (u_AB = u_SDSS - 0.04, z_AB = z_SDSS + 0.02). extra: any of 'twomass-J',
    'twomass-H', 'twomass-Ks', 'galex-nuv', 'galex-fuv' (aliases 'J', 'H',
    'K'/'Ks', 'NUV', 'FUV', '2mass-J'...): 2MASS Vega magnitudes and GALEX
    counts/s are converted to AB nanomaggies, dereddened with E(B-V) =
    EXTINCTION_r / 2.751. Rows with ivar <= 0, non-finite flux, or a missing
    extra band (GALEX is sparse: ~8% of rows) are dropped and counted.
    """
    from astropy.table import Table

    src = default_sdss_path() if path is None else path
    with resources.as_file(src) if path is None else nullcontext(src) as p:
        tab = Table.read(p, format="fits")
        source = str(path) if path is not None else "popsed_jax/data/sdss_main_kcorrect.fits"
    flux = flux.upper()
    if flux not in ("MODELFLUX", "PETROFLUX"):
        raise CatalogError(f"flux must be 'MODELFLUX' or 'PETROFLUX', got {flux!r}")
    for col in (flux, flux + "_IVAR", "EXTINCTION", "Z"):
        if col not in tab.colnames:
            raise CatalogError(f"column {col!r} missing from {source}; have {tab.colnames}")
    n = len(tab)
    idx = []
    for b in bands:
        if b not in SDSS_FILTERS:
            raise CatalogError(f"unknown SDSS band {b!r}: use a subset of 'ugriz'")
        idx.append("ugriz".index(b))
    f_all = np.asarray(tab[flux], dtype=np.float64)
    iv_all = np.asarray(tab[flux + "_IVAR"], dtype=np.float64)
    ext_all = np.asarray(tab["EXTINCTION"], dtype=np.float64)
    ebv = ext_all[:, 2] / SDSS_EXT_COEFF["r"]

    names, cols_f, cols_e, cols_a = [], [], [], []
    dropped, drop_reason = [], np.full(n, -1)
    for b, i in zip(bands, idx):
        name = SDSS_FILTERS[b]
        f, iv, a = f_all[:, i], iv_all[:, i], ext_all[:, i]
        _mark(~np.isfinite(f), f"{name}: non-finite {flux}", drop_reason, dropped)
        _mark(~(iv > 0) | ~np.isfinite(iv), f"{name}: {flux}_IVAR <= 0", drop_reason,
              dropped)
        with np.errstate(divide="ignore", invalid="ignore"):
            sig = 1.0 / np.sqrt(np.where(iv > 0, iv, np.nan))
        scale = 10.0 ** (0.4 * a) * 10.0 ** (-0.4 * SDSS_AB_OFFSET[b])
        names.append(name)
        cols_f.append(f * scale)
        cols_e.append(sig * scale)
        cols_a.append(a)
    for e in extra:
        key = _EXTRA_ALIASES.get(str(e).lower(), e)
        if key not in _SDSS_EXTRA:
            raise CatalogError(f"unknown extra band {e!r}; available: {list(_SDSS_EXTRA)}")
        kind, (cm, ce), zp, coeff = _SDSS_EXTRA[key]
        m, s = (np.asarray(tab[c], dtype=np.float64) for c in (cm, ce))
        a = coeff * ebv
        if kind == "vega_mag":  # 0 means no measurement
            bad = ~(np.isfinite(m) & np.isfinite(s) & (m > 0) & (s > 0))
            _mark(bad, f"{key}: missing ({cm} or {ce} <= 0)", drop_reason, dropped)
            fl = mag_to_flux(m + zp - a)
            er = magerr_to_fluxerr(fl, s)
        else:  # GALEX counts/s; 0 and -99 mean no detection / not observed
            bad = ~(np.isfinite(m) & np.isfinite(s) & (m != 0) & (m > -99) & (s > 0))
            _mark(bad, f"{key}: missing ({cm} <= -99 or 0, or {ce} <= 0)",
                  drop_reason, dropped)
            fac = 10.0 ** (-0.4 * (zp - ZP_NMGY - a))
            fl, er = m * fac, s * fac
        names.append(key)
        cols_f.append(fl)
        cols_e.append(er)
        cols_a.append(a)
    z = np.asarray(tab["Z"], dtype=np.float64)
    _mark(~np.isfinite(z), "z_spec: non-finite Z", drop_reason, dropped)
    keep = drop_reason < 0
    if not keep.any():
        raise CatalogError(f"no rows left in {source} after dropping: {dict(dropped)}")
    meta = dict(source=source, n_input=n, dropped=dict(dropped), flux_type=flux,
                extinction_corrected=True,
                ab_offsets={SDSS_FILTERS[b]: SDSS_AB_OFFSET[b] for b in bands})
    return Catalog(flux=np.stack(cols_f, 1)[keep], flux_err=np.stack(cols_e, 1)[keep],
                   bands=tuple(names), z_spec=z[keep],
                   extinction=np.stack(cols_a, 1)[keep],
                   ids=np.arange(n, dtype=np.int64)[keep], meta=meta)


def sdss_bands_as(obj, bands):
    """``obj`` (a Catalog or a NoiseModel) with its band names replaced by ``bands`` when the two
    differ only in the SDSS filter-curve set (``sdss2001-x`` <-> ``sdss2010-x``, same order):
    the measured fluxes are the same, only the curves a model would use differ (runs made before
    0.2.x used speclite's ``sdss2010``). Otherwise ``obj`` unchanged."""
    import dataclasses

    have, want = tuple(obj.bands), tuple(bands)
    def key(b):
        return ("sdss", b[-1]) if b[:9] in ("sdss2001-", "sdss2010-") and len(b) == 10 else b
    if have == want or len(have) != len(want) or [key(b) for b in have] != [key(b) for b in want]:
        return obj
    return dataclasses.replace(obj, bands=want)


# --------------------------------------------------------------------------
# generic tables
# --------------------------------------------------------------------------

def _as_table(path_or_table, format=None):
    from astropy.table import Table
    if isinstance(path_or_table, Table):
        return path_or_table, "<table>"
    path = os.fspath(path_or_table)
    if not os.path.exists(path):
        raise CatalogError(f"catalog file not found: {path}")
    fmt = format or _guess_format(path)
    # FITS columns are memory-mapped: only the columns read are copied into memory
    kw = {"path": "catalog"} if fmt == "hdf5" else {"memmap": True} if fmt == "fits" else {}
    try:
        with warnings.catch_warnings():  # a truncated file is an error, not a warning
            warnings.filterwarnings("error", message=".*truncated.*")
            return Table.read(path, format=fmt, **kw), path
    except Exception as err:  # astropy raises many kinds for a damaged file: name the file, keep the cause
        raise CatalogError(f"cannot read {path} as a {fmt} table: {type(err).__name__}: {err}") from err


def _col(tab, name, what):
    if name not in tab.colnames:
        close = difflib.get_close_matches(name, tab.colnames, n=3, cutoff=0.5)
        raise CatalogError(
            f"missing column {name!r} ({what}); "
            + (f"close matches: {close}; " if close else "")
            + f"available: {tab.colnames}")
    col = tab[name]
    try:
        if getattr(col, "mask", None) is not None and np.any(col.mask):
            return np.ma.filled(col.astype(np.float64), np.nan)
        out = np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CatalogError(f"column {name!r} ({what}) is not numeric: {err}") from None
    if out.ndim != 1:
        raise CatalogError(f"column {name!r} ({what}) has shape {out.shape}; expected one value per row")
    return out


def _flux_factor(unit, zero_point, what):
    u = str(unit).lower()
    if u in ("zp", "zeropoint", "zero_point"):
        return 10.0 ** (-0.4 * (zero_point - ZP_NMGY))
    if u not in _UNIT_TO_NMGY:
        raise CatalogError(
            f"unknown {what} {unit!r}; use one of {sorted(_UNIT_TO_NMGY)}, 'mag' or "
            "'zp' (flux with AB zero point `zero_point`)")
    return _UNIT_TO_NMGY[u]


def read_table(path_or_table, bands, *, flux_cols=None, err_cols=None, ivar_cols=None,
               unit="nanomaggies", err_unit=None, z_col=None, extinction_cols=None,
               zero_point=ZP_NMGY, on_bad="raise", id_col=None, format=None) -> Catalog:
    """Build a :class:`Catalog` from any astropy-readable table.

    bands: list of B speclite filter names, or dict {filter name: flux column}.
    flux_cols / err_cols (1-sigma) or ivar_cols: B column names each.
    unit: 'nanomaggies', 'maggies', 'Jy', 'mJy', 'uJy', 'nJy', 'mag' (AB) or
    'zp' (m_AB = zero_point - 2.5 log10 f). err_unit: unit of err_cols
    (default = unit; 'mag' means magnitude errors). extinction_cols: Galactic
    extinction [mag] per band, applied as f * 10^(0.4 A). on_bad: 'raise'
    (ValueError naming column, band and value) or 'drop' (count per reason).
    """
    if on_bad not in ("raise", "drop"):
        raise CatalogError(f"on_bad must be 'raise' or 'drop', got {on_bad!r}")
    tab, source = _as_table(path_or_table, format)
    if isinstance(bands, dict):
        if flux_cols is None:
            flux_cols = list(bands.values())
        bands = list(bands.keys())
    bands = [str(b) for b in bands]
    if not bands:
        raise CatalogError("no bands given")
    if len(set(bands)) != len(bands):
        raise CatalogError(f"duplicate band names in {bands}")
    try:
        validate_filter_names(bands)
    except ValueError as err:
        raise CatalogError(f"{source}: {err}") from None
    if flux_cols is None:
        raise CatalogError("flux_cols is required (or pass bands as {filter: column})")
    if (err_cols is None) == (ivar_cols is None):
        raise CatalogError("give exactly one of err_cols or ivar_cols")
    for what, cols in (("flux_cols", flux_cols), ("err_cols", err_cols),
                       ("ivar_cols", ivar_cols), ("extinction_cols", extinction_cols)):
        if cols is not None and len(cols) != len(bands):
            raise CatalogError(f"{what} has {len(cols)} entries for {len(bands)} bands")
    n = len(tab)
    if n == 0:
        raise CatalogError(f"empty table ({source}): 0 rows")
    unit = str(unit)
    err_unit = unit if err_unit is None else str(err_unit)
    is_mag = unit.lower() == "mag"
    fac = None if is_mag else _flux_factor(unit, zero_point, "unit")
    if ivar_cols is not None and err_unit.lower() == "mag":
        raise CatalogError("ivar_cols must be in flux units, not 'mag'")
    efac = None if err_unit.lower() == "mag" else _flux_factor(err_unit, zero_point,
                                                               "err_unit")

    problems = []  # (reason, bad mask, column, values)
    fl_out, er_out, ext_out = [], [], []
    for k, band in enumerate(bands):
        fc = flux_cols[k]
        v = _col(tab, fc, f"flux of {band}")
        if is_mag:
            problems.append((f"{band}: non-finite magnitude in {fc}", ~np.isfinite(v),
                             fc, v))
            problems.append((f"{band}: sentinel magnitude (|m| >= 50) in {fc}",
                             np.abs(v) >= 50, fc, v))
            f = mag_to_flux(np.where(np.isfinite(v) & (np.abs(v) < 50), v, 99.0))
        else:
            problems.append((f"{band}: non-finite flux in {fc}", ~np.isfinite(v), fc, v))
            f = v * fac
        if ivar_cols is not None:
            ec = ivar_cols[k]
            iv = _col(tab, ec, f"inverse variance of {band}")
            problems.append((f"{band}: non-finite ivar in {ec}", ~np.isfinite(iv), ec, iv))
            problems.append((f"{band}: ivar <= 0 in {ec}", iv <= 0, ec, iv))
            with np.errstate(divide="ignore", invalid="ignore"):
                e = 1.0 / np.sqrt(np.where(iv > 0, iv, np.nan)) * efac
        else:
            ec = err_cols[k]
            ev = _col(tab, ec, f"error of {band}")
            problems.append((f"{band}: non-finite error in {ec}", ~np.isfinite(ev), ec, ev))
            problems.append((f"{band}: error <= 0 in {ec}", ev <= 0, ec, ev))
            e = magerr_to_fluxerr(f, ev) if efac is None else ev * efac
            if efac is None:
                problems.append((f"{band}: zero flux with a magnitude error in {ec}",
                                 (f == 0) & (ev > 0), ec, ev))
        if extinction_cols is not None:
            ac = extinction_cols[k]
            a = _col(tab, ac, f"extinction of {band}")
            problems.append((f"{band}: non-finite extinction in {ac}", ~np.isfinite(a),
                             ac, a))
            f, e = f * 10 ** (0.4 * a), e * 10 ** (0.4 * a)
            ext_out.append(a)
        fl_out.append(f)
        er_out.append(e)
    z = None
    if z_col is not None:
        z = _col(tab, z_col, "redshift")
        problems.append((f"z_spec: non-finite redshift in {z_col}", ~np.isfinite(z),
                         z_col, z))
    if id_col is not None:
        if id_col not in tab.colnames:
            _col(tab, id_col, "id")  # raises, naming the column
        ids = np.asarray(tab[id_col])
    else:
        ids = np.arange(n, dtype=np.int64)

    dropped, drop_reason = [], np.full(n, -1)
    for reason, bad, col, vals in problems:
        bad = np.asarray(bad, dtype=bool)
        if on_bad == "raise" and bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CatalogError(
                f"{reason}: {int(bad.sum())} of {n} rows, first at row {i} "
                f"(column {col!r} = {_scalar(vals[i])!r}); fix the input or use on_bad='drop'")
        _mark(bad, reason, drop_reason, dropped)
    keep = drop_reason < 0
    if not keep.any():
        raise CatalogError(f"no rows left after dropping bad rows: {dict(dropped)}")
    meta = dict(source=source, n_input=n, dropped=dict(dropped),
                extinction_corrected=extinction_cols is not None, input_unit=unit)
    return Catalog(flux=np.stack(fl_out, 1)[keep], flux_err=np.stack(er_out, 1)[keep],
                   bands=tuple(bands), z_spec=None if z is None else z[keep],
                   extinction=None if extinction_cols is None else np.stack(ext_out, 1)[keep],
                   ids=ids[keep], meta=meta)


def _scalar(v):
    return v.item() if isinstance(v, np.generic) else v


def catalog_bands(cat: Catalog, bands) -> Catalog:
    """`cat` with only the columns of ``bands`` (names of its bands), in that order."""
    missing = [b for b in bands if b not in cat.bands]
    if missing:
        raise CatalogError(f"band(s) {missing} not in the catalog's {list(cat.bands)}")
    idx = [cat.bands.index(b) for b in bands]
    return dataclasses.replace(cat, flux=cat.flux[:, idx], flux_err=cat.flux_err[:, idx], bands=tuple(bands),
                               extinction=None if cat.extinction is None else cat.extinction[:, idx])


def catalog_subset(cat: Catalog, keep, reason: str | None = None) -> Catalog:
    """Rows of `cat` where boolean (N,) `keep` is True (or integer indices).

    If `reason` is given, the removed rows are counted in meta['dropped'][reason].
    Raises ValueError if nothing is left.
    """
    keep = np.asarray(keep)
    if keep.dtype == bool:
        if keep.shape != (cat.n,):
            raise CatalogError(f"mask shape {keep.shape} != ({cat.n},)")
        n_keep = int(keep.sum())
    else:
        n_keep = keep.size
    if n_keep == 0:
        raise CatalogError(
            f"empty selection: {reason or 'subset'} keeps 0 of {cat.n} objects")
    meta = dict(cat.meta)
    if reason is not None:
        d = dict(meta.get("dropped", {}))
        d[reason] = d.get(reason, 0) + cat.n - n_keep
        meta["dropped"] = d
    opt = lambda a: None if a is None else a[keep]  # noqa: E731
    return Catalog(flux=cat.flux[keep], flux_err=cat.flux_err[keep], bands=cat.bands,
                   z_spec=opt(cat.z_spec), extinction=opt(cat.extinction),
                   ids=opt(cat.ids), meta=meta)


# --------------------------------------------------------------------------
# writing / reading the project's own format
# --------------------------------------------------------------------------

_FORMATS = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".ecsv": "ascii.ecsv",
            ".h5": "hdf5", ".hdf5": "hdf5", ".csv": "ascii.csv",
            ".parquet": "parquet", ".vot": "votable", ".xml": "votable"}


def _guess_format(path):
    p = str(path).lower()
    for ext in sorted(_FORMATS, key=len, reverse=True):
        if p.endswith(ext):
            return _FORMATS[ext]
    return None  # let astropy guess


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_catalog(cat: Catalog, path, format=None) -> None:
    """Write `cat` to `path` (FITS, ECSV, HDF5, CSV, ...; format from the extension).

    Columns: id, flux_<band>, flux_err_<band>, [extinction_<band>], [z_spec].
    Bands and meta go to table meta keys PSBANDS / PSMETA (JSON strings).
    """
    from astropy.table import Table
    t = Table()
    t["id"] = cat.ids
    for k, b in enumerate(cat.bands):
        t[f"flux_{b}"] = cat.flux[:, k]
        t[f"flux_err_{b}"] = cat.flux_err[:, k]
    if cat.extinction is not None:
        for k, b in enumerate(cat.bands):
            t[f"extinction_{b}"] = cat.extinction[:, k]
    if cat.z_spec is not None:
        t["z_spec"] = cat.z_spec
    t.meta["PSBANDS"] = json.dumps(list(cat.bands))
    t.meta["PSMETA"] = json.dumps(cat.meta, default=_json_default)
    fmt = format or _guess_format(path)
    kw = dict(path="catalog", serialize_meta=True) if fmt == "hdf5" else {}
    t.write(path, format=fmt, overwrite=True, **kw)


def read_catalog(path, format=None, on_bad: str = "raise") -> Catalog:
    """Read a catalog written by :func:`write_catalog` (bands inferred from column names when
    the format drops table meta, e.g. CSV), with :func:`read_table`'s checks: filter names,
    finite fluxes and positive errors, per row (``on_bad='drop'`` drops and counts them)."""
    tab, source = _as_table(path, format)
    if "PSBANDS" in tab.meta:
        try:
            bands = [str(b) for b in json.loads(tab.meta["PSBANDS"])]
        except (TypeError, ValueError):
            raise CatalogError(f"{source}: its PSBANDS header is not a JSON list of band names") from None
    else:
        fl = [c[len("flux_"):] for c in tab.colnames if c.startswith("flux_") and not c.startswith(("flux_err_", "flux_true_"))]
        er = [c[len("flux_err_"):] for c in tab.colnames if c.startswith("flux_err_")]
        for b in sorted(set(fl) ^ set(er)):
            have, lack = ("flux_", "flux_err_") if b in fl else ("flux_err_", "flux_")
            raise CatalogError(f"{source}: band {b!r} has a {have}{b} column but no {lack}{b} column")
        bands = fl
    if not bands:
        raise CatalogError(f"{source}: no flux_<band> columns; not a popsed-jax catalog")
    try:
        meta = json.loads(tab.meta["PSMETA"]) if "PSMETA" in tab.meta else {"source": source}
    except (TypeError, ValueError):
        meta = {"source": source}
    cat = read_table(tab, bands, flux_cols=[f"flux_{b}" for b in bands], err_cols=[f"flux_err_{b}" for b in bands],
                     z_col="z_spec" if "z_spec" in tab.colnames else None, on_bad=on_bad,
                     id_col="id" if "id" in tab.colnames else None)
    keep = np.isin(np.asarray(tab["id"]), cat.ids) if "id" in tab.colnames and cat.n < len(tab) else None
    ext = None
    if all(f"extinction_{b}" in tab.colnames for b in bands):  # already applied to the fluxes: carried along
        ext = np.stack([_col(tab, f"extinction_{b}", f"extinction of {b}") for b in bands], 1)
        ext = ext if keep is None else ext[keep]
    meta = {**meta, "source": meta.get("source", source), "dropped": {**meta.get("dropped", {}), **cat.meta["dropped"]}}
    return Catalog(flux=cat.flux, flux_err=cat.flux_err, bands=cat.bands, z_spec=cat.z_spec, extinction=ext,
                   ids=cat.ids, meta=meta)


# --------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------

def binned_medians(flux, flux_err, n_bins=20, min_per_bin=50):
    """Equal-count bins in log10 flux over objects with flux > 0.

    flux, flux_err: (N,) nanomaggies. Returns (bin index per object (-1 if
    flux <= 0), median flux per bin (K,), median sigma^2 per bin (K,)), with
    K = min(n_bins, n_pos // min_per_bin) >= 1.
    """
    f = np.asarray(flux, np.float64)
    e = np.asarray(flux_err, np.float64)
    pos = f > 0
    n_pos = int(pos.sum())
    if n_pos < max(min_per_bin, 3):
        raise CatalogError(f"too few objects with flux > 0 ({n_pos}) to bin")
    k = int(max(1, min(n_bins, n_pos // min_per_bin)))
    lf = np.log10(f[pos])
    edges = np.quantile(lf, np.linspace(0, 1, k + 1))
    ib = np.clip(np.searchsorted(edges, lf, side="right") - 1, 0, k - 1)
    idx = np.full(f.shape, -1)
    idx[pos] = ib
    fm = np.array([np.median(f[pos][ib == i]) for i in range(k)])
    s2 = np.array([np.median(e[pos][ib == i] ** 2) for i in range(k)])
    return idx, fm, s2


def fit_variance_quadratic(flux_med, var_med):
    """Non-negative fit of sigma^2 = a + b f + c f^2 to binned medians.

    flux_med, var_med: (K,) nanomaggies and nanomaggies^2. Relative residuals
    are minimized. Returns (a [nmgy^2], b [nmgy], c [dimensionless]) as (3,).
    """
    from scipy.optimize import nnls
    fm = np.asarray(flux_med, np.float64)
    s2 = np.asarray(var_med, np.float64)
    design = np.stack([np.ones_like(fm), fm, fm ** 2], 1) / s2[:, None]
    coef, _ = nnls(design, np.ones_like(fm))
    return coef


def _depth_5sigma(flux, err):
    """5-sigma limiting AB mag: 5 x median error of objects with 3 < S/N < 7
    (>= 20 of them), else extrapolated from sigma^2 = a + b f + c f^2."""
    snr = flux / err
    near = (snr > 3) & (snr < 7)
    if near.sum() >= 20:
        return float(flux_to_mag(5 * np.median(err[near]))), "median error at 3<S/N<7"
    try:
        _, fm, s2 = binned_medians(flux, err)
        a, b, c = fit_variance_quadratic(fm, s2)
    except ValueError:
        return float("nan"), "too few objects"
    # f = 5 sqrt(a + b f + c f^2)  ->  (1 - 25 c) f^2 - 25 b f - 25 a = 0
    qa, qb, qc = 1 - 25 * c, -25 * b, -25 * a
    if qa <= 0 or a <= 0:
        return float("nan"), "unconstrained (no sky term in the error fit)"
    f5 = (-qb + np.sqrt(qb * qb - 4 * qa * qc)) / (2 * qa)
    return float(flux_to_mag(f5)), "extrapolated from sigma^2 = a + b f + c f^2"


def catalog_summary(cat: Catalog) -> dict:
    """Plain-dict summary: counts, per-band depth and median mag, z_spec, drops."""
    per_band = {}
    for k, b in enumerate(cat.bands):
        f, e = cat.flux[:, k], cat.flux_err[:, k]
        depth, how = _depth_5sigma(f, e)
        per_band[b] = dict(
            median_mag=float(np.nanmedian(flux_to_mag(f))),
            median_snr=float(np.median(f / e)),
            depth_5sigma_mag=depth, depth_method=how,
            n_nonpositive_flux=int((f <= 0).sum()))
    d = dict(n=cat.n, n_input=int(cat.meta.get("n_input", cat.n)),
             bands=list(cat.bands), source=str(cat.meta.get("source", "")),
             dropped=dict(cat.meta.get("dropped", {})), per_band=per_band,
             frac_z_spec=0.0, z_spec_median=None, z_spec_range=None)
    if cat.z_spec is not None:
        ok = np.isfinite(cat.z_spec) & (cat.z_spec > 0)
        d["frac_z_spec"] = float(ok.mean())
        if ok.any():
            d["z_spec_median"] = float(np.median(cat.z_spec[ok]))
            d["z_spec_range"] = [float(cat.z_spec[ok].min()), float(cat.z_spec[ok].max())]
    return d


def format_summary(d: dict) -> str:
    """Human-readable text of :func:`catalog_summary`'s dict."""
    lines = [f"source: {d['source']}",
             f"objects: {d['n']} kept of {d['n_input']} read",
             f"bands ({len(d['bands'])}): {', '.join(d['bands'])}"]
    if d["dropped"]:
        lines.append("dropped:")
        lines += [f"  {n:7d}  {r}" for r, n in d["dropped"].items()]
    else:
        lines.append("dropped: none")
    if d["z_spec_median"] is not None:
        lo, hi = d["z_spec_range"]
        lines.append(f"z_spec: {100 * d['frac_z_spec']:.1f}% have one; median "
                     f"{d['z_spec_median']:.4f}, range [{lo:.4f}, {hi:.4f}]")
    else:
        lines.append("z_spec: none")
    w = max(len(b) for b in d["bands"])
    lines.append(f"{'band':<{w}}  median_mag  median_S/N  depth_5sig  n(f<=0)")
    notes = set()
    for b, p in d["per_band"].items():
        star = "" if p["depth_method"].startswith("median error at") else "*"
        if star:
            notes.add(p["depth_method"])
        lines.append(f"{b:<{w}}  {p['median_mag']:10.3f}  {p['median_snr']:10.1f}  "
                     f"{p['depth_5sigma_mag']:9.3f}{star:1}  {p['n_nonpositive_flux']:7d}")
    lines.append("depth: 5-sigma AB mag from the median error at 3<S/N<7"
                 + ("; * = " + "; ".join(sorted(notes)) if notes else ""))
    return "\n".join(lines)


#: names of the shipped SDSS main sample: ugriz, or ugriz + its 2MASS J, H, Ks (rows lacking one dropped)
SHIPPED_SDSS = {"sdss": (), "sdss+2mass": ("twomass-J", "twomass-H", "twomass-Ks")}

#: The shipped SDSS sample's selection. Every row of the file has 2MASS photometry: it is the SDSS
#: main sample (r < 17.77) AND detected in the 2MASS extended source catalog, so it is not
#: r-limited: its r counts fall from 4,700 per mag at r = 17.0-17.3 to 1,300 per mag at
#: 17.65-17.77 where an r-limited sample's rise (and blue galaxies, faint in Ks, nearly vanish
#: there: 4 of 9,825). Its Ks counts end at a sharp edge: fitted (:func:`detection_edge`) as
#: exp(a Ks) times a logistic completeness, the edge is at dereddened Ks_AB = 15.90
#: (``TWOMASS_KS_EDGE``; Vega 14.06), 0.10 mag wide, in the *noisy* Ks (median S/N 4.5 there),
#: which explains the counts better than a J (width 0.14) or H (0.18) edge does. A fit that
#: simulates only r < 17.77 must reproduce this sample's flux distribution by bending the
#: population instead. So the shipped sample is fitted with Ks simulated and noised, and a
#: simulated galaxy detected with that logistic's probability (a completeness clause,
#: ``selection.parse_limits``; the file is not cut on it), but Ks is not in the loss; a limit
#: given by the user replaces this.
#: The file's Ks are 2MASS extrapolated magnitudes, which miss light in galaxies' faint outskirts;
#: the model's Ks is total light. Fits with the edge in total Ks (15.90) give, for populations
#: matching the file's ugriz, z - Ks (and r - Ks, i - Ks) 0.09 mag redder than the file's at the
#: median, and narrower: the file's 2MASS Ks scatter 0.17 mag (robust sigma, in quadrature; also
#: at Ks < 15, where the noise is small) about the model's beyond the stated errors. So in the
#: model's total Ks the detection is the edge's logistic moved by ``TWOMASS_KS_MISSED_MAG`` = 0.10
#: and widened by that scatter: width sqrt(0.10^2 + 3 (0.17)^2 / pi^2) = 0.14 mag (a logistic of
#: scale w has sigma w pi / sqrt(3)) (docs/validation.md, "The sample's 2MASS detection").
TWOMASS_KS_EDGE = 15.90  # AB, dereddened: midpoint of the file's Ks completeness (detection_edge)
TWOMASS_KS_WIDTH = 0.10  # mag: its logistic width
TWOMASS_KS_MISSED_MAG = 0.10  # mag: 2MASS extrapolated minus total Ks (median), from fits' colours against the file's
TWOMASS_KS_SCATTER = 0.17  # mag: scatter of 2MASS Ks about total Ks beyond the stated errors, from the same
_KS_EFFECTIVE_WIDTH = float(np.hypot(TWOMASS_KS_WIDTH, np.sqrt(3.0) / np.pi * TWOMASS_KS_SCATTER))
SHIPPED_SDSS_SELECTION = dict(limit=f"r<17.77 & twomass-Ks<{TWOMASS_KS_EDGE - TWOMASS_KS_MISSED_MAG:.2f}~{_KS_EFFECTIVE_WIDTH:.2f}",
                              selection_bands=("twomass-Ks",))


def detection_edge(mags, lo: float = 8.0, hi: float = 20.0) -> dict:
    """Where the counts of a detected sample stop: maximum-likelihood fit of the magnitudes
    (N,) [mag] with the density exp(slope m) sigmoid((m_lim - m) / width) on [lo, hi]:
    {"m_lim", "width", "slope"} (the logistic's midpoint and scale [mag], and the counts' slope
    [ln per mag]). Used to find the 2MASS detection limit of the shipped SDSS sample."""
    from scipy.optimize import minimize

    m = np.asarray(mags, float)
    m = m[np.isfinite(m) & (m > lo) & (m < hi)]
    if m.size < 50:
        raise ValueError(f"detection_edge needs at least 50 finite magnitudes in ({lo}, {hi}), got {m.size}")
    grid = np.linspace(lo, hi, 4001)

    def logpdf(p, x):
        slope, m_lim, lw = p
        return slope * x - np.logaddexp(0.0, -(m_lim - x) / np.exp(lw))

    def nll(p):
        g = logpdf(p, grid)
        top = g.max()
        return -(np.sum(logpdf(p, m)) - m.size * (top + np.log(np.trapezoid(np.exp(g - top), grid))))

    res = minimize(nll, [1.0, float(np.percentile(m, 90)), np.log(0.2)], method="Nelder-Mead",
                   options=dict(maxiter=4000, xatol=1e-6, fatol=1e-6))
    slope, m_lim, lw = res.x
    return {"m_lim": float(m_lim), "width": float(np.exp(lw)), "slope": float(slope)}


def is_shipped_sdss(name) -> bool:
    return name is None or str(name).lower() in SHIPPED_SDSS


def load_catalog(path, sdss: bool = False, extra=()) -> Catalog:
    """Read a catalog file in any supported form: 'sdss' (or None) for the shipped SDSS
    main sample in ugriz, 'sdss+2mass' for it with its 2MASS J, H, Ks, the SDSS kcorrect
    format (auto-detected by its MODELFLUX column), or a file written by
    :func:`write_catalog` (a ``popsed-jax mock`` output included). extra: bands to add to the
    SDSS file's (e.g. a fit's ``selection_bands``, ``('twomass-Ks',)``; bands it has already are
    not added twice); other catalogs must hold them already (a fit says which it lacks)."""
    if is_shipped_sdss(path):
        base = SHIPPED_SDSS["sdss" if path is None else str(path).lower()]
        return read_sdss_main(extra=base + tuple(b for b in extra if b not in base))
    if not Path(path).exists():
        raise CatalogError(f"catalog file not found: {path}")
    if not sdss:
        from astropy.table import Table
        fmt = _guess_format(path)
        if fmt == "fits":  # the header says it without reading the table
            from astropy.io import fits
            with fits.open(path, memmap=True) as hdul:
                sdss = any(getattr(h, "columns", None) is not None and "MODELFLUX" in h.columns.names for h in hdul[1:2])
        else:
            kw = {"path": "catalog"} if fmt == "hdf5" else {}
            sdss = "MODELFLUX" in Table.read(path, format=fmt, **kw).colnames
    return read_sdss_main(path, extra=tuple(extra)) if sdss else read_catalog(path)
