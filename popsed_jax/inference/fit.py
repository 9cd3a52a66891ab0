"""The population fit as pure functions on an explicit state.

    problem = prepare(catalog, cfg)          # static: forward model, observation, data features
    state = init(problem)                    # FitState(params, opt_state, step, key)
    step = make_step(problem)                # jitted; step(state) -> (state, metrics)
    state, metrics = step(state)             # ... repeated cfg.steps times (a driver loops)
    validate(problem, state.params, eps)     # per-member divergence to held-out galaxies
    sample(problem, state.params, n)         # population samples, observed through the survey

One step trains K ensemble members at once over stacked parameters: the flows and the losses
are vmapped over members, the per-galaxy forward model takes all members' samples as one
batch (:func:`simulate_members`); with several devices the members are sharded over them
(``jax.shard_map`` over a mesh axis "ens"; members are independent, so no collectives).

Schedules: the training loss is the sliced W2 by default (``loss = "sinkhorn"`` trains with
the Sinkhorn divergence, whose blur falls log-linearly through ``cfg.blur``); validation
divergences and the data-vs-data floor are Sinkhorn divergences at the final blur. Noise is
anti-annealed: simulated noise x 1 / (1 + c exp(-tau i / steps)) (PopSED's recipe). Learning
rate: optax one-cycle after global-norm clipping at 1.

Determinism: the key of step i of member k is fold_in(fold_in(key, k), i) with
key = PRNGKey(seed), and the observed minibatch is drawn from it, so a resumed run repeats an
uninterrupted one exactly. The loop, checkpoints and the NaN guard live in
``popsed_jax.products.runs``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..physics import forward
from ..physics.params import PARAM_BOUNDS, PARAM_NAMES, theta_to_columns
from ..survey.catalog import Catalog
from ..survey.features import feature_stats, make_features, softening_from_noise
from ..survey.noise import NoiseModel, fit_noise_model
from ..survey.observation import (Observation, features, is_selected, make_observation, noisy_fluxes,
                                  selection_log_weights)
from ..survey.selection import select_catalog
from . import flows
from . import loss as loss_mod
from .config import FitConfig
from .distributed import to_host
from .prior import log_prior_ratio, ssfr_reference_table, ur_band_indices
from .visible_draws import make_screen, screen_visible, stratified_pick

__all__ = [
    "FitProblem", "FitState", "prepare", "init", "make_step", "make_optimizer", "validate",
    "data_floor", "sample", "sample_prior", "draw_reference", "observe_theta", "simulate_members", "epsilon_at",
    "noise_scale_at", "box_bounds", "flow_config", "member_keys", "ensemble_mesh", "forward_model_for",
    "training_loss", "ACCELERATOR_BACKENDS", "make_loss_fn",
]


def box_bounds(cfg: FitConfig) -> tuple[np.ndarray, np.ndarray]:
    """The parameter box (11,) lower and upper bounds, z from ``cfg.z_range``."""
    lo = np.array([PARAM_BOUNDS[n][0] for n in PARAM_NAMES], float)
    hi = np.array([PARAM_BOUNDS[n][1] for n in PARAM_NAMES], float)
    lo[0], hi[0] = cfg.z_range
    j = PARAM_NAMES.index("logZ")
    lo[j], hi[j] = cfg.logz_range
    return lo, hi


def flow_config(cfg: FitConfig) -> flows.FlowConfig:
    """The flow of a fit configuration: the box of bounds (z from ``z_range``), its size, and its
    reference (starting) distribution, uniform on the box or uniform in comoving volume in z."""
    lo, hi = box_bounds(cfg)
    return flows.FlowConfig(lo=tuple(lo), hi=tuple(hi), n_layers=cfg.flow_layers, n_bins=cfg.flow_bins, hidden=cfg.flow_hidden,
                            tail_bound=cfg.flow_tail_bound, z_volume=cfg.z_prior == "volume")


def forward_model_for(cfg: FitConfig, bands, grid=None, bases=None) -> forward.ForwardModel:
    """The forward model a fit configuration describes, for ``bands`` (z up to z_range[1])."""
    return forward.build_forward_model(filters=list(bands), grid=grid, bases=bases, z_max=cfg.z_range[1],
                                       met_mode=cfg.met_mode, nebular=cfg.nebular, logU=cfg.logU,
                                       library=cfg.ssp_library)


def epsilon_at(cfg: FitConfig, i: int) -> float:
    """Blur schedule: log-linear interpolation of cfg.blur at fraction i / steps."""
    x = i / max(cfg.steps - 1, 1)
    xs, es = zip(*cfg.blur)
    return float(np.exp(np.interp(x, xs, np.log(es))))


def noise_scale_at(cfg: FitConfig, i: int) -> float:
    """Noise anti-annealing factor: 1 / (1 + c exp(-tau i / steps)), rising to ~1."""
    return float(1.0 / (1.0 + cfg.noise_c * math.exp(-cfg.noise_tau * i / cfg.steps)))


# ----------------------------------------------------------------------------------------
# the problem: everything a step reads that does not change during the fit
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class FitProblem:
    """A prepared fit (immutable). obs_train (n_train, D), obs_val (n_val, D): standardized
    features of the observed catalog's training and validation splits."""

    cfg: FitConfig
    model: forward.ForwardModel
    observation: Observation
    flow_cfg: flows.FlowConfig
    obs_train: jax.Array
    obs_val: jax.Array
    loss_fn: Any
    val_loss_fn: Any
    prior_table: Any = None  # the "physical" prior's reference sSFR table (prior.ssfr_reference_table), else None
    screen: Any = None  # visible_draws.VisibleScreen of the limits when cfg.oversample > 1, else None

    @property
    def bands(self) -> tuple:
        return self.observation.bands

    @property
    def noise(self) -> NoiseModel:
        return self.observation.noise

    @property
    def statics(self):
        """The arrays the jitted functions read (forward model, observation): passed as
        arguments, never closed over (XLA would constant-fold them)."""
        return (self.model, self.observation, self.screen)

    @functools.cached_property
    def _validator(self):
        return jax.jit(self._validate_members)

    @functools.cached_property
    def _validate_members(self):
        def members(params, st, obs_val, eps, key):
            keys = jnp.broadcast_to(key, (jax.tree_util.tree_leaves(params)[0].shape[0],) + key.shape)
            _, feats, w, _, _, _ = simulate_members(self, st, params, keys, self.cfg.n_val, 1.0)
            one = lambda x, ww: self.val_loss_fn(x, obs_val, eps, key, a=ww)[0]  # noqa: E731
            return jax.vmap(one, in_axes=(0, None if w is None else 0))(feats, w)

        return members


class FitState(NamedTuple):
    """The explicit state of a fit: stacked member parameters and optimizer states (leading
    axis K), the number of steps done, and the root PRNG key of the step keys."""

    params: Any
    opt_state: Any
    step: int
    key: jax.Array


def make_loss_fn(kind: str, n_projections: int = 128, solver: str = "scaling"):
    """The loss behind the common interface, with loss.py's default solver settings."""
    return loss_mod.make_loss(loss_mod.LossConfig(kind=kind, n_projections=n_projections, solver=solver))


ACCELERATOR_BACKENDS = ("gpu", "cuda", "rocm", "tpu")


def training_loss(cfg: FitConfig, backend: str | None = None) -> dict:
    """The training loss ``cfg.loss`` means on ``backend`` (default: JAX's): {"kind", "solver",
    "backend"}. ``"auto"`` is the sliced W2 on CPU, measured the better loss there (faster, and a
    better SDSS n(z) than Sinkhorn: docs/validation.md#choice-of-training-loss), and on GPU/TPU the
    debiased Sinkhorn divergence with blur annealing through ott-jax's solver (the design; not yet
    timed against this package's solver on an accelerator: benchmarks/gpu.py does that)."""
    backend = backend or jax.default_backend()
    kind, solver = cfg.loss, "scaling"
    if kind == "auto":
        kind, solver = ("sinkhorn", "ott") if backend in ACCELERATOR_BACKENDS else ("sliced", "scaling")
    return {"kind": kind, "solver": solver, "backend": backend}


def fit_bands(cfg: FitConfig, bands) -> tuple:
    """The bands of ``bands`` the fit's loss (and a galaxy's posterior) uses: all but
    ``cfg.selection_bands``, which serve the survey limit only; a ValueError naming a selection
    band the catalog lacks, or if no band is left."""
    bands = tuple(bands)
    missing = [b for b in cfg.selection_bands if b not in bands]
    if missing:
        raise ValueError(f"selection band(s) {missing} are not among the catalog's bands {list(bands)}: the limit "
                         f"{cfg.limit!r} needs them (for the shipped SDSS file they are added when it is read)")
    out = tuple(b for b in bands if b not in cfg.selection_bands)
    if not out:
        raise ValueError(f"every catalog band {list(bands)} is a selection band: nothing is left to fit")
    return out


def prepare(cat: Catalog, cfg: FitConfig, noise_model: NoiseModel | None = None, grid=None, bases=None) -> FitProblem:
    """Select the catalog, fit the noise model, build the forward model, the features and the split."""
    if cfg.limit:
        cat = select_catalog(cat, cfg.limit)
    # the validation divergence's cost grows with the split: at most VAL_MAX galaxies, the rest train
    n_val = min(int(round(cfg.val_fraction * cat.n)), VAL_MAX)
    n_train = cat.n - n_val
    if n_train < cfg.batch_obs or n_val < 2:
        raise ValueError(
            f"catalog has {cat.n} galaxies after selection ({n_train} for training, {n_val} for validation); "
            f"the observed minibatch needs {cfg.batch_obs}: lower batch_obs or use a larger catalog"
        )
    noise = noise_model if noise_model is not None else fit_noise_model(cat)
    if tuple(noise.bands) != tuple(cat.bands):
        raise ValueError(f"noise model bands {noise.bands} differ from the catalog's {cat.bands}")
    observation = make_observation(noise, cfg.limit, colours=cfg.colours, selection_width=cfg.selection_width,
                                   feature_bands=fit_bands(cfg, cat.bands))
    feats = np.asarray(features(observation, jnp.asarray(cat.flux, jnp.float32)))
    perm = np.random.default_rng(cfg.seed + 12345).permutation(cat.n)
    tr, va = perm[:n_train], perm[n_train:]
    stats = tuple(np.asarray(s) for s in feature_stats(feats[tr]))
    std = lambda x: jnp.asarray((x - stats[0]) / stats[1], jnp.float32)  # noqa: E731
    model = forward_model_for(cfg, cat.bands, grid=grid, bases=bases)
    tl = training_loss(cfg)
    observation = dataclasses.replace(observation, mean=jnp.asarray(stats[0], jnp.float32), std=jnp.asarray(stats[1], jnp.float32))
    fc = flow_config(cfg)
    table = ssfr_reference_table(model, fc.lo, fc.hi) if cfg.prior == "physical" else None
    if cfg.prior == "mzr+smf-colour":
        ur_band_indices(model.bands)  # refuse now, not inside the first jitted step
    screen = make_screen(model, observation) if cfg.oversample > 1 else None
    return FitProblem(cfg, model, observation, fc, std(feats[tr]), std(feats[va]),
                      make_loss_fn(tl["kind"], cfg.n_projections, tl["solver"]), make_loss_fn(cfg.val_loss), table, screen)


# ----------------------------------------------------------------------------------------
# simulation and the loss
# ----------------------------------------------------------------------------------------
def simulate_members(problem: FitProblem, st, params, keys, n: int, noise_scale=1.0):
    """K members at once: flow samples -> noisy fluxes -> standardized features and weights.

    st = problem.statics; params stacked (leading axis K); keys (K, 2). Returns theta
    (K, n, 11), features (K, n, D), selection weights (K, n) (each member's sum to 1) or None,
    noisy fluxes (K, n, B), the Monte-Carlo KL(q_phi || prior) per member (K,) and the log of
    the population's mean soft selection probability per member (K,; 0 without a limit), the prior
    being ``problem.cfg.prior`` (KL(q || p_ref) - E_q[log(prior / p_ref)]; the colour-typed
    prior's rest-frame colours come from the forward model's own spectra).

    Only the flow is vmapped over members. The per-galaxy steps (forward model, features,
    selection) take all K n samples as one batch: under ``vmap`` XLA's CPU backward pass of
    the forward model was measured 1.9x slower than the same call unbatched, even for K = 1.
    """
    model, obs, screen = st
    ks = jax.vmap(jax.random.split)(keys)
    cfg = problem.cfg
    if screen is None:
        theta, log_ratio = jax.vmap(flows.sample_and_log_ratio, in_axes=(0, 0, None, None))(params, ks[:, 0], n, problem.flow_cfg)
        kl_w = None
    else:
        theta, log_ratio, kl_w = _visible_draws(problem, model, screen, params, ks[:, 0], n)
    k = theta.shape[0]
    # on CPU one member's n samples at a time (lax.map) stay in cache; accelerators take all K n at once
    chunk = n if jax.default_backend() == "cpu" else None
    colour = cfg.prior == "mzr+smf-colour"  # its rest-frame colours come from the same spectra
    out = forward.forward_fluxes(model, theta.reshape(k * n, -1), chunk_size=chunk, with_rest=colour)
    flux, rest = out if colour else (out, None)
    flux = flux.reshape(k, n, -1)
    mean = (lambda v: jnp.mean(v, axis=-1)) if kl_w is None else (lambda v: jnp.sum(kl_w * v, axis=-1))  # noqa: E731
    kl = mean(log_ratio)
    if cfg.prior != "flat":  # KL(q || prior) = KL(q || p_ref) - E_q[log(prior / p_ref)]
        kl = kl - mean(log_prior_ratio(theta, cfg.prior, problem.flow_cfg.lo, problem.flow_cfg.hi, model,
                                       problem.prior_table, None if rest is None else rest.reshape(k, n, -1),
                                       cfg.mass_function))
    noisy, _ = jax.vmap(lambda f, kk: noisy_fluxes(obs, f, kk, noise_scale))(flux, ks[:, 1])
    flat = noisy.reshape(k * n, -1)
    feats = features(obs, flat).reshape(k, n, -1)
    logw = selection_log_weights(obs, flat)
    # normalised in log space: a population entirely below the limit (all weights ~1e-26,
    # seen in short fits) keeps finite gradients instead of overflowing w / sum(w)
    w = None if logw is None else jax.nn.softmax(logw.reshape(k, n), axis=-1)
    if logw is None:
        log_psel = jnp.zeros(k, flat.dtype)
    else:  # E_q[P(sel)]: the plain mean, or the stratified one of oversampled draws
        lw = logw.reshape(k, n) + (-jnp.log(float(n)) if kl_w is None else jnp.log(jnp.maximum(kl_w, 1e-30)))
        log_psel = jax.scipy.special.logsumexp(lw, axis=-1)
    return theta, feats, w, noisy, kl, log_psel


def _visible_draws(problem: FitProblem, model, screen, params, keys, n: int):
    """n draws per member chosen from oversample x n draws, mostly where the survey can see
    (``visible_draws``): theta (K, n, 11), log(q / p_ref) (K, n) and the draws' weights in the
    stratified KL estimate (K, n). Only the chosen draws carry gradients."""
    fc = problem.flow_cfg
    m = n * problem.cfg.oversample
    base = jax.vmap(lambda kk: jax.random.normal(kk, (m, fc.dim), flows._dtype(params)))(keys)
    frozen = jax.lax.stop_gradient(params)
    theta_all = jax.vmap(lambda p, zz: flows.push_and_log_ratio(p, zz, fc)[0])(frozen, base)
    k = theta_all.shape[0]
    visible = screen_visible(model, screen, theta_all.reshape(k * m, -1)).reshape(k, m)
    idx, kl_w = jax.vmap(stratified_pick, in_axes=(0, None))(visible, n)
    chosen = jnp.take_along_axis(base, idx[..., None], axis=1)
    theta, log_ratio = jax.vmap(flows.push_and_log_ratio, in_axes=(0, 0, None))(params, chosen, fc)
    return theta, log_ratio, kl_w


# largest validation split (galaxies): the validation Sinkhorn divergence holds dense
# (n_val x n_val) matrices for the data's own term, 5.6 GB of peak memory at 20,000; at 8,192
# the split is still 4x the n_val simulated points, which dominate the estimate's noise
VAL_MAX = 8_192
EXACT_MINIBATCH_MAX = 65_536  # above this many observed galaxies, minibatches are drawn with replacement


def minibatch_index(key, n: int, b: int):
    """Indices (b,) of one observed minibatch out of n galaxies: without replacement up to
    ``EXACT_MINIBATCH_MAX`` (``jax.random.choice`` permutes all n: O(n log n) a step), with
    replacement above (O(b), so a step costs the same for 1e4 or 1e8 galaxies; repeats are
    rare there: b^2 / 2n ~ 2 of 2048 at n = 1e6)."""
    if n <= EXACT_MINIBATCH_MAX:
        return jax.random.choice(key, n, (b,), replace=False)
    return jax.random.randint(key, (b,), 0, n)


def _members_loss(problem: FitProblem, st, params, keys, obs_all, eps, noise_scale):
    """Per-member training loss (K,), aux and the effective number of simulated draws (K,), for
    stacked params and keys (K, 2): each member gets its own samples, observed minibatch and loss
    key; the members are independent, so the gradient of the sum is each member's own gradient.
    The effective number is (sum w)^2 / sum w^2 of the selection weights (n_sim without a limit):
    how many selected draws carry the step's loss."""
    cfg = problem.cfg
    ks = jax.vmap(lambda kk: jax.random.split(kk, 3))(keys)
    theta, feats, w, _, kl, log_psel = simulate_members(problem, st, params, ks[:, 0], cfg.n_sim, noise_scale)
    idx = jax.vmap(lambda kk: minibatch_index(kk, obs_all.shape[0], cfg.batch_obs))(ks[:, 1])

    def one(x, y, kk, ww):
        return problem.loss_fn(x, y, eps, kk, a=ww)

    val, aux = jax.vmap(one, in_axes=(0, 0, 0, None if w is None else 0))(feats, obs_all[idx], ks[:, 2], w)
    if cfg.kl_weight > 0:
        val = val + cfg.kl_weight * kl
    if cfg.min_selected_fraction > 0:  # the loss is blind to how much of q is selectable: keep enough selected draws
        val = val + jnp.square(jax.nn.relu(math.log(cfg.min_selected_fraction) - log_psel))
    ess = jnp.full(val.shape, float(cfg.n_sim)) if w is None else 1.0 / jnp.sum(jax.lax.stop_gradient(w) ** 2, axis=-1)
    return val, aux, ess


def make_optimizer(cfg: FitConfig):
    sched = optax.cosine_onecycle_schedule(transition_steps=cfg.steps, peak_value=cfg.lr, pct_start=0.3)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))


def _core_step(problem: FitProblem, tx, mesh=None):
    """The jitted ensemble update: (params[K], opt_state[K], keys[K], statics, obs, eps, noise)
    -> (params, opt_state, losses (K,), grad norms (K,), converged (K,), effective draws (K,))."""

    def vstep(params, opt_state, keys, st, obs_all, eps, noise_scale):
        def total(p):
            val, aux, ess = _members_loss(problem, st, p, keys, obs_all, eps, noise_scale)
            return jnp.sum(val), (val, aux, ess)

        (_, (val, aux, ess)), grads = jax.value_and_grad(total, has_aux=True)(params)
        gnorm = jax.vmap(optax.global_norm)(grads)
        updates, opt_state = jax.vmap(tx.update)(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        conv = jnp.broadcast_to(jnp.asarray(aux.get("converged", True)), val.shape) if isinstance(aux, dict) else jnp.ones(val.shape, bool)
        return params, opt_state, val, gnorm, conv, ess

    if mesh is None:
        return jax.jit(vstep)
    from jax.sharding import PartitionSpec as P

    sharded = jax.shard_map(vstep, mesh=mesh, in_specs=(P("ens"), P("ens"), P("ens"), P(), P(), P(), P()), out_specs=P("ens"), check_vma=False)
    return jax.jit(sharded)


def ensemble_mesh(k: int):
    """A 1-D device mesh over the ensemble axis when several devices can split K evenly. In a
    distributed run (``popsed_jax.inference.distributed``) ``jax.devices()`` are every process's:
    the mesh spans them all and each process computes the members of its own devices."""
    n = len(jax.devices())
    if n <= 1 or k % n != 0:
        return None
    return jax.make_mesh((n,), ("ens",), axis_types=(jax.sharding.AxisType.Auto,))


def member_keys(key, k: int, i: int):
    """(K, 2) keys of step i: fold_in(fold_in(key, member), i)."""
    return jnp.stack([jax.random.fold_in(jax.random.fold_in(key, m), i) for m in range(k)])


def init(problem: FitProblem) -> FitState:
    """Fresh member parameters (stacked, leading axis K) and optimizer states, at step 0."""
    cfg = problem.cfg
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed + 777), cfg.members)
    params = jax.vmap(lambda kk: flows.init_flow(kk, problem.flow_cfg))(keys)
    opt_state = jax.vmap(make_optimizer(cfg).init)(params)
    return FitState(params, opt_state, 0, jax.random.PRNGKey(cfg.seed))


def make_step(problem: FitProblem, mesh=None):
    """-> step(state) -> (new state, metrics): one optimisation step of every member.

    metrics: loss (K,), grad_norm (K,), converged (K,), ess (K,: the effective number of selected
    draws, ``_members_loss``) as numpy, and the schedule values epsilon and noise_scale of the step. The function has no side effects: the caller decides
    whether to accept the new state (e.g. after checking the metrics for NaN)."""
    cfg = problem.cfg
    core = _core_step(problem, make_optimizer(cfg), mesh)

    def step(state: FitState):
        i = int(state.step)
        eps, ns = epsilon_at(cfg, i), noise_scale_at(cfg, i)
        keys = member_keys(state.key, cfg.members, i)
        params, opt_state, loss_v, gnorm, conv, ess = core(state.params, state.opt_state, keys, problem.statics, problem.obs_train,
                                                      jnp.float32(eps), jnp.float32(ns))
        # members spread over several processes are gathered, so every process sees all of them
        loss_v, gnorm, conv, ess = to_host((loss_v, gnorm, conv, ess))
        metrics = {"loss": loss_v, "grad_norm": gnorm, "converged": conv, "ess": ess, "epsilon": eps, "noise_scale": ns}
        return FitState(params, opt_state, i + 1, state.key), metrics

    return step


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------
def validate(problem: FitProblem, params, eps: float, seed: int = 999, mesh=None) -> np.ndarray:
    """Per-member divergence between simulated (real noise) and held-out observed features. (K,)

    ``mesh``: validate each device's members on that device (``shard_map`` over "ens", as the
    step); for params spread over several processes, whose results are then gathered."""
    key = jax.random.PRNGKey(seed)
    fn = problem._validator if mesh is None else _sharded_validator(problem, mesh)
    return to_host(fn(params, problem.statics, problem.obs_val, jnp.float32(eps), key))


@functools.lru_cache(maxsize=8)
def _sharded_validator(problem: FitProblem, mesh):
    from jax.sharding import PartitionSpec as P

    return jax.jit(jax.shard_map(problem._validate_members, mesh=mesh, in_specs=(P("ens"), P(), P(), P(), P()), out_specs=P("ens"),
                                 check_vma=False))


def data_floor(problem: FitProblem, eps: float, seed: int = 998) -> float:
    """Divergence between a training subsample and the validation split: the noise floor."""
    key = jax.random.PRNGKey(seed)
    n = min(problem.cfg.n_val, problem.obs_train.shape[0])
    idx = jax.random.choice(key, problem.obs_train.shape[0], (n,), replace=False)
    v, _ = jax.jit(lambda x, y: problem.val_loss_fn(x, y, eps, key))(problem.obs_train[idx], problem.obs_val)
    return float(v)


# ----------------------------------------------------------------------------------------
# sampling the population, observed through the survey
# ----------------------------------------------------------------------------------------
@jax.jit
def _observe(model, obs: Observation, theta, key):
    flux = forward.forward_fluxes(model, theta, chunk_size=16384)
    noisy, _ = noisy_fluxes(obs, flux, key)
    return noisy, is_selected(obs, noisy, jax.random.fold_in(key, 1))  # its own key: the noise draws stay as they were


_derived = jax.jit(forward.derived_quantities)


def observe_theta(model, obs: Observation, theta, key):
    """Noisy fluxes (N, B) of parameters theta (N, 11) and whether each passes the hard selection (N,)."""
    noisy, sel = _observe(model, obs, jnp.asarray(theta, jnp.float32), key)
    return np.asarray(noisy), np.asarray(sel)


def sample(problem: FitProblem, params, n_per_member: int, seed: int = 4242) -> dict[str, np.ndarray]:
    """Pooled samples of theta from every member, with derived quantities, the noisy fluxes
    they would be observed with, a ``selected`` flag (passes the survey limit) and ``member``."""
    k = jax.tree_util.tree_leaves(params)[0].shape[0]
    cols: dict[str, list] = {}
    draw = jax.jit(flows.sample_flow, static_argnums=(2, 3))  # compiled once for all members
    for m in range(k):
        p = jax.tree_util.tree_map(lambda x: x[m], params)
        theta = np.asarray(draw(p, jax.random.PRNGKey(seed + m), n_per_member, problem.flow_cfg))
        noisy, sel = observe_theta(problem.model, problem.observation, theta, jax.random.PRNGKey(seed + 1000 + m))
        d = theta_to_columns(theta)
        d.update({f"flux_{b}": noisy[:, j] for j, b in enumerate(problem.bands)})
        d["selected"] = sel
        d.update({kk: np.asarray(v) for kk, v in _derived(problem.model, jnp.asarray(theta, jnp.float32)).items() if kk not in d})
        d["member"] = np.full(n_per_member, m, np.int16)
        for kk, v in d.items():
            cols.setdefault(kk, []).append(np.asarray(v))
    return {kk: np.concatenate(v) for kk, v in cols.items()}


def draw_reference(cfg: FitConfig, n: int, seed: int) -> np.ndarray:
    """n draws theta (n, 11) from the flow's starting distribution: uniform on the box, with z
    uniform in comoving volume when ``cfg.z_prior == "volume"``."""
    fc = flow_config(cfg)
    lo, hi = box_bounds(cfg)
    u = np.random.default_rng(seed).random((n, lo.size))
    theta = lo + (hi - lo) * u
    if fc.z_volume:
        zt, F, _ = flows.volume_table(fc.lo[0], fc.hi[0])
        theta[:, 0] = np.interp(u[:, 0], F, zt)
    return theta


def sample_prior(cfg: FitConfig, model, obs: Observation, n: int, seed: int = 5) -> dict[str, np.ndarray]:
    """Draws from the flow's starting distribution (:func:`draw_reference`), observed through
    ``obs``; the selected rows, with derived quantities."""
    theta = draw_reference(cfg, n, seed)
    _, sel = observe_theta(model, obs, theta, jax.random.PRNGKey(seed))
    d = theta_to_columns(theta)
    d.update({kk: np.asarray(v) for kk, v in forward.derived_quantities(model, theta).items() if kk not in d})
    return {kk: np.asarray(v)[sel] for kk, v in d.items()}
