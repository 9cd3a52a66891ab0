"""Distances between simulated and observed feature clouds: Sinkhorn divergence, sliced W2.

Everything here is a pure, jit-able and vmap-able JAX function of arrays, float32 by
default (float64 when given float64 inputs under ``jax.enable_x64``), differentiable with
respect to the simulated points ``x`` (n, d) and their weights ``a`` (n,). The observed
points ``y`` (m, d) and weights ``b`` are data: pass them as arguments (closing over a large
array makes XLA constant-fold the n x m cost matrix).

Cost convention
---------------
The ground cost is the plain squared Euclidean distance ``c(x, y) = |x - y|^2`` (ott-jax's
``SqEuclidean``), **not** geomloss's ``|x - y|^2 / 2``. ``epsilon`` is absolute, in the
same units: a geomloss ``SamplesLoss("sinkhorn", p=2, blur=s)`` corresponds to
``epsilon = 2 s^2`` here and returns half our value. The entropic term is
``epsilon KL(P | a x b)``, so

    OT_eps(a, b) = min_P <P, C> + eps KL(P | a b^T)
    S_eps(a, b)  = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2     (debiased, >= 0)

For two clouds that differ by a translation ``t`` (and small epsilon) ``S ~ |t|^2``.

How a Sinkhorn divergence is computed (the speed levers)
--------------------------------------------------------
Default ``solver="scaling"``: this module's Sinkhorn in scaling form.

* Scaling form with absorption (Schmitzer 2019): the Gibbs kernel
  K = exp((f_i + g_j - C_ij)/eps) is built once per *epoch*, stabilized by the current
  potentials; each iteration is then two matrix-vector products with K (no exponentials,
  several times cheaper than a log-sum-exp pass; measurements in docs/benchmarks.md). When a scaling
  leaves [e^-10, e^10] it is folded into the potentials, f is reset to the exact soft
  c-transform of g and K rebuilt. Non-finite scalings are undone and the relaxation halved.
* Over-relaxation omega = 1.9 (``momentum``; Thibault et al. 2017, Lehmann et al. 2022), in
  log space: u <- u^(1-omega) (a / K v)^omega.
* x-y problem, cold start: an *epsilon ladder* (``eps_scaling`` values, geometric from the
  squared diameter of the clouds down to the target, each solved to a loose 1e-2 marginal
  error and warm-starting the next), then the target epsilon to ``threshold``.
  Why: on clustered clouds the slowest Sinkhorn mode is the mass balance *between*
  clusters; it converges fast at large epsilon and survives the descent, while a plain
  solve at epsilon = 0.01 leaves it wrong for thousands of iterations (the value is then
  several % off although the marginal error looks small). Measured on benchmarks/loss.py's
  clouds (4,000 points a side, 5-D, eps = 0.01): plain Sinkhorn after 2,000 iterations is
  2% low; omega = 1.8 after 3,000 is 0.5% low; ladder + omega = 1.9 converges (1e-3) in ~430.
* x-x and y-y problems: averaged symmetric updates p <- (p + T(p))/2 (one matrix-vector
  product each in scaling form), no ladder: they converge in a few iterations at any epsilon.
* Everything is while-loops and selects (no ``lax.cond``) and the kernel is closed over,
  not carried, so that the ensemble's ``vmap`` costs no more than one call per member.
* ``info.converged`` says whether each solve at the target met ``threshold`` within
  ``max_iterations``.

``solver="ott"``: the same ladder with ott-jax's
:class:`~ott.solvers.linear.sinkhorn.Sinkhorn` (lse mode, ``Momentum(value=omega)``, 1.8),
kept as a cross-check; it is slower and stalls above 1e-4 marginal error on very uneven
weights in float32. ott-jax's ``sinkdiv`` is also the independent reference of the tests.

The cost matrix is built once per problem (a ``PointCloud`` geometry recomputes it on
every iteration, about 2x slower). Potentials come out of the solver without gradients;
the value is then evaluated with the *semi-dual* formula
``OT = <a, T(g)> + <b, g>`` with ``T`` the soft c-transform over the live points, whose
gradient with respect to ``x``, ``a`` (and ``y``) is exactly Danskin's (envelope) gradient,
and whose error is second order in the error of ``g`` (the semi-dual is maximal at the
solution, so a partly converged solve gives a slight *under*-estimate). Nothing is
differentiated through the solver (no unrolling, no implicit linear systems). That
c-transform of the live points has a hand-written VJP (matrix products with the
row-normalized plan; autodiff of the log-sum-exp reduced the (n, m) array along its
non-minor axis, 6x slower under vmap).

Warm starts: ``return_state=True`` gives a :class:`SinkhornState` (points, weights and
potentials); pass it back as ``init`` on the next call. The previous potentials are
extended to the new points as functions (soft c-transforms over the old points), so the
points and their number may change between calls; the ladder is skipped then.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import acceleration, sinkhorn

__all__ = [
    "sqeuclidean_cost", "c_transform", "SinkhornState", "SinkhornInfo", "DataSelfTerm",
    "sinkhorn_divergence", "entropic_ot", "data_self_term", "sliced_wasserstein",
    "LossConfig", "make_loss", "DEFAULT_EPSILON_SCHEDULE",
]

#: A blur schedule the fit can use (epsilon in |x-y|^2 units of standardized features).
#: Costs per value are measured by benchmarks/loss.py.
DEFAULT_EPSILON_SCHEDULE = (0.3, 0.1, 0.03, 0.01)

Array = jax.Array


# ----------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------
def sqeuclidean_cost(x: Array, y: Array) -> Array:
    """(n, m) matrix |x_i - y_j|^2, via |x|^2 + |y|^2 - 2 x.y, clamped at 0."""
    c = jnp.sum(x * x, -1)[:, None] + jnp.sum(y * y, -1)[None, :] - 2.0 * (x @ y.T)
    return jnp.maximum(c, 0.0)


def _safe_log(w: Array) -> Array:
    """log w with -inf where w == 0 and a zero (not NaN) gradient there."""
    pos = w > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, w, 1.0)), -jnp.inf)


def _lse_rows(z: Array, w: Array) -> Array:
    """log sum_j w_j exp(z_ij) for each row of z (n, m); w (m,) >= 0, zero = column absent.

    Shifted by the row max of z_ij + log w_j, so weights spanning any number of decades
    (soft selection weights) neither underflow nor overflow; the masking is done on the (m,)
    vector, never with a ``where`` over the (n, m) array (10x slower under vmap, measured).
    """
    zw = z + _safe_log(w)[None, :]
    m = jax.lax.stop_gradient(jnp.max(zw, axis=1))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    return jnp.log(jnp.sum(jnp.exp(zw - m[:, None]), axis=1)) + m


def c_transform(g: Array, cost: Array, b: Array, epsilon) -> Array:
    """Soft c-transform: f_i = -eps log sum_j b_j exp((g_j - C_ij) / eps). (n,)"""
    return -epsilon * _lse_rows((g[None, :] - cost) / epsilon, b)


@jax.custom_vjp
def _c_transform_points(g: Array, x: Array, y: Array, b: Array, epsilon) -> Array:
    """c_transform(g, |x_i - y_j|^2, b, eps) as a function of the points, (n,).

    Its VJP is written with the row-normalized kernel E_ij = exp((g_j - C_ij)/eps - lse_i)
    (pi = E b, rows of pi sum to 1; E clamped at e^70) and matrix products only: d f_i/d x_i = 2 (x_i - (pi y)_i),
    d f_i/d y_j = -2 pi_ij (x_i - y_j), d f_i/d g_j = -pi_ij, d f_i/d b_j = -eps E_ij. Autodiff
    of the lse went through (n, m) reductions along the non-minor axis, 6x slower under vmap.
    """
    return c_transform(g, sqeuclidean_cost(x, y), b, epsilon)


def _ctp_fwd(g, x, y, b, epsilon):
    z = (g[None, :] - sqeuclidean_cost(x, y)) / epsilon
    lse = _lse_rows(z, b)
    return -epsilon * lse, (g, x, y, b, epsilon, lse)


def _ctp_bwd(res, ct):
    g, x, y, b, epsilon, lse = res
    z = (g[None, :] - sqeuclidean_cost(x, y)) / epsilon - lse[:, None]
    pi = jnp.exp(z + _safe_log(b)[None, :])  # (n, m), rows sum to 1
    e_mat = jnp.exp(jnp.minimum(z, _MAX_LOG_KERNEL))  # d f / d b: large (not inf) for tiny weights
    ct_pi = ct @ pi  # (m,): sum_i ct_i pi_ij
    ct_x = 2.0 * ct[:, None] * (x - pi @ y)
    ct_y = 2.0 * (ct_pi[:, None] * y) - 2.0 * ((ct[:, None] * pi).T @ x)
    return -ct_pi, ct_x, ct_y, -epsilon * (ct @ e_mat), jnp.zeros_like(epsilon)


_c_transform_points.defvjp(_ctp_fwd, _ctp_bwd)


def _normalize(w: Optional[Array], n: int, dtype) -> Array:
    if w is None:
        return jnp.full((n,), 1.0 / n, dtype)
    w = jnp.asarray(w, dtype)
    return w / jnp.sum(w)


class _Solved(NamedTuple):
    g: Array  # (m,) column potential, log-weights removed (finite where b > 0, else 0)
    f: Array  # (n,) row potential, same convention
    converged: Array
    iterations: Array
    error: Array


_LADDER_THRESHOLD = 1e-2  # marginal-error tolerance at the intermediate epsilons
_LADDER_MAX_ITERATIONS = 200  # cap per intermediate epsilon
_SAFE_MOMENTUM = 1.2  # over-relaxation of the rescue solve at the target epsilon


def _sinkhorn(threshold, max_iterations, inner_iterations, momentum, symmetric):
    if symmetric:  # x-x or y-y: averaged parallel updates (ott's choice for these terms)
        return sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations,
                                 inner_iterations=inner_iterations, parallel_dual_updates=True,
                                 momentum=acceleration.Momentum(value=0.5))
    return sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations,
                             inner_iterations=inner_iterations,
                             momentum=acceleration.Momentum(value=momentum))


def _solve_ott(cost, a, b, epsilon, eps_start, *, init, eps_scaling, momentum, threshold,
           max_iterations, inner_iterations, symmetric=False) -> _Solved:
    """Solve one entropic OT problem with ott's Sinkhorn (``solver="ott"``); no gradients flow out.

    Cold start: an epsilon ladder, ``eps_scaling`` values geometric between ``eps_start``
    and ``epsilon`` (excluded), each solved to ``_LADDER_THRESHOLD`` (a lax.scan of ott
    solves, each warm-started from the previous), then ``epsilon`` to ``threshold``.
    ``init``: None or (f, g) potentials without log-weights. Returns potentials without
    log-weights (the geomloss convention: P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps)).
    """
    cost, a, b, epsilon, eps_start = jax.lax.stop_gradient((cost, a, b, epsilon, eps_start))
    la, lb = jnp.log(a), jnp.log(b)
    n_pre = jnp.asarray(0, jnp.int32)
    if init is None:
        f0, g0 = jnp.zeros_like(a), jnp.zeros_like(b)
        if eps_scaling > 0:
            k = jnp.arange(eps_scaling, dtype=cost.dtype)
            ladder = eps_start * (epsilon / eps_start) ** (k / eps_scaling)
            mid = _sinkhorn(_LADDER_THRESHOLD, _LADDER_MAX_ITERATIONS, inner_iterations, momentum, symmetric)

            def level(carry, e):
                out = mid(linear_problem.LinearProblem(geometry.Geometry(cost_matrix=cost, epsilon=e), a=a, b=b),
                          init=carry)
                return (out.f, out.g), out.n_iters

            (f0, g0), its = jax.lax.scan(level, (f0, g0), ladder)
            n_pre = jnp.sum(its)
    else:
        fi, gi = init
        f0 = jnp.where(a > 0, fi + epsilon * la, -jnp.inf)
        g0 = jnp.where(b > 0, gi + epsilon * lb, -jnp.inf)
    prob = linear_problem.LinearProblem(geometry.Geometry(cost_matrix=cost, epsilon=epsilon), a=a, b=b)
    if symmetric or momentum == _SAFE_MOMENTUM:
        out = _sinkhorn(threshold, max_iterations, inner_iterations, momentum, symmetric)(prob, init=(f0, g0))
        n_iters = out.n_iters
    else:
        # over-relaxed solve, then a safe one from where it stopped: the latter stops after
        # one check (inner_iterations) when the former converged, and rescues the rare
        # cases (e.g. very uneven weights) where omega ~ 1.8 stalls
        cap = max(max_iterations // 2, inner_iterations)
        out = _sinkhorn(threshold, cap, inner_iterations, momentum, False)(prob, init=(f0, g0))
        n_iters = out.n_iters
        out = _sinkhorn(threshold, max(max_iterations - cap, inner_iterations), inner_iterations,
                        _SAFE_MOMENTUM, False)(prob, init=(out.f, out.g))
        n_iters = n_iters + out.n_iters
    g = jnp.where(b > 0, out.g - epsilon * lb, 0.0)
    f = jnp.where(a > 0, out.f - epsilon * la, 0.0)
    errs = out.errors
    last = jnp.max(jnp.where(errs >= 0, jnp.arange(errs.shape[0]), 0))
    err = errs[last]
    # ott reports converged=True when a solve stops because its error became inf (diverged)
    converged = jnp.logical_and(out.converged, jnp.isfinite(err) & (err < threshold))
    converged = converged & jnp.all(jnp.isfinite(f)) & jnp.all(jnp.isfinite(g))
    return _Solved(g, f, converged, n_iters + n_pre, err)



_ABSORB_LOG = 10.0  # fold the scalings into the potentials when |log u| or |log v| exceeds this
_TINY = 1e-30  # floor of the kernel sums: an underflowed sum gives log-scaling ~69, i.e. a refold


_MAX_LOG_KERNEL = 70.0  # e^70 ~ 2.5e30: sums of 1e5 such entries stay finite in float32


def _kernel(cost, f, g, epsilon):
    """exp((f_i + g_j - C_ij) / eps): the Gibbs kernel stabilized by the potentials (n, m).

    With f the exact c-transform of g, K_ij <= 1 / b_j; the clamp only bites on pairs of
    points of (near-)zero weight, e.g. K_ii = 1 / a_i of an isolated point in OT(a, a).
    """
    return jnp.exp(jnp.minimum((f[:, None] + g[None, :] - cost) / epsilon, _MAX_LOG_KERNEL))


def _relax(old, new, w):
    """Over-relaxed scaling old^(1-w) new^w, in log space."""
    return jnp.exp((1 - w) * jnp.log(old) + w * jnp.log(new))


_STALL_WINDOW = 50  # iterations between two progress checks of the marginal error
_STALL_RATIO = 0.9  # less progress than this over a window: omega - 1 is halved


def _epochs(step, fold, f, g, omega, max_iterations, threshold, dt):
    """Shared driver of the scaling-form solvers.

    An *epoch*: ``fold`` re-stabilizes (potentials, kernel) and returns scalings equal to 1;
    then ``step`` iterations run until the marginal error is below ``threshold``, a scaling
    leaves [e^-10, e^10] (next epoch folds it in) or an iteration gives a non-finite value
    (it is undone and omega - 1 halved), or ``max_iterations`` is spent. Over-relaxation can
    also oscillate without diverging (seen on an SDSS minibatch: omega = 1.9 stuck at error
    0.15 for 2,000 iterations where 1.5 converged in 62): when the error has not fallen below
    0.9x its value of 50 iterations before, omega - 1 is halved. Written with while-loops and
    selects only (no lax.cond), so that under ``vmap`` no branch is evaluated for nothing.
    """
    inf = jnp.asarray(jnp.inf, dt)

    def inner_cond(s):
        _, _, it, err, stop, _ = s
        return (it < max_iterations) & ~(err < threshold) & ~stop

    def outer_cond(s):
        _, _, _, it, err, _ = s
        return (it < max_iterations) & ~(err < threshold)

    def outer_body(s):
        f, g, w, it, err, ref = s
        f, g, k, uv = fold(f, g)

        # k is closed over, not carried: under vmap a carried (n, m) array would be
        # select-copied on every iteration (4x slower, measured)
        def inner_body(s):
            uv, w, it, err, _, ref = s
            uv2, err2 = step(k, uv, w)
            bad = ~(jnp.all(jnp.stack([jnp.all(jnp.isfinite(t)) for t in uv2])) & jnp.isfinite(err2))
            big = jnp.max(jnp.stack([jnp.max(jnp.abs(jnp.log(t))) for t in uv2])) > _ABSORB_LOG
            uv = jax.tree_util.tree_map(lambda o, n: jnp.where(bad, o, n), uv, uv2)
            err = jnp.where(bad, err, err2)
            check = (it + 1) % _STALL_WINDOW == 0
            stalled = check & ~(err < _STALL_RATIO * ref)
            w = jnp.where(bad | stalled, 1 + 0.5 * (w - 1), w)
            ref = jnp.where(check, err, ref)
            return uv, w, it + 1, err, bad | big, ref

        uv, w, it, err, _, ref = jax.lax.while_loop(inner_cond, inner_body, (uv, w, it, inf, jnp.asarray(False), ref))
        f, g = fold.absorb(f, g, uv)
        return f, g, w, it, err, ref

    f, g, _, it, err, _ = jax.lax.while_loop(
        outer_cond, outer_body, (f, g, jnp.asarray(omega, dt), jnp.asarray(0, jnp.int32), inf, inf))
    return f, g, it, err


class _Fold:
    """Re-stabilization of the x-y problem: f <- exact c-transform of g, K rebuilt."""

    def __init__(self, cost, a, b, epsilon):
        self.cost, self.a, self.b, self.epsilon = cost, a, b, epsilon

    def __call__(self, f, g):
        f = c_transform(g, self.cost, self.b, self.epsilon)  # rows exact: K_ij <= 1 / b_j
        return f, g, _kernel(self.cost, f, g, self.epsilon), (jnp.ones_like(f), jnp.ones_like(g))

    def absorb(self, f, g, uv):
        u, v = uv
        return f + self.epsilon * jnp.log(u), g + self.epsilon * jnp.log(v)


def _scaling_level(cost, a, b, epsilon, f, g, omega, max_iterations, threshold):
    """Over-relaxed Sinkhorn in scaling form at one epsilon, from potentials (f, g).

    P_ij = a_i b_j K_ij u_i v_j with K = exp((f_i + g_j - C_ij)/eps) built once per epoch
    (see :func:`_epochs`); each iteration is two matrix-vector products and no exponentials
    of the (n, m) matrix, u and v relaxed in log space by omega (Schmitzer's absorption keeps
    it stable). Returns (f, g, iterations, error): error is the L1 column-marginal error
    after the row update of the last iteration.
    """
    def step(k, uv, w):
        u, v = uv
        u2 = _relax(u, 1.0 / jnp.maximum(k @ (b * v), _TINY), w)
        su = (a * u2) @ k
        err = jnp.sum(b * jnp.abs(v * su - 1))
        return (u2, _relax(v, 1.0 / jnp.maximum(su, _TINY), w)), err

    return _epochs(step, _Fold(cost, a, b, epsilon), f, g, omega, max_iterations, threshold, cost.dtype)


class _SymFold:
    """Re-stabilization of a symmetric problem: one exact averaged update
    p <- (p + T(p)) / 2 in log space, then K = exp((p_i + p_j - C_ij)/eps)."""

    def __init__(self, cost, a, epsilon):
        self.cost, self.a, self.epsilon = cost, a, epsilon

    def __call__(self, p, _):
        p = 0.5 * (p + c_transform(p, self.cost, self.a, self.epsilon))
        return p, p, _kernel(self.cost, p, p, self.epsilon), (jnp.ones_like(p),)

    def absorb(self, p, _, uv):
        p = p + self.epsilon * jnp.log(uv[0])
        return p, p


def _symmetric_level(cost, a, epsilon, p, max_iterations, threshold):
    """OT(a, a): averaged symmetric updates p <- (p + T(p)) / 2 in scaling form.

    With K = exp((p_i + p_j - C_ij)/eps) and p = p0 + eps log u the update is
    u <- sqrt(u / (K (a u))): one matrix-vector product per iteration. Returns (p, it, err).
    """
    def step(k, uv, w):
        (u,) = uv
        ku = jnp.maximum(k @ (a * u), _TINY)
        return (jnp.sqrt(u / ku),), jnp.sum(a * jnp.abs(u * ku - 1))

    p, _, it, err = _epochs(step, _SymFold(cost, a, epsilon), p, p, 1.0, max_iterations, threshold, cost.dtype)
    return p, it, err


def _solve_scaling(cost, a, b, epsilon, eps_start, *, init, eps_scaling, momentum, threshold,
                   max_iterations, inner_iterations=None, symmetric=False) -> _Solved:
    """Solve one entropic OT problem in scaling form (``solver="scaling"``, the default).

    Cold start: the epsilon ladder as in :func:`_solve_ott` (each level to
    ``_LADDER_THRESHOLD``, at most ``_LADDER_MAX_ITERATIONS``), K rebuilt once per level,
    then the target epsilon to ``threshold``. Symmetric problems: no ladder, averaged
    updates. ``inner_iterations`` is unused (the error is known at every iteration).
    Potentials in and out without log-weights, as :func:`_solve_ott`.
    """
    cost, a, b, epsilon, eps_start = jax.lax.stop_gradient((cost, a, b, epsilon, eps_start))
    n_pre = jnp.asarray(0, jnp.int32)
    if symmetric:
        p0 = jnp.zeros_like(a) if init is None else init[0]
        p, it, err = _symmetric_level(cost, a, epsilon, p0, max_iterations, threshold)
        f = g = p
    else:
        if init is None:
            f0, g0 = jnp.zeros_like(a), jnp.zeros_like(b)
            if eps_scaling > 0:
                k = jnp.arange(eps_scaling, dtype=cost.dtype)
                ladder = eps_start * (epsilon / eps_start) ** (k / eps_scaling)

                def level(carry, e):
                    f, g, it, _ = _scaling_level(cost, a, b, e, *carry, momentum, _LADDER_MAX_ITERATIONS,
                                                 _LADDER_THRESHOLD)
                    return (f, g), it

                (f0, g0), its = jax.lax.scan(level, (f0, g0), ladder)
                n_pre = jnp.sum(its)
        else:
            f0, g0 = init
        f, g, it, err = _scaling_level(cost, a, b, epsilon, f0, g0, momentum, max_iterations, threshold)
    g = jnp.where(b > 0, g, 0.0)
    f = jnp.where(a > 0, f, 0.0)
    converged = (err < threshold) & jnp.all(jnp.isfinite(f)) & jnp.all(jnp.isfinite(g))
    return _Solved(g, f, converged, it + n_pre, err)


_SOLVERS = {"scaling": _solve_scaling, "ott": _solve_ott}


#: over-relaxation omega when ``momentum=None``: 1.9 in scaling form converged in <= 470
#: iterations (ladder included) on every case of benchmarks/loss.py's clouds (N 1e3-4e3, eps
#: 0.01-0.3), where 1.8 needed up to 2,200 and once did not converge; ott's solves keep 1.8.
DEFAULT_MOMENTUM = {"scaling": 1.9, "ott": 1.8}


def _solve(cost, a, b, epsilon, eps_start, *, solver="scaling", momentum=None, init=None, **kw) -> _Solved:
    """Dispatch to a solver. Under ``vmap`` (ensemble members) on CPU the scaling solver runs
    the batch one problem after another (``lax.map``) instead of as one batched while-loop:
    a batched loop runs every member for as many iterations as the slowest one needs, and on
    CPU a batched matrix-vector product costs as much as the separate ones (4 members: 5.0x
    one member vmapped, 2.3x mapped, measured). On accelerators the batched loop is kept."""
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {sorted(_SOLVERS)}, got {solver!r}")
    if momentum is None:
        momentum = DEFAULT_MOMENTUM[solver]
    fn = functools.partial(_SOLVERS[solver], momentum=momentum, **kw)
    if solver != "scaling" or jax.default_backend() != "cpu":
        return fn(cost, a, b, epsilon, eps_start, init=init)
    args = (cost, a, b, epsilon, eps_start) + (() if init is None else tuple(init))

    @jax.custom_batching.custom_vmap
    def one(*args):
        return fn(*args[:5], init=None if len(args) == 5 else args[5:])

    @one.def_vmap
    def _map_over_batch(axis_size, in_batched, *args):
        batched = [x for x, bt in zip(args, in_batched) if bt]

        def single(xs):
            it = iter(xs)
            return one(*[next(it) if bt else x for x, bt in zip(args, in_batched)])

        out = jax.lax.map(single, batched)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return one(*jax.lax.stop_gradient(args))  # no tangents reach it (custom_vmap has no AD rule)


def _diameter_sq(*clouds) -> Array:
    lo = jnp.min(jnp.stack([jnp.min(c, 0) for c in clouds]), 0)
    hi = jnp.max(jnp.stack([jnp.max(c, 0) for c in clouds]), 0)
    return jnp.sum((hi - lo) ** 2)


# ----------------------------------------------------------------------------------------
# Sinkhorn divergence
# ----------------------------------------------------------------------------------------
class SinkhornState(NamedTuple):
    """Points, weights and potentials (log-weights removed) of a solve, for warm starts."""

    x: Array
    a: Array
    y: Array
    b: Array
    f_xy: Array  # (n,)
    g_xy: Array  # (m,)
    p_xx: Array  # (n,) symmetric potential of OT(x, x)


class SinkhornInfo(NamedTuple):
    """What the solves did. ``converged``: every solved term met ``threshold``."""

    converged: Array  # bool
    iterations: Array  # int, x-y problem (ladder included)
    iterations_xx: Array  # int, x-x problem
    error: Array  # final L1 marginal error of the x-y problem
    error_xx: Array
    state: Optional[SinkhornState] = None


class DataSelfTerm(NamedTuple):
    """OT_eps(b, b) of the observed cloud, computed once (see :func:`data_self_term`)."""

    value: Array
    epsilon: Array
    converged: Array
    iterations: Array
    potential: Array  # (m,)


def _extend(pot: Array, pts: Array, w: Array, new_pts: Array, epsilon) -> Array:
    """Symmetric-convention potential function of old points evaluated at new ones."""
    return c_transform(pot, sqeuclidean_cost(new_pts, pts), w, epsilon)


def _self_ot(x, a, epsilon, eps_start, *, init=None, cost=None, **solve_kw):
    """OT_eps(a, a) with its (stopped) symmetric potential; value differentiable in x, a."""
    c_sg = sqeuclidean_cost(jax.lax.stop_gradient(x), jax.lax.stop_gradient(x)) if cost is None else cost
    solve_kw = dict(solve_kw, eps_scaling=0)  # symmetric solves converge fast without a ladder
    s = _solve(c_sg, a, a, epsilon, eps_start, init=None if init is None else (init, init),
               symmetric=True, **solve_kw)
    p = jax.lax.stop_gradient(0.5 * (s.f + s.g))
    value = jnp.dot(a, _c_transform_points(p, x, x, a, epsilon)) + jnp.dot(a, p)
    return value, p, s


def entropic_ot(x, y, epsilon, *, a=None, b=None, threshold=1e-3, max_iterations=2000,
                eps_scaling=12, momentum=None, inner_iterations=10, init=None, solver="scaling"):
    """OT_eps(a, b) (not debiased) -> (value, potentials (f, g) without log-weights, solve info)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    dt = jnp.result_type(x.dtype, jnp.float32)
    a, b = _normalize(a, x.shape[0], dt), _normalize(b, y.shape[0], dt)
    epsilon = jnp.asarray(epsilon, dt)
    eps_start = jnp.maximum(_diameter_sq(jax.lax.stop_gradient(x), jax.lax.stop_gradient(y)), epsilon)
    kw = dict(eps_scaling=eps_scaling, momentum=momentum, threshold=threshold,
              max_iterations=max_iterations, inner_iterations=inner_iterations, solver=solver)
    s = _solve(sqeuclidean_cost(jax.lax.stop_gradient(x), jax.lax.stop_gradient(y)), a, b, epsilon,
               eps_start, init=init, **kw)
    g = jax.lax.stop_gradient(s.g)
    f = _c_transform_points(g, x, y, b, epsilon)
    value = jnp.dot(a, f) + jnp.dot(b, g)
    return value, (jax.lax.stop_gradient(f), g), s


def data_self_term(y, b=None, epsilon=0.1, *, threshold=1e-3, max_iterations=2000,
                   eps_scaling=12, momentum=None, inner_iterations=10, solver="scaling") -> DataSelfTerm:
    """OT_eps(y, y), the data-only term of the divergence, to compute once per (data, epsilon).

    Pass the result as ``y_self_potential=`` to :func:`sinkhorn_divergence` with the same
    ``epsilon`` (checked when both are concrete). No gradients flow into it.
    """
    y = jax.lax.stop_gradient(jnp.asarray(y))
    dt = jnp.result_type(y.dtype, jnp.float32)
    b = jax.lax.stop_gradient(_normalize(b, y.shape[0], dt))
    epsilon = jnp.asarray(epsilon, dt)
    eps_start = jnp.maximum(_diameter_sq(y), epsilon)
    value, p, s = _self_ot(y, b, epsilon, eps_start, eps_scaling=eps_scaling, momentum=momentum,
                           threshold=threshold, max_iterations=max_iterations,
                           inner_iterations=inner_iterations, solver=solver)
    return DataSelfTerm(jax.lax.stop_gradient(value), epsilon, s.converged, s.iterations, p)


def _check_same_epsilon(term: DataSelfTerm, epsilon) -> None:
    try:
        e1, e2 = float(term.epsilon), float(epsilon)
    except (jax.errors.ConcretizationTypeError, TypeError):
        return  # traced: cannot check here
    if not math.isclose(e1, e2, rel_tol=1e-5):
        raise ValueError(f"y_self_potential was computed at epsilon={e1:g}, divergence asked at {e2:g}")


def sinkhorn_divergence(x, y, epsilon, *, a=None, b=None, threshold=1e-3, max_iterations=2000,
                        eps_scaling=12, momentum=None, inner_iterations=10, init=None,
                        y_self_potential=None, return_state=False, solver="scaling"):
    """Debiased Sinkhorn divergence S_eps between weighted clouds x (n, d) and y (m, d).

    Args:
      x: simulated features (n, d); gradients flow to it.
      y: observed features (m, d) (data; gradients flow to it too, through OT(x, y)).
      epsilon: entropic regularization, absolute, in |x - y|^2 units (may be traced).
      a, b: optional non-negative point weights (normalized here); ``a`` (e.g. soft
        selection weights) receives gradients. Zero weight = point absent.
      threshold: L1 marginal-error tolerance of each solve at the target epsilon.
      max_iterations: cap on iterations at the target epsilon (after the ladder).
      eps_scaling: number of intermediate epsilons of the ladder (0: none).
      momentum: over-relaxation factor omega of the x-y solves (1: plain Sinkhorn; < 2).
      inner_iterations: iterations between two convergence checks.
      init: a :class:`SinkhornState` from a previous call (warm start; ladder skipped).
      y_self_potential: OT_eps(y, y) precomputed by :func:`data_self_term` (a
        :class:`DataSelfTerm` or a scalar); None computes it here, without gradients.
      return_state: put a :class:`SinkhornState` in ``info.state``.

    Returns:
      (value, :class:`SinkhornInfo`).
    """
    if isinstance(y_self_potential, DataSelfTerm):
        _check_same_epsilon(y_self_potential, epsilon)
    x, y = jnp.asarray(x), jnp.asarray(y)
    dt = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x, y = x.astype(dt), y.astype(dt)
    n, m = x.shape[0], y.shape[0]
    a, b = _normalize(a, n, dt), _normalize(b, m, dt)
    epsilon = jnp.asarray(epsilon, dt)
    xs, ys = jax.lax.stop_gradient(x), jax.lax.stop_gradient(y)
    eps_start = jnp.maximum(_diameter_sq(xs, ys), epsilon)
    kw = dict(eps_scaling=eps_scaling, momentum=momentum, threshold=threshold,
              max_iterations=max_iterations, inner_iterations=inner_iterations, solver=solver)

    # warm start: extend the previous potentials (functions of points) to the new points
    init_xy = init_xx = None
    if init is not None:
        ia = jax.lax.stop_gradient(init.a)
        g0 = _extend(init.f_xy, init.x, ia, ys, epsilon)
        f0 = _extend(g0, ys, jax.lax.stop_gradient(b), xs, epsilon)
        init_xy = (f0, g0)
        init_xx = _extend(init.p_xx, init.x, ia, xs, epsilon)

    # x-y term
    s_xy = _solve(sqeuclidean_cost(xs, ys), a, b, epsilon, eps_start, init=init_xy, **kw)
    g = jax.lax.stop_gradient(s_xy.g)
    f_live = _c_transform_points(g, x, y, b, epsilon)
    ot_xy = jnp.dot(a, f_live) + jnp.dot(b, g)

    # x-x term
    ot_xx, p_xx, s_xx = _self_ot(x, a, epsilon, eps_start, init=init_xx, **kw)

    # y-y term (data only)
    converged = jnp.logical_and(s_xy.converged, s_xx.converged)
    if y_self_potential is None:
        yy = data_self_term(ys, jax.lax.stop_gradient(b), epsilon, **kw)
        ot_yy = yy.value
        converged = jnp.logical_and(converged, yy.converged)
    elif isinstance(y_self_potential, DataSelfTerm):
        ot_yy = y_self_potential.value
    else:
        ot_yy = jnp.asarray(y_self_potential, dt)

    value = ot_xy - 0.5 * (ot_xx + jax.lax.stop_gradient(ot_yy))
    state = None
    if return_state:
        state = SinkhornState(xs, jax.lax.stop_gradient(a), ys, jax.lax.stop_gradient(b),
                              jax.lax.stop_gradient(f_live), g, p_xx)
    info = SinkhornInfo(converged, s_xy.iterations, s_xx.iterations, s_xy.error, s_xx.error, state)
    return value, info


# ----------------------------------------------------------------------------------------
# sliced Wasserstein
# ----------------------------------------------------------------------------------------
def _random_directions(key, d: int, n_projections: int, dtype) -> Array:
    v = jax.random.normal(key, (d, n_projections), dtype)
    return v / jnp.linalg.norm(v, axis=0, keepdims=True)


def _w_pp_1d_uniform(px: Array, py: Array, p) -> Array:
    """Equal sizes, uniform weights: mean over quantiles of |x_(k) - y_(k)|^p, per column."""
    d = jnp.sort(px, axis=0) - jnp.sort(py, axis=0)
    return jnp.mean(jnp.abs(d) ** p, axis=0)


def _w_pp_1d_weighted(px: Array, a: Array, py: Array, b: Optional[Array], p) -> Array:
    """Exact W_p^p between weighted 1-D empirical measures, one per column of px / py.

    int_0^1 |F^-1(t) - G^-1(t)|^p dt. Both quantile functions are piecewise constant, so the
    integral is a sum over the merged grid of the cumulative weights ca (n,) and cb (m,).
    The grid is not sorted: with c_i = #{j: cb_j < ca_i} (a searchsorted; closed form
    ceil(m ca_i) - 1 when ``b`` is None, i.e. uniform) every x breakpoint ca_i closes an
    interval on which G^-1 = y_(c_i), and with d_j = #{i: c_i <= j} (a histogram) every y
    breakpoint cb_j closes one on which F^-1 = x_(d_j). One sort per side and O(n + m) work,
    against a sort of the merged n + m grid and two searchsorteds (2.5x slower at
    2048 x 2048 x 128 directions). Differentiable in px, py (sorted values) and in a, b
    (interval lengths); for a zero weight the gradient is the one-sided derivative of adding
    mass there.
    """
    n, m = px.shape[0], py.shape[0]
    dt = px.dtype
    zero = jnp.zeros((1,), dt)

    def one(cx, cy):
        ox = jnp.argsort(cx)
        xs = cx[ox]
        ca = jnp.cumsum(a[ox])
        ca = ca / ca[-1]
        cas = jax.lax.stop_gradient(ca)
        if b is None:
            ys = jnp.sort(cy)
            cb = (jnp.arange(m, dtype=dt) + 1) / m
            c = jnp.clip(jnp.ceil(cas * m).astype(jnp.int32) - 1, 0, m)
        else:
            oy = jnp.argsort(cy)
            ys = cy[oy]
            cb = jnp.cumsum(b[oy])
            cb = cb / cb[-1]
            c = jnp.searchsorted(jax.lax.stop_gradient(cb), cas, side="left").astype(jnp.int32)
        d = jnp.cumsum(jnp.zeros((m + 1,), jnp.int32).at[c].add(1))[:m]
        ca0 = jnp.concatenate([zero, ca])          # ca0[i] = ca_{i-1}
        cb0 = jnp.concatenate([zero, cb])
        # the interval closed by ca_i (by cb_j) starts at the larger of the previous ca and
        # cb; ties go to ca, so that zero weights get the one-sided gradient
        start_a, start_b = ca0[:-1], ca0[d]
        len_a = ca - jnp.where(start_a >= cb0[c], start_a, cb0[c])
        len_b = cb - jnp.where(start_b >= cb0[:-1], start_b, cb0[:-1])
        return (jnp.sum(len_a * jnp.abs(xs - ys[jnp.minimum(c, m - 1)]) ** p)
                + jnp.sum(len_b * jnp.abs(xs[jnp.minimum(d, n - 1)] - ys) ** p))

    return jax.vmap(one, in_axes=(1, 1))(px, py)


def sliced_wasserstein(x, y, key, n_projections: int = 128, *, a=None, b=None, p=2,
                       directions=None):
    """Sliced Wasserstein: mean over random unit directions u of W_p^p(u.x, u.y).

    Returns SW_p^p (no p-th root), so for p=2 it is in |x-y|^2 units like the Sinkhorn
    divergence; for a translation t of a cloud in d dimensions it is |t|^2 / d on average.
    Unequal sizes and weights are handled exactly through the weighted quantile functions;
    differentiable in x, y, a and b. O(P (n + m) log(n + m)). ``directions`` (d, P)
    overrides the random ones (``key`` is then unused).
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    dt = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x, y = x.astype(dt), y.astype(dt)
    u = _random_directions(key, x.shape[1], n_projections, dt) if directions is None else jnp.asarray(directions, dt)
    px, py = x @ u, y @ u
    if a is None and b is None and x.shape[0] == y.shape[0]:
        w = _w_pp_1d_uniform(px, py, p)
    else:
        w = _w_pp_1d_weighted(px, _normalize(a, x.shape[0], dt), py, None if b is None else _normalize(b, y.shape[0], dt), p)
    return jnp.mean(w)


# ----------------------------------------------------------------------------------------
# one interface for the training loop
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Which loss and its solver settings (static; hashable).

    kind: 'sinkhorn' (debiased Sinkhorn divergence) or 'sliced' (sliced W_p^p).
    threshold, max_iterations, eps_scaling, momentum, inner_iterations: Sinkhorn solves.
    include_y_self: compute OT(y, y) inside each call (a constant for the gradient; without
      it the value is offset by -OT(y, y)/2 but the gradient is the same and a step ~1/3
      cheaper). A precomputed value can also be passed as ``y_self=``.
    warm_start: return the solver state in aux['state'] for the next call's ``state=``.
    n_projections, p: sliced Wasserstein.
    solver: 'scaling' (this module's scaling-form solver, the default) or 'ott' (ott-jax's).
    """

    kind: str = "sinkhorn"
    threshold: float = 1e-3
    max_iterations: int = 2000
    eps_scaling: int = 12
    momentum: Optional[float] = None
    inner_iterations: int = 10
    include_y_self: bool = True
    warm_start: bool = False
    n_projections: int = 128
    p: int = 2
    solver: str = "scaling"

    def __post_init__(self):
        if self.kind not in ("sinkhorn", "sliced"):
            raise ValueError(f"LossConfig.kind must be 'sinkhorn' or 'sliced', got {self.kind!r}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"LossConfig.solver must be one of {sorted(_SOLVERS)}, got {self.solver!r}")
        if self.n_projections < 1:
            raise ValueError(f"n_projections must be >= 1, got {self.n_projections}")


def make_loss(config: LossConfig = LossConfig()):
    """-> fn(x, y, epsilon, key, a=None, b=None, state=None, y_self=None) -> (value, aux dict).

    aux always has 'converged' (bool array) and 'iterations'; with the Sinkhorn kind also
    'iterations_xx', 'error', and 'state' (a :class:`SinkhornState`, when
    ``config.warm_start``). ``epsilon`` is ignored by the sliced kind, ``key`` by Sinkhorn.
    """
    if config.kind == "sliced":

        def sliced_fn(x, y, epsilon, key, a=None, b=None, state=None, y_self=None):
            v = sliced_wasserstein(x, y, key, config.n_projections, a=a, b=b, p=config.p)
            return v, {"converged": jnp.asarray(True), "iterations": jnp.asarray(0, jnp.int32)}

        return sliced_fn

    def sinkhorn_fn(x, y, epsilon, key, a=None, b=None, state=None, y_self=None):
        if y_self is None and not config.include_y_self:
            y_self = 0.0
        v, info = sinkhorn_divergence(
            x, y, epsilon, a=a, b=b, threshold=config.threshold, max_iterations=config.max_iterations,
            eps_scaling=config.eps_scaling, momentum=config.momentum,
            inner_iterations=config.inner_iterations, init=state, y_self_potential=y_self,
            return_state=config.warm_start, solver=config.solver)
        aux = {"converged": info.converged, "iterations": info.iterations,
               "iterations_xx": info.iterations_xx, "error": info.error}
        if config.warm_start:
            aux["state"] = info.state
        return v, aux

    return sinkhorn_fn
