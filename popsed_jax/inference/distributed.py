"""Several processes (and hosts) training one ensemble, with JAX's own distributed runtime.

    opts = launch_options(coordinator=..., num_processes=..., process_id=...)   # flags > env > None
    initialize(opts)           # once, before any JAX computation; no-op for opts None
    layout()                   # {"processes", "process_index", "devices", "devices_per_process", ...}

A run is distributed when any of these asks for it (otherwise nothing here touches JAX):

* explicit options, from flags or the environment: ``POPSED_COORDINATOR`` (HOST:PORT of process
  0's coordinator service), ``POPSED_NUM_PROCESSES``, ``POPSED_PROCESS_ID``;
* ``POPSED_DISTRIBUTED=1`` (or ``--distributed``): let :func:`jax.distributed.initialize` detect
  Slurm or Open MPI on its own;
* a Slurm step (``srun``) or an Open MPI job (``mpirun``) of more than one task: detected the same
  way. ``POPSED_DISTRIBUTED=0`` turns this off.

Timeouts (seconds), from the environment: ``POPSED_HEARTBEAT_TIMEOUT`` (a process silent this
long is declared dead and every other process stops; JAX's default 100),
``POPSED_SHUTDOWN_TIMEOUT`` (how long a finished process waits at exit for the others, e.g. for
process 0 writing the products; default 300), ``POPSED_INIT_TIMEOUT`` (how long to wait for all
processes to join; default 300).

After :func:`initialize`, ``jax.devices()`` lists every process's devices and the ensemble mesh
spans them all; ``jax.local_devices()`` are this process's. The helpers below are collectives
where they say so: every process must call them, in the same order.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Mapping

import numpy as np

from ..errors import PopsedError

__all__ = ["ENV", "ProcessLost", "stop_if_a_process_dies", "LaunchOptions", "launch_options", "initialize", "is_multiprocess", "is_main", "layout",
           "to_host", "agree", "any_process", "same_everywhere", "tell_others", "wait_for_main", "check_members"]

ENV = {
    "coordinator": "POPSED_COORDINATOR", "num_processes": "POPSED_NUM_PROCESSES", "process_id": "POPSED_PROCESS_ID",
    "distributed": "POPSED_DISTRIBUTED", "heartbeat_timeout": "POPSED_HEARTBEAT_TIMEOUT",
    "shutdown_timeout": "POPSED_SHUTDOWN_TIMEOUT", "init_timeout": "POPSED_INIT_TIMEOUT",
    "products_timeout": "POPSED_PRODUCTS_TIMEOUT",
}


class ProcessLost(PopsedError):
    """A collective of a distributed run failed: another process died or cannot be reached."""


# what the runtime's errors say when a peer process is gone (gloo's TCP pairs, the coordination service)
_LOST_SIGNS = ("gloo", "connection reset", "connection refused", "connection closed", "heartbeat", "coordination service",
               "barrier", "socket closed", "unavailable")


@contextlib.contextmanager
def stop_if_a_process_dies(folder=None):
    """Within the block, a failed cross-process collective raises :class:`ProcessLost` with a clear
    message (what happened, where the checkpoints are, --resume) instead of the runtime's error.
    (If a process is lost while this one computes, JAX's heartbeat timeout stops this process
    with its own message: 'Terminating process because the JAX distributed service detected
    fatal errors ... another task died'.)"""
    import jax

    try:
        yield
    except jax.errors.JaxRuntimeError as err:
        text = str(err)
        if not is_multiprocess() or not any(k in text.lower() for k in _LOST_SIGNS):
            raise
        first = text.strip().splitlines()[0][:300]
        where = f" in {folder}/checkpoints" if folder is not None else ""
        raise ProcessLost(
            f"process {jax.process_index()} of {jax.process_count()} lost contact with another process of the "
            f"distributed run, which probably died ({first}); stopped. The newest checkpoint is kept{where}: relaunch "
            "every process with the same command and --resume (any process count)") from None


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """What :func:`initialize` passes to :func:`jax.distributed.initialize`. ``coordinator``,
    ``num_processes``, ``process_id`` None: detected by JAX (Slurm, Open MPI)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout: int = 100
    shutdown_timeout: int = 300
    init_timeout: int = 300

    @property
    def explicit(self) -> bool:
        return None not in (self.coordinator, self.num_processes, self.process_id)


def _int(value, name: str, lo: int = 0) -> int | None:
    if value is None or value == "":
        return None
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise PopsedError(f"{name} must be an integer, got {value!r}") from None
    if v < lo:
        raise PopsedError(f"{name} must be >= {lo}, got {v}")
    return v


def _launcher_tasks(env: Mapping[str, str]) -> int:
    """Tasks of the Slurm step or Open MPI job this process belongs to (1 when neither)."""
    if "OMPI_MCA_orte_hnp_uri" in env and "OMPI_COMM_WORLD_SIZE" in env:
        return int(env["OMPI_COMM_WORLD_SIZE"])
    if all(k in env for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")):
        return int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
    return 1


def launch_options(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
                   distributed: bool | None = None, environ: Mapping[str, str] | None = None) -> LaunchOptions | None:
    """The launch a command line and the environment ask for, or None for a one-process run.

    Flags win over the ``POPSED_*`` variables (:data:`ENV`). Explicit options must be all three
    (or none: then Slurm / Open MPI detection), with 0 <= process_id < num_processes."""
    env = os.environ if environ is None else environ
    coord = coordinator or env.get(ENV["coordinator"]) or None
    n = num_processes if num_processes is not None else _int(env.get(ENV["num_processes"]), ENV["num_processes"], 1)
    i = process_id if process_id is not None else _int(env.get(ENV["process_id"]), ENV["process_id"])
    if n is not None and n < 1:
        raise PopsedError(f"--num-processes must be >= 1, got {n}")
    flag = env.get(ENV["distributed"], "").strip().lower()
    if distributed is None and flag:
        distributed = flag not in ("0", "no", "false", "off")
    timeouts = {k: _int(env.get(ENV[k]), ENV[k], 1) for k in ("heartbeat_timeout", "shutdown_timeout", "init_timeout")}
    timeouts = {k: v for k, v in timeouts.items() if v is not None}
    given = [x is not None for x in (coord, n, i)]
    if any(given):
        if not all(given):
            missing = [f for f, g in zip(("--coordinator HOST:PORT", "--num-processes", "--process-id"), given) if not g]
            raise PopsedError(f"a manual distributed launch needs --coordinator, --num-processes and --process-id "
                              f"(or {ENV['coordinator']}, {ENV['num_processes']}, {ENV['process_id']}); missing "
                              f"{', '.join(missing)}")
        if ":" not in coord:
            raise PopsedError(f"--coordinator must be HOST:PORT (process 0's host), got {coord!r}")
        if not 0 <= i < n:
            raise PopsedError(f"--process-id must be in 0..{n - 1} for --num-processes {n}, got {i}")
        return LaunchOptions(coord, n, i, **timeouts)
    if distributed is False:
        return None
    if distributed or _launcher_tasks(env) > 1:
        return LaunchOptions(**timeouts)
    return None


def initialize(opts: LaunchOptions | None) -> bool:
    """Start JAX's distributed runtime for ``opts`` (nothing for None); idempotent. On CPU the
    cross-process collectives (gathers of metrics and parameters) go through gloo. Must run
    before any JAX computation. Returns whether the run is distributed."""
    if opts is None:
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kw = dict(initialization_timeout=opts.init_timeout, heartbeat_timeout_seconds=opts.heartbeat_timeout,
              shutdown_timeout_seconds=opts.shutdown_timeout)
    if opts.explicit:
        kw.update(coordinator_address=opts.coordinator, num_processes=opts.num_processes, process_id=opts.process_id,
                  cluster_detection_method="deactivate")
    try:
        jax.distributed.initialize(**kw)
    except (RuntimeError, ValueError) as err:
        where = opts.coordinator or "the coordinator Slurm / Open MPI names"
        raise PopsedError(f"cannot start the distributed run ({where}): {err}") from None
    return True


def is_multiprocess() -> bool:
    import jax

    return jax.process_count() > 1


def is_main() -> bool:
    """Process 0: the one that writes the run folder."""
    import jax

    return jax.process_index() == 0


def layout() -> dict:
    """Processes, global device count and each process's devices (ids), and this process's index."""
    import jax

    per: dict[int, list[int]] = {}
    for d in jax.devices():
        per.setdefault(int(d.process_index), []).append(int(d.id))
    return {"processes": jax.process_count(), "process_index": jax.process_index(), "devices": len(jax.devices()),
            "devices_per_process": [len(per[p]) for p in sorted(per)],
            "device_ids": {str(p): per[p] for p in sorted(per)}, "platform": jax.default_backend()}


def to_host(tree):
    """Numpy copies of the leaves of ``tree``: arrays spread over several processes are gathered
    (a collective: every process calls it and gets the whole array); others are just copied."""
    import jax

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(one, tree)


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true in any process (a collective in a distributed run)."""
    if not is_multiprocess():
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([bool(flag)]))))


def agree(ok: bool, what: str) -> None:
    """A collective check that every process got here with ``ok``: where one did not, the others
    raise PopsedError(``what``) (the failing one raises its own error after this)."""
    if any_process(not ok) and ok:
        raise PopsedError(what)


def same_everywhere(text: str, what: str) -> None:
    """A collective check that every process holds the same ``text`` (compared by SHA-256): where
    some differ from process 0, every process raises PopsedError(``what``), with ``{bad}`` in it
    replaced by the list of differing process indices."""
    if not is_multiprocess():
        return
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:16], np.int32)
    every = np.asarray(multihost_utils.process_allgather(digest))  # (processes, 4)
    bad = [i for i in range(every.shape[0]) if not np.array_equal(every[i], every[0])]
    if bad:
        raise PopsedError(what.replace("{bad}", str(bad)))


def _client():
    from jax._src import distributed as _d  # the coordination service client jax.distributed started

    return _d.global_state.client


def tell_others(key: str, message: str = "") -> None:
    """Process 0: publish ``message`` ('' = success) under ``key`` in the coordination service,
    for :func:`wait_for_main` in the other processes."""
    if is_multiprocess():
        _client().key_value_set(f"popsed/{key}", message or "ok")


def wait_for_main(key: str, timeout_s: float | None = None) -> str:
    """The other processes: wait until process 0 publishes ``key`` (:func:`tell_others`); returns
    its message ('' = success). The wait is on the coordination service, not a device
    collective, so it may be long (process 0 writing the products of a large run); timeout
    ``POPSED_PRODUCTS_TIMEOUT`` seconds (default 3 h). A dead process 0 is caught by the
    heartbeat as everywhere else."""
    if not is_multiprocess():
        return ""
    if timeout_s is None:
        timeout_s = float(os.environ.get(ENV["products_timeout"], 3 * 3600))
    msg = _client().blocking_key_value_get(f"popsed/{key}", int(timeout_s * 1000))
    return "" if msg == "ok" else msg


def check_members(members: int) -> None:
    """In a distributed run K must split evenly over all processes' devices (each device trains
    K / devices members)."""
    import jax

    n = len(jax.devices())
    if is_multiprocess() and members % n != 0:
        raise PopsedError(f"--members {members} must be a multiple of the {n} devices of the distributed run "
                          f"({jax.process_count()} processes); each device trains members / devices of them")
