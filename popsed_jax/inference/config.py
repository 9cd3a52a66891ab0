"""The fit's configuration: one frozen dataclass, each field declared once with its group, help
text and valid range. The CLI, the report and ``config.json`` all read these declarations.

``FitConfig`` stays flat on purpose: ``config.json`` of every existing run, TOML files
(optionally under ``[fit]``) and ``dataclasses.replace(cfg, steps=...)`` keep working; the
grouping by concern lives in the field metadata (:func:`config_groups`).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = ["FitConfig", "config_groups", "config_help", "FLAG_RATIO", "ConfigError"]

# a fit member whose validation divergence exceeds this multiple of the data floor is flagged
FLAG_RATIO = 3.0


def _f(default, group: str, help: str, check=None):
    return field(default=default, metadata={"group": group, "help": help, "check": check})


def _int_at_least(lo):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            return f"must be an integer >= {lo}"
        return None if v >= lo else f"must be >= {lo}"
    return check


def _number(lo=None, hi=None, lo_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            return "must be a finite number"
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}"
        if hi is not None and v > hi:
            return f"must be <= {hi}"
        return None
    return check


def _one_of(*opts):
    return lambda v: None if v in opts else f"must be one of {list(opts)}"


def _blur(v):
    try:
        pts = [(float(a), float(b)) for a, b in v]
    except (TypeError, ValueError):
        return "must be a list of (fraction of training, epsilon) pairs"
    if not pts or any(not (0 <= a <= 1) or not (b > 0) for a, b in pts) or [a for a, _ in pts] != sorted(a for a, _ in pts):
        return "must be (fraction in [0, 1], increasing; epsilon > 0) pairs"
    return None


def _z_range(v):
    try:
        lo, hi = (float(x) for x in v)
    except (TypeError, ValueError):
        return "must be a pair (z_min, z_max)"
    return None if 0 < lo < hi else "must satisfy 0 < z_min < z_max"


def _limit(v):
    return None if v is None or isinstance(v, str) else "must be a string such as 'r<17.77' or 'r<17.77 & twomass-Ks<15.80~0.14', or null"


def _band_names(v):
    ok = isinstance(v, (tuple, list)) and all(isinstance(x, str) and x for x in v)
    return None if ok else "must be a list of band names such as ['twomass-Ks'] (or empty)"


@dataclass(frozen=True)
class FitConfig:
    """Everything a fit depends on (saved as RUN/config.json). Help: ``config_help()``."""

    steps: int = _f(1200, "Optimisation", "optimisation steps", _int_at_least(1))
    n_sim: int = _f(2048, "Optimisation", "flow samples per step and member", _int_at_least(2))
    batch_obs: int = _f(2048, "Optimisation", "observed galaxies per step and member", _int_at_least(2))
    members: int = _f(1, "Optimisation", "ensemble members (independent flows)", _int_at_least(1))
    seed: int = _f(0, "Optimisation", "random seed", _int_at_least(0))
    lr: float = _f(5e-4, "Optimisation", "learning rate (peak of the one-cycle schedule)", _number(0, lo_open=True))
    loss: str = _f("auto", "Optimisation",
                   "training loss: 'auto' (sliced W2 on CPU, the debiased Sinkhorn divergence through ott-jax on GPU/TPU), "
                   "'sliced' (sliced W2) or 'sinkhorn' (annealed blur, this package's solver)",
                   _one_of("auto", "sliced", "sinkhorn"))
    oversample: int = _f(1, "Optimisation",
                         "flow draws per simulated galaxy: a step draws oversample x n_sim points from the flow "
                         "(no gradients), screens them with an exact bound on their limit-band flux, and forward-models "
                         "n_sim of them, mostly where the survey can see (1: no screen; "
                         "popsed_jax.inference.visible_draws)", _int_at_least(1))
    min_selected_fraction: float = _f(0.05, "Optimisation",
                                      "floor on the population's mean selection probability: below it the loss gains "
                                      "(log floor - log mean)^2. The loss compares only the selected draws, normalised, so "
                                      "it cannot see how much of the population is selectable, and a fit whose selectable "
                                      "share drifts to a few draws per step diverges (the physical mock without it, "
                                      "docs/validation.md; 0: no floor, as before 2026-12-07)", _number(0, 1))
    n_projections: int = _f(128, "Optimisation", "random directions per step of the sliced loss", _int_at_least(1))
    blur: tuple = _f(((0.0, 0.5), (0.35, 0.1), (0.75, 0.03), (1.0, 0.02)), "Annealing schedules",
                     "Sinkhorn blur schedule (fraction of training: epsilon)", _blur)
    noise_c: float = _f(20.0, "Annealing schedules", "noise anti-annealing amplitude c in 1/(1 + c exp(-tau i/steps))",
                        _number(0))
    noise_tau: float = _f(10.0, "Annealing schedules", "noise anti-annealing rate tau", _number(0))
    val_loss: str = _f("sinkhorn", "Validation", "validation divergence and data floor (at the final blur)",
                       _one_of("sinkhorn", "sliced"))
    limit: str | None = _f("r<17.77", "Survey and data",
                           "survey magnitude limit(s), all of which a galaxy passes: 'r<17.77', 'r<17.77 & twomass-Ks<15.80~0.14' "
                           "(AB). `popsed-jax fit sdss` sets the shipped sample's own selection, r < 17.77 and 2MASS-detected "
                           "(survey.catalog.SHIPPED_SDSS_SELECTION), when limit and selection_bands are left at their defaults",
                           _limit)
    selection_bands: tuple = _f((), "Survey and data",
                                "catalog bands used by `limit` only: simulated, noised and cut on, but not fitted "
                                "(e.g. ['twomass-Ks'] for the 2MASS detection of the shipped SDSS sample)", _band_names)
    selection_width: float = _f(0.05, "Survey and data", "width of the soft selection [mag]", _number(0, lo_open=True))
    colours: bool = _f(True, "Survey and data", "features: r asinh mag + adjacent colours",
                       lambda v: None if isinstance(v, bool) else "must be true or false")
    z_range: tuple = _f((0.005, 0.6), "Survey and data", "redshift range of the prior box", _z_range)
    z_prior: str = _f("volume", "Population prior",
                      "the flow's starting redshift distribution: uniform in comoving volume (\"volume\") or in z",
                      _one_of("volume", "uniform"))
    prior: str = _f("mzr+smf-colour", "Population prior",
                    "population prior of the KL term: 'mzr+smf-colour' (default: the box and volume z prior, the Gallazzi+05 "
                    "mass-metallicity relation and the mass function of each galaxy's colour type, `mass_function` x the Peng+10 "
                    "red fraction for galaxies red in rest-frame u - r by Baldry+04's divider, x its complement for blue "
                    "ones; needs a u and an r band), 'flat' (the box and volume z prior), 'mzr' (+ the Gallazzi+05 "
                    "mass-metallicity relation), 'mzr+smf' (+ the mass function), 'mzr+smf-type' (as the default, "
                    "typed by sSFR against the main sequence) or 'physical' (+ Baldry+12 "
                    "masses and the main-sequence / quenched sSFR distribution of the physical mock); see "
                    "popsed_jax.inference.prior",
                    _one_of("flat", "mzr", "mzr+smf", "mzr+smf-type", "mzr+smf-colour", "physical"))
    mass_function: str = _f("weigel16", "Population prior",
                            "galaxy stellar mass function of the 'mzr+smf*' priors: 'weigel16' (Weigel+16, SDSS DR7, "
                            "default) or 'baldry12' (Baldry+12, GAMA z < 0.06); the 'physical' prior keeps the physical "
                            "mock's Baldry+12", _one_of("weigel16", "baldry12"))
    logz_range: tuple = _f((-2.27, 0.3), "Population prior",
                           "log Z/Zsun range of the prior box (BC03's grid starts at -2.28: below it the model clamps)",
                           lambda v: None if (isinstance(v, (tuple, list)) and len(v) == 2 and all(
                               isinstance(x, (int, float)) for x in v) and v[0] < v[1]) else "must be a pair (lo, hi), lo < hi")
    kl_weight: float = _f(3e-3, "Population prior",
                          "weight of KL(population || starting distribution) [nats] added to the training loss", _number(0))
    val_fraction: float = _f(0.1, "Validation", "held-out fraction of the catalog (at most fit.VAL_MAX = 8,192 galaxies)", _number(0, 0.9, lo_open=True))
    n_val: int = _f(2048, "Validation", "simulated points per validation divergence", _int_at_least(2))
    val_every: int = _f(100, "Validation", "validate every N steps", _int_at_least(1))
    checkpoint_every: int = _f(100, "Bookkeeping", "checkpoint every N steps", _int_at_least(1))
    flow_layers: int = _f(8, "Normalizing flow", "coupling layers", _int_at_least(1))
    flow_bins: int = _f(16, "Normalizing flow", "spline bins", _int_at_least(2))
    flow_hidden: int = _f(128, "Normalizing flow", "hidden units", _int_at_least(1))
    flow_tail_bound: float = _f(5.0, "Normalizing flow",
                                "the splines act on [-B, B] in Gaussian space, identity outside. With the volume "
                                "z prior, B = 5 reaches z = 0.0055; B = 4 (the default before 2026-12-07) stops at "
                                "z = 0.0165, below which the population can hold almost no galaxies (SDSS has 0.4% "
                                "there). With the sample's 2MASS detection, B = 5 meets more of the SDSS goals on the "
                                "same seeds and recovers the physical mock better (docs/validation.md)",
                                _number(0, lo_open=True))
    met_mode: str = _f("interp", "Forward model", "metallicity treatment: 'interp' (two neighbouring bins) or 'lognormal'",
                       _one_of("interp", "lognormal"))
    nebular: bool = _f(True, "Forward model", "nebular emission (Cloudy lines + continuum) from stars younger than 10 Myr",
                       lambda v: None if isinstance(v, bool) else "must be true or false")
    ssp_library: str = _f("bc03", "Forward model",
                          "stellar spectra: 'bc03' (BC03 MILES) or 'bc03+emiles' (E-MILES shapes for SSPs >= 63 Myr at "
                          "BC03's 5,000-6,000 A luminosity: old populations with the colours of red SDSS galaxies, "
                          "but on SDSS the fitted population moves nearer, docs/validation.md, 2026-12-07)",
                          _one_of("bc03", "bc03+emiles"))
    logU: float = _f(-2.5, "Forward model", "ionization parameter of the nebular emission (grid: -4 .. 0)", _number(-4.0, 0.0))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            v = getattr(self, f.name)
            msg = check(v) if check else None
            if msg:
                raise ConfigError(f"fit configuration: {f.name} {msg}, got {v!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None) -> "FitConfig":
        """From a dict such as config.json or a TOML table (lists become tuples). ``source`` (a
        file name) is named in errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        where = f" in {source}" if source else ""
        if unknown:
            raise ConfigError(f"unknown fit configuration key(s) {unknown}{where}; known: {sorted(names)}")
        d = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v) for k, v in d.items()}
        try:
            return cls(**d)
        except ConfigError as err:
            raise ConfigError(f"{err}{where}") from None

    @classmethod
    def from_toml(cls, path) -> "FitConfig":
        import tomllib

        try:
            with open(path, "rb") as fh:
                d = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: TOML syntax error: {err}") from None
        return cls.from_dict(d.get("fit", d), source=str(path))


def config_groups() -> tuple:
    """((group title, (field names...)), ...) in declaration order."""
    groups: dict[str, list] = {}
    for f in dataclasses.fields(FitConfig):
        groups.setdefault(f.metadata["group"], []).append(f.name)
    return tuple((g, tuple(v)) for g, v in groups.items())


def config_help() -> dict:
    """{field name: one-line help}."""
    return {f.name: f.metadata["help"] for f in dataclasses.fields(FitConfig)}
