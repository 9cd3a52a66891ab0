"""Survey selection: flux limits such as 'r<17.77', hard (catalogs, mocks) and soft (training).

Fluxes are AB nanomaggies, shape ``(N, B)``; the soft weights are differentiable in the flux.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from ..physics.photometry import F0_NMGY, filter_names, flux_to_mag, mag_to_flux
from .catalog import Catalog, catalog_subset
from .features import asinh_mag

__all__ = [
    "parse_limit", "parse_limits", "band_index", "hard_selection", "soft_selection_weights",
    "soft_selection_log_weights", "select_catalog",
]



_LIMIT_RE = re.compile(
    r"^\s*([A-Za-z0-9_.\-]+)\s*(<=|<)\s*([-+]?\d+(\.\d*)?([eE][-+]?\d+)?)\s*$")


def band_index(bands, name) -> int:
    """Index of band `name` in `bands`: exact filter name, or a short name
    ('r') matching exactly one band ending in '-r'."""
    bands = tuple(bands)
    if name in bands:
        return bands.index(name)
    hits = [i for i, b in enumerate(bands) if b.split("-", 1)[-1] == name]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ValueError(f"band {name!r} not among the catalog bands {list(bands)}")
    raise ValueError(f"band {name!r} is ambiguous among {[bands[i] for i in hits]}")


def parse_limit(text: str, bands=None):
    """Parse 'r<17.77' (with the catalog's ``bands``) -> ('sdss2001-r', 17.77).

    The band is resolved against `bands` (e.g. ``cat.bands``) if given, else
    against speclite's filter names (then it must be a full name or unique).
    Only upper magnitude limits ('<' or '<=') are supported.
    """
    m = _LIMIT_RE.match(str(text))
    if not m:
        raise ValueError(
            f"cannot parse selection {text!r}: expected '<band><<mag>', e.g. 'r<17.77'")
    name, lim = m.group(1), float(m.group(3))
    if bands is not None:
        return bands[band_index(bands, name)], lim
    return filter_names()[band_index(filter_names(), name)], lim


_CLAUSE_RE = re.compile(
    r"^\s*(.+?)\s*~\s*(\d+(\.\d*)?([eE][-+]?\d+)?)\s*$")


def parse_limits(text: str, bands=None) -> list:
    """Parse a survey selection of one or more limits joined by '&', every one of which a galaxy
    must pass: 'r<17.77 & twomass-Ks<15.90~0.10' -> [('sdss2001-r', 17.77, None),
    ('twomass-Ks', 15.9, 0.1)] (each clause as :func:`parse_limit`). A clause ending in '~w' is
    a completeness, not a cut: a galaxy passes it with probability sigmoid((limit - m) / w)
    (w [mag] > 0), as a detection does at low S/N; catalogs are not cut on it (they already went
    through it), simulations draw it (:func:`survey.observation.is_selected` with a key)."""
    clauses = str(text).split("&")
    if any(not c.strip() for c in clauses):
        raise ValueError(f"cannot parse selection {text!r}: an empty clause around '&' "
                         "(expected e.g. 'r<17.77 & twomass-Ks<15.90~0.10')")
    out = []
    for c in clauses:
        m = _CLAUSE_RE.match(c)
        width = float(m.group(2)) if m else None
        if width is not None and not width > 0:
            raise ValueError(f"cannot parse selection {text!r}: the completeness width of {c.strip()!r} must be > 0 mag")
        out.append((*parse_limit(m.group(1) if m else c, bands), width))
    return out


def hard_selection(flux, band_index, mag_lim):
    """Boolean (N,) mask: AB mag in band `band_index` < mag_lim (flux <= 0 never)."""
    flux = jnp.asarray(flux)
    f_lim = float(mag_to_flux(mag_lim))
    return flux[:, band_index] > f_lim


def soft_selection_weights(flux, band_index, mag_lim, width=0.05):
    """Weights (N,) in [0, 1] = sigmoid((mag_lim - m) / width) [width in mag].

    m is an asinh magnitude softened at 1% of the limiting flux (identical to
    the Pogson magnitude to < 1e-4 mag near the limit), so the weights are
    finite and differentiable for zero and negative fluxes (where they -> 0).
    """
    return jnp.exp(soft_selection_log_weights(flux, band_index, mag_lim, width))


def soft_selection_log_weights(flux, band_index, mag_lim, width=0.05):
    """log of :func:`soft_selection_weights` (N,), = log_sigmoid((mag_lim - m) / width): finite
    even where every weight underflows (a population far below the limit), so that
    ``jax.nn.softmax`` of it gives normalised weights with finite gradients."""
    flux = jnp.asarray(flux)
    f_lim = float(mag_to_flux(mag_lim))
    b = 0.01 * f_lim / F0_NMGY
    m = asinh_mag(flux[:, band_index], jnp.asarray(b, flux.dtype))
    return jax.nn.log_sigmoid((mag_lim - m) / width)


def select_catalog(cat: Catalog, limit: str) -> Catalog:
    """Apply a hard selection such as 'r<17.77' or 'r<17.77 & twomass-Ks<15.90~0.10' to `cat`:
    every cut must hold; completeness clauses ('~w') are not applied (the catalog already went
    through them). A ValueError naming the limit if a cut selects nothing."""
    for band, lim, width in parse_limits(limit, cat.bands):
        if width is not None:
            continue
        k = cat.bands.index(band)
        passes = np.asarray(hard_selection(cat.flux, k, lim))
        if not passes.any():
            brightest = float(flux_to_mag(np.max(cat.flux[:, k])))
            raise ValueError(
                f"empty selection: {limit!r} ({band} < {lim}) selects 0 of {cat.n} objects; "
                f"the brightest {band} magnitude is {brightest:.3f}")
        cat = catalog_subset(cat, passes, reason=f"selection: not {band} < {lim}")
    return cat
