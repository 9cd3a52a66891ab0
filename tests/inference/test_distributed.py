"""Several processes training one ensemble with JAX's distributed runtime (docs/distributed.md).

The launch options are parsed without JAX; the two end-to-end tests start two local CPU
processes of ``popsed-jax fit`` (2 forced host devices each) on the shipped SDSS sample at tiny
settings (as the other driver tests: the mock module is not needed), and take a few minutes on
two cores, hence ``slow``."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from popsed_jax.errors import PopsedError
from popsed_jax.inference import distributed as dist

TINY = dict(steps=4, n_sim=256, batch_obs=256, n_val=256, val_every=2, checkpoint_every=2, flow_layers=2, flow_hidden=16,
            flow_bins=8)


# ---- launch options (no JAX) ---------------------------------------------------------------
def test_no_options_no_launcher_is_one_process():
    assert dist.launch_options(environ={}) is None
    assert dist.launch_options(environ={"POPSED_DISTRIBUTED": "0", "OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "4"}) is None


def test_flags_win_over_the_environment():
    env = {"POPSED_COORDINATOR": "node1:1234", "POPSED_NUM_PROCESSES": "4", "POPSED_PROCESS_ID": "3",
           "POPSED_HEARTBEAT_TIMEOUT": "7"}
    o = dist.launch_options(environ=env)
    assert (o.coordinator, o.num_processes, o.process_id, o.heartbeat_timeout, o.explicit) == ("node1:1234", 4, 3, 7, True)
    o = dist.launch_options("node0:99", 2, 1, environ=env)
    assert (o.coordinator, o.num_processes, o.process_id) == ("node0:99", 2, 1)


@pytest.mark.parametrize("kw, msg", [
    (dict(coordinator="h:1", num_processes=2), "missing --process-id"),
    (dict(coordinator="h", num_processes=2, process_id=0), "HOST:PORT"),
    (dict(coordinator="h:1", num_processes=2, process_id=2), r"--process-id must be in 0\.\.1"),
])
def test_incomplete_or_bad_manual_launch_is_refused(kw, msg):
    with pytest.raises(PopsedError, match=msg):
        dist.launch_options(environ={}, **kw)


def test_launchers_of_several_tasks_are_detected():
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-4]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_STEP_NUM_TASKS": "16"}
    o = dist.launch_options(environ=slurm)
    assert o is not None and not o.explicit  # jax.distributed.initialize() detects the rest
    assert dist.launch_options(environ=dict(slurm, SLURM_STEP_NUM_TASKS="1")) is None  # a one-task step: as before
    assert dist.launch_options(environ={"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "2"}) is not None
    assert dist.launch_options(distributed=True, environ={}) is not None


def test_fit_parser_has_the_launch_flags():
    from popsed_jax.cli import build_parser

    a = build_parser().parse_args(["fit", "sdss", "--out", "x", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "1"])
    assert (a.coordinator, a.num_processes, a.process_id, a.distributed) == ("h:1", 2, 1, None)


# ---- two local processes -----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(path, **over):
    path.write_text("[fit]\n" + "\n".join(f"{k} = {v}" for k, v in dict(TINY, **over).items()) + "\n")
    return path


def _env(devices: int, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POPSED_", "SLURM_", "OMPI_"))}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu", **extra)
    return env


def _fit(cfg, out, *extra, devices=4, env=None, **popen):
    cmd = [sys.executable, "-m", "popsed_jax.cli", "fit", "sdss", "--config", str(cfg), "--members", "4", "--n-samples", "200",
           "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=env or _env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _two(cfg, out, *extra, **envx):
    port = _free_port()
    return [_fit(cfg, out, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i), *extra,
                 env=_env(2, **envx)) for i in (0, 1)]


def _members(run, step):
    import jax
    from flax import serialization

    payload = (run / "checkpoints" / f"step_{step:07d}.msgpack").read_bytes()
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(serialization.msgpack_restore(payload)["params"])]


@pytest.mark.slow
def test_two_processes_give_the_members_of_one_process_with_four_devices(tmp_path):
    cfg = _config(tmp_path / "fit.toml")
    procs = _two(cfg, tmp_path / "two")
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "process 1 of 2, 4 cpu devices in all (2, 2 per process)" in outs[1][1]
    one = _fit(cfg, tmp_path / "one", devices=4)
    _, err = one.communicate(timeout=900)
    assert one.returncode == 0, err[-3000:]

    two, ref = tmp_path / "two", tmp_path / "one"
    s2, s1 = (json.loads((r / "summary.json").read_text()) for r in (two, ref))
    assert (s2["processes"], s2["devices"], s2["devices_per_process"], s2["sharded"]) == (2, 4, [2, 2], True)
    assert (s1["processes"], s1["devices"], s1["sharded"]) == (1, 4, True)
    for x, y in zip(_members(two, 4), _members(ref, 4), strict=True):  # all 4 members, each from its own device
        assert x.shape[0] == 4
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    h2, h1 = (json.loads((r / "history.json").read_text()) for r in (two, ref))
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-6)
    np.testing.assert_allclose(h2["val"], h1["val"], rtol=1e-4)  # validation: shard_map vs jit over the mesh
    for f in ("samples.fits", "loss.png", "corner.png", "noise_model.json", "run_info.json"):
        assert (two / f).exists(), f


@pytest.mark.slow
def test_a_dead_process_stops_the_other_and_resume_finishes(tmp_path):
    cfg = _config(tmp_path / "fit.toml", steps=10)
    run = tmp_path / "run"
    p0, p1 = _two(cfg, run, POPSED_HEARTBEAT_TIMEOUT="10")
    t0 = time.time()
    while not (run / "checkpoints" / "step_0000002.json").exists():
        assert p0.poll() is None and p1.poll() is None, p0.stderr.read()[-3000:] if p0.poll() is not None else ""
        assert time.time() - t0 < 600
        time.sleep(0.2)
    p1.kill()
    t1 = time.time()
    _, err = p0.communicate(timeout=180)  # not forever: the gather fails, or the heartbeat timeout ends it
    p1.communicate()
    assert p0.returncode != 0 and time.time() - t1 < 120
    assert ("lost contact with another process of the distributed run" in err and "--resume" in err) or \
        "another task died" in err, err[-3000:]
    assert not (run / "summary.json").exists()
    # resume with another process count: one process with four devices finishes the run
    one = _fit(cfg, run, "--resume", devices=4)
    _, err = one.communicate(timeout=900)
    assert one.returncode == 0, err[-3000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == 10 and s["processes"] == 1
    h = json.loads((run / "history.json").read_text())
    assert h["step"] == list(range(10))
    assert (run / "checkpoints" / "step_0000010.msgpack").exists() and (run / "samples.fits").exists()


def test_processes_launched_with_different_commands_are_refused(tmp_path):
    """A Slurm sweep like `srun -n2 popsed-jax fit ... --seed $SLURM_PROCID` must not silently become one
    run mixing the members of two configurations: every process stops, naming the odd one out."""
    cfg = _config(tmp_path / "fit.toml")
    port = _free_port()
    procs = [_fit(cfg, tmp_path / "run", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                  "--process-id", str(i), "--seed", str(i), env=_env(2)) for i in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode != 0
        assert "processes [1] of the distributed run were launched with another" in err, err[-3000:]
        assert "POPSED_DISTRIBUTED=0" in err
    assert not (tmp_path / "run" / "checkpoints").exists()
