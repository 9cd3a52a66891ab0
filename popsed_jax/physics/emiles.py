"""E-MILES stellar spectra for the grid's SSPs older than 63 Myr (the ``"bc03+emiles"`` library).

Why: dust-free old BC03 (MILES) populations cannot have the colours of red SDSS galaxies
(r - i 0.05 mag too blue at their g - r at every redshift from 0.02 to 0.2; Maraston et al.
2009, MNRAS 394, L107 found the same for luminous red galaxies), so a fit makes red galaxies
dusty star-formers placed too near (docs/validation.md). Old E-MILES populations (Vazdekis et
al. 2016, MNRAS 463, 3409: MILES, CaT, Indo-US and IRTF stars on Padova00 isochrones, 1,680 A
to 5 micron) come within 0.01-0.03 mag of those colours, and fitted with dust-free old
composites they place red SDSS galaxies at their spec-z (+0.004 against BC03's -0.014). In the
population fit, though, red galaxies move nearer still (a quenched, dusty, metal-poor family at
z ~ 0.08), so the fits' default stays ``"bc03"`` (docs/validation.md, 2026-12-07).

Source: the 150 E-MILES SSPs that the ``ppxf==8.2.6`` source distribution on PyPI ships
(``ppxf/miles_models/Eun1.30Z*T*_iPp0.00_baseFe_linear_FWHM_variable.fits``: unimodal IMF of
slope 1.3, i.e. Salpeter; [M/H] = -1.71, -1.31, -0.71, -0.40, 0.00, +0.22; 25 ages 0.063-15.8 Gyr
in steps of 0.1 dex; L_lambda per A in units of Lsun per Msun, 0.9 A sampling). They are read
on the user's machine by ``popsed-jax ssp build`` and never shipped (the MILES team asks for
acknowledgement; ppxf's own code may not be redistributed and is not used).

How they enter (:func:`with_emiles`): each BC03 SSP of age >= 63 Myr keeps its own
luminosity at 5,000-6,000 A (so BC03's Chabrier mass-to-light ratio, living and remnant mass
fractions stay as they are) and takes the spectral shape of E-MILES at its metallicity
([M/H] = log10(Z / 0.019), linear between E-MILES's values in [M/H] and log age):
L = L_BC03 x r with r = s L_EMILES / L_BC03 where E-MILES has the spectrum and r held
outside at its median over the nearest 3% in wavelength (one cell of the ratio is too noisy to
scale the far UV by). E-MILES has the spectrum over 1,680 A-5 micron, except that its 26 youngest
metal-poor or young SSPs (63-251 Myr at [M/H] = -1.71, 63-79 Myr at solar) stop at 8,950 A (no
IRTF stars for them): there r is held beyond 8,950 A, so their near-IR is BC03's shape, scaled. BC03's metallicities
beyond E-MILES's (Z = 0.0001, 0.05, 0.1) take the ratio r at E-MILES's nearest [M/H] (-1.71 or
+0.22, against BC03 interpolated there), so BC03's own metallicity dependence carries on beyond
it. The oldest E-MILES SSP is 15.8 Gyr, older than any the model uses. Between 63 and 100 Myr
the shape is blended (r^w, w linear in log age from 0 to 1) so that the library has no step in
age; younger SSPs (and the nebular emission, which comes from them) are BC03's.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tarfile
from pathlib import Path

import numpy as np

__all__ = ["PPXF_VERSION", "EMILES_GRID_NAME", "EMILES_MIN_AGE_GYR", "EMILES_FULL_AGE_GYR", "NORM_WINDOW_A",
           "EMilesCube", "read_emiles_sdist", "emiles_cube", "build_emiles_cube", "load_emiles_cube", "emiles_cube_path",
           "emiles_llam", "emiles_covered", "with_emiles"]

PPXF_VERSION = "8.2.6"
EMILES_GRID_NAME = "emiles_un1.30_v2_{key}.h5"  # key: a digest of the grid's wavelength cells
EMILES_MIN_AGE_GYR = 0.0631  # E-MILES's youngest SSP in the ppxf files
EMILES_FULL_AGE_GYR = 0.1  # from this age on the shape is all E-MILES's
NORM_WINDOW_A = (5000.0, 6000.0)  # each SSP keeps BC03's luminosity here
ZSUN_PADOVA = 0.019  # E-MILES's [M/H] = log10(Z / 0.019) (Padova00)
_EDGE_DLNLAM = 0.03  # outside E-MILES's coverage r is held at its median over this span next to the edge
_MEMBER = re.compile(r"miles_models/Eun1\.30Z([mp])(\d\.\d+)T(\d+\.\d+)_iPp0\.00_baseFe_linear_FWHM_variable\.fits$")


@dataclasses.dataclass(frozen=True)
class EMilesCube:
    """E-MILES SSPs on a grid's wavelength cells: mh (n_mh,) [M/H]; age_gyr (n_age,);
    llam (n_mh, n_age, n_wave) mean L_lambda in each cell [Lsun/A per Msun, Salpeter];
    covered (n_mh, n_age, n_wave) True where the cell lies inside that spectrum's coverage
    (1,680 A to its last non-zero pixel: 5 micron, or 8,950 A for the youngest metal-poor SSPs)."""

    mh: np.ndarray
    age_gyr: np.ndarray
    wave: np.ndarray
    llam: np.ndarray
    covered: np.ndarray


def _ppxf_sdist(download_dir: Path, sdist: str | None, quiet: bool) -> Path:
    from .ssp import pip_download_once

    if sdist is not None:
        return Path(sdist)
    return pip_download_once(f"ppxf=={PPXF_VERSION}", f"ppxf-{PPXF_VERSION}.tar.gz", download_dir,
                             "the E-MILES spectra (ppxf source distribution, 25 MB)",
                             f"download ppxf-{PPXF_VERSION}.tar.gz by hand and pass it with "
                             "`popsed-jax ssp build --emiles-sdist PATH`", quiet, extra_args=("--no-binary", ":all:"))


def read_emiles_sdist(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The E-MILES SSPs of a ppxf source distribution: ([M/H] (n_mh,), ages [Gyr] (n_age,),
    wavelength [A] (n_pix,), L_lambda (n_mh, n_age, n_pix) [Lsun/A per Msun])."""
    from astropy.io import fits

    spectra, wave = {}, None
    with tarfile.open(path, "r:gz") as tf:
        for m in tf.getmembers():
            hit = _MEMBER.search(m.name)
            if not hit:
                continue
            mh = (-1.0 if hit[1] == "m" else 1.0) * float(hit[2])
            with fits.open(tf.extractfile(m)) as h:
                hd = h[0].header
                w = hd["CRVAL1"] + hd["CDELT1"] * (np.arange(hd["NAXIS1"]) + 1 - hd.get("CRPIX1", 1))
                spectra[(mh, float(hit[3]))] = np.asarray(h[0].data, float)
            wave = w if wave is None else wave
            if not np.allclose(w, wave):
                raise ValueError(f"{m.name}: its wavelength scale differs from the other E-MILES files")
    if not spectra:
        raise ValueError(f"{path} holds no E-MILES SSPs (ppxf/miles_models/Eun1.30*.fits)")
    mh = np.array(sorted({k[0] for k in spectra}))
    ages = np.array(sorted({k[1] for k in spectra}))
    missing = [(a, b) for a in mh for b in ages if (a, b) not in spectra]
    if missing:
        raise ValueError(f"{path}: the E-MILES grid is incomplete, missing ([M/H], age) {missing[:5]}")
    return mh, ages, wave, np.stack([np.stack([spectra[(a, b)] for b in ages]) for a in mh])


def _wave_key(wave_cells) -> str:
    """A short digest of a grid's wavelength cells (the cache of each grid is its own)."""
    import hashlib

    ln = np.round(np.log(np.asarray(wave_cells, float)), 9)
    return hashlib.sha1(ln.tobytes()).hexdigest()[:12]


def emiles_cube_path(wave_cells) -> Path:
    """Where the E-MILES cube for the grid whose cell centres are ``wave_cells`` is cached."""
    from .ssp import cache_dir

    return cache_dir() / EMILES_GRID_NAME.format(key=_wave_key(wave_cells))


def emiles_cube(wave_cells: np.ndarray, sdist: str | None = None, quiet: bool = True) -> EMilesCube:
    """The E-MILES SSPs rebinned (conserving flux) onto the cells of an SSP grid whose centres
    are ``wave_cells`` [A] (uniform in ln lambda); the sdist is downloaded once if needed."""
    from .ssp import cache_dir, rebin_llambda

    edges = _cell_edges(wave_cells)
    src = _ppxf_sdist(cache_dir() / "downloads", sdist, quiet)
    mh, ages, wave, llam = read_emiles_sdist(src)
    pos = llam > 0
    last = wave[pos.shape[-1] - 1 - np.argmax(pos[..., ::-1], axis=-1)]  # (n_mh, n_age) last non-zero pixel
    first = wave[np.argmax(pos, axis=-1)]
    covered = (edges[:-1] >= first[..., None]) & (edges[1:] <= last[..., None])
    return EMilesCube(mh=mh, age_gyr=ages, wave=np.asarray(wave_cells, float), llam=rebin_llambda(wave, llam, edges),
                      covered=covered)


def build_emiles_cube(wave_cells: np.ndarray, out=None, sdist: str | None = None, quiet: bool = False) -> Path:
    """:func:`emiles_cube` for the grid whose cell centres are ``wave_cells``, cached (HDF5);
    returns the path."""
    import tempfile

    import h5py

    out = Path(out) if out is not None else emiles_cube_path(wave_cells)
    out.parent.mkdir(parents=True, exist_ok=True)
    cube = emiles_cube(wave_cells, sdist, quiet)
    fd, tmp = tempfile.mkstemp(suffix=".tmp.h5", dir=out.parent)  # own name: builds in parallel do not collide
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f["mh"], f["age_gyr"], f["wave"] = cube.mh, cube.age_gyr, cube.wave
            f["llam"], f["covered"] = cube.llam.astype(np.float32), cube.covered
            f.attrs["source"] = f"E-MILES (Vazdekis et al. 2016), Eun1.30 baseFe, from ppxf=={PPXF_VERSION}"
            f.attrs["units"] = "llam: Lsun/A per Msun (Salpeter IMF), mean over each cell; wave: cell centres [A]"
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if not quiet:
        print(f"popsed-jax: wrote {out}")
    return out


def _cell_edges(centres: np.ndarray) -> np.ndarray:
    """Edges of cells uniform in ln lambda with these geometric centres (a grid that is not
    uniform in ln lambda is refused: its cells are not known from the centres alone)."""
    ln = np.log(np.asarray(centres, float))
    step = np.diff(ln)
    d = step.mean()
    if np.ptp(step) > 1e-4 * d:
        raise ValueError(f"the E-MILES library needs an SSP grid uniform in ln(lambda) (popsed-jax ssp build); this one's "
                         f"steps run {step.min():.3g}-{step.max():.3g}")
    return np.exp(np.concatenate([ln - d / 2, ln[-1:] + d / 2]))


def load_emiles_cube(grid_wave: np.ndarray, path=None) -> EMilesCube:
    """The E-MILES cube for an SSP grid whose wavelength cells are ``grid_wave``: the cached one
    for these cells (built by ``popsed-jax ssp build``, or now if it is missing)."""
    import h5py

    p = Path(path) if path is not None else emiles_cube_path(grid_wave)
    if not p.exists():
        if path is not None:
            raise FileNotFoundError(f"E-MILES cube not found: {p}")
        build_emiles_cube(grid_wave, p, quiet=True)
    with h5py.File(p, "r") as f:
        cube = EMilesCube(mh=f["mh"][...], age_gyr=f["age_gyr"][...], wave=f["wave"][...], llam=f["llam"][...].astype(float),
                          covered=f["covered"][...].astype(bool))
    if cube.covered.shape != cube.llam.shape:
        raise ValueError(f"{p}: an E-MILES cube of an older format (one coverage for all spectra); delete it and run "
                         "`popsed-jax ssp build`")
    if cube.wave.shape != np.shape(grid_wave) or not np.allclose(cube.wave, grid_wave, rtol=1e-6):
        raise ValueError(f"{p} was built for other wavelength cells than this SSP grid's")
    return cube


def _interp_weights(x, nodes):
    """Linear interpolation (clamped) of x in increasing nodes: (i, i + 1, weight of i + 1)."""
    x = float(np.clip(x, nodes[0], nodes[-1]))
    i = int(np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, nodes.size - 2))
    return i, i + 1, (x - nodes[i]) / (nodes[i + 1] - nodes[i])


def _corners(cube: EMilesCube, mh: float, age_gyr: float):
    """The four (i_mh, i_age, weight) of the bilinear interpolation in [M/H] and log age."""
    i0, i1, u = _interp_weights(mh, cube.mh)
    j0, j1, v = _interp_weights(np.log10(age_gyr), np.log10(cube.age_gyr))
    return ((i0, j0, (1 - u) * (1 - v)), (i0, j1, (1 - u) * v), (i1, j0, u * (1 - v)), (i1, j1, u * v))


def emiles_llam(cube: EMilesCube, mh: float, age_gyr: float) -> np.ndarray:
    """E-MILES L_lambda (n_wave,) at [M/H] and age, linear in [M/H] and log age (clamped)."""
    return sum(w * cube.llam[i, j] for i, j, w in _corners(cube, mh, age_gyr))


def emiles_covered(cube: EMilesCube, mh: float, age_gyr: float) -> np.ndarray:
    """(n_wave,) True where every spectrum that :func:`emiles_llam` mixes here has its data."""
    return np.logical_and.reduce([cube.covered[i, j] for i, j, w in _corners(cube, mh, age_gyr) if w > 0])


def _held_ratio(r: np.ndarray, lnw: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """r (n_wave,) known on [lo, hi]: outside, its median over the _EDGE_DLNLAM next to each end."""
    r = r.copy()
    near_lo = (lnw[lo:hi + 1] <= lnw[lo] + _EDGE_DLNLAM)
    near_hi = (lnw[lo:hi + 1] >= lnw[hi] - _EDGE_DLNLAM)
    r[:lo] = np.median(r[lo:hi + 1][near_lo])
    r[hi + 1:] = np.median(r[lo:hi + 1][near_hi])
    return r


def with_emiles(grid, cube: EMilesCube):
    """The SSP grid with E-MILES's spectral shapes for its SSPs of age >= 63 Myr (see the module
    docstring); luminosity at 5,000-6,000 A (the integral of L_lambda over wavelength), mass
    fractions and nebular grids unchanged."""
    from .ssp import C_ANGSTROM_S

    if grid.nebular_logU is not None:
        raise ValueError("apply E-MILES before nebular emission is added (load_ssp_grid does it in that order)")
    wave = np.asarray(grid.wave, float)
    if cube.wave.shape != wave.shape or not np.allclose(cube.wave, wave, rtol=1e-6):
        raise ValueError("the E-MILES cube was built for another wavelength grid than this SSP grid's")
    dlam = np.diff(_cell_edges(wave))
    win = (wave >= NORM_WINDOW_A[0]) & (wave <= NORM_WINDOW_A[1])
    lnw = np.log(wave)
    flux = np.array(grid.flux, dtype=np.result_type(grid.flux, np.float32), copy=True)
    age = 10 ** np.asarray(grid.lg_age_gyr, float)
    w_age = np.clip(np.log10(age / EMILES_MIN_AGE_GYR) / np.log10(EMILES_FULL_AGE_GYR / EMILES_MIN_AGE_GYR), 0.0, 1.0)
    lgmet = np.asarray(grid.lgmet, float)

    def window(llam):
        return (llam * dlam)[win].sum(-1)

    for ia in np.nonzero(w_age > 0)[0]:
        bc_all = np.asarray(grid.flux[:, ia], float) * C_ANGSTROM_S / wave**2  # (n_met, n_wave) L_lambda, per A
        for im, lgz in enumerate(lgmet):
            mh = float(np.clip(lgz - np.log10(ZSUN_PADOVA), cube.mh[0], cube.mh[-1]))
            # beyond E-MILES's metallicities: its correction at the nearest one, applied to this BC03 SSP
            j0, j1, u = _interp_weights(mh + np.log10(ZSUN_PADOVA), lgmet)
            ref = bc_all[im] if np.isclose(mh, lgz - np.log10(ZSUN_PADOVA)) else (1 - u) * bc_all[j0] + u * bc_all[j1]
            em = emiles_llam(cube, mh, age[ia])
            cov = np.nonzero(emiles_covered(cube, mh, age[ia]))[0]
            lo, hi = cov[0], cov[-1]
            if not (em[lo:hi + 1] > 0).all():
                raise ValueError(f"E-MILES spectrum at [M/H] {mh:+.2f}, age {age[ia]:.3g} Gyr has no flux inside its coverage")
            s = window(ref) / window(em)
            r = np.ones_like(wave)
            ok = ref[lo:hi + 1] > 0
            r[lo:hi + 1] = np.where(ok, s * em[lo:hi + 1] / np.where(ok, ref[lo:hi + 1], 1.0), 1.0)
            new = np.asarray(grid.flux[im, ia], float) * _held_ratio(r, lnw, lo, hi) ** w_age[ia]
            new *= window(bc_all[im]) / window(new * C_ANGSTROM_S / wave**2)  # exact also where blended
            flux[im, ia] = new.astype(flux.dtype)
    return dataclasses.replace(grid, flux=flux, source=grid.source + " + E-MILES shapes >= 63 Myr")
