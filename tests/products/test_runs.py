"""The fit driver: reliability (resume after SIGKILL, NaN guard), sharded ensembles."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from popsed_jax.errors import FitDiverged
from popsed_jax.inference import fit as fitlib
from popsed_jax.inference.config import FitConfig
from popsed_jax.products import runs
from popsed_jax.products.runfolder import RunFolder
from popsed_jax.products.runs import survey_selection
from popsed_jax.survey.catalog import read_sdss_main

TINY = dict(steps=12, n_sim=256, batch_obs=256, n_val=256, val_every=4, checkpoint_every=4, flow_layers=2, flow_hidden=16, flow_bins=8)

CHILD = """
import sys, json
from popsed_jax.inference import fit as fitlib
from popsed_jax.inference.config import FitConfig
from popsed_jax.products import runs
from popsed_jax.survey.catalog import read_sdss_main
cfg = FitConfig(**json.loads(sys.argv[1]))
problem = fitlib.prepare(read_sdss_main(), cfg)
runs.train(problem, sys.argv[2], resume=len(sys.argv) > 3, progress=False)
"""


@pytest.fixture(scope="module")
def sdss():
    return read_sdss_main()


def _params_of(run):
    from flax import serialization

    ck = RunFolder(run).latest_checkpoint()
    return jax.tree_util.tree_leaves(serialization.msgpack_restore(ck.read_bytes())["params"]), ck


@pytest.mark.slow
def test_killed_fit_resumes_to_the_same_end(tmp_path):
    cfg = json.dumps(TINY)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run([sys.executable, "-c", CHILD, cfg, str(ref)], check=True)
    p = subprocess.Popen([sys.executable, "-c", CHILD, cfg, str(killed)])
    target = killed / "checkpoints" / "step_0000008.msgpack"
    t0 = time.time()
    while not target.exists():
        assert p.poll() is None, "the child finished before it could be killed"
        assert time.time() - t0 < 300
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not (killed / "summary.json").exists()  # it really died mid-run
    subprocess.run([sys.executable, "-c", CHILD, cfg, str(killed), "resume"], check=True)
    a, cka = _params_of(ref)
    b, ckb = _params_of(killed)
    assert cka.name == ckb.name == "step_0000012.msgpack"
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_nan_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, sdss):
    problem = fitlib.prepare(sdss, FitConfig(**TINY))
    with pytest.raises(FitDiverged, match=r"step 6: the loss of ensemble member 0 is nan.*last good checkpoint is step 4"):
        runs.train(problem, tmp_path, progress=False, fail_at=6)
    ck = RunFolder(tmp_path).latest_checkpoint()
    assert ck.name == "step_0000004.msgpack"
    leaves, _ = _params_of(tmp_path)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


SHARD_CHILD = """
import json, sys
import jax, numpy as np
from popsed_jax.inference import fit as fitlib
from popsed_jax.inference.config import FitConfig
from popsed_jax.products import runs
from popsed_jax.survey.catalog import read_sdss_main
assert len(jax.devices()) == 4, jax.devices()
cfg = FitConfig(**json.loads(sys.argv[1]))
problem = fitlib.prepare(read_sdss_main(), cfg)
out = {}
for shard in (False, None):
    res = runs.train(problem, sys.argv[2] + str(shard), progress=False, shard=shard)
    out[str(shard)] = [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(res['params'])[:4]]
    out['loss_' + str(shard)] = res['history']['loss']
    out['sharded_' + str(shard)] = res['summary']['sharded']
json.dump(out, open(sys.argv[3], 'w'))
"""


@pytest.mark.slow
def test_sharded_over_four_devices_matches_vmapped(tmp_path):
    cfg = dict(TINY, steps=4, members=4, val_every=4, checkpoint_every=4)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "-c", SHARD_CHILD, json.dumps(cfg), str(tmp_path / "run"), str(out)], check=True, env=env)
    r = json.loads(out.read_text())
    assert r["sharded_None"] is True and r["sharded_False"] is False
    # the first step sees identical parameters: its losses agree to float32 rounding
    # (float32 matmuls of the forward model summed in another order: 7e-6 relative with stellar light
    # only, 1.5-1.8e-5 with the nebular lines' narrow, bright cells in the SSP rows; measured 2026-12-06)
    np.testing.assert_allclose(r["loss_False"][0], r["loss_None"][0], rtol=5e-5)
    # later steps differ only by reduction order inside the iterative Sinkhorn solve
    # (a stopping test crossed one iteration earlier or later), amplified by Adam
    np.testing.assert_allclose(r["loss_False"], r["loss_None"], rtol=2e-3)
    for x, y in zip(r["False"], r["None"]):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-2, atol=2e-5)


def test_run_fit_end_to_end_tiny(tmp_path):
    """The whole fit from the public names, at tiny settings: every file of the run folder is
    written, the samples returned are the samples on disk, and a re-run with --resume on the
    finished folder reproduces them exactly (determinism of the driver and the sampling)."""
    import popsed_jax as pj

    cfg = pj.FitConfig(**dict(TINY, steps=6, val_every=3, checkpoint_every=3))
    res = pj.run_fit("sdss", cfg, tmp_path / "run", n_samples=600, progress=False)
    folder = pj.RunFolder(tmp_path / "run")
    for key in ("run_info", "config", "noise_model", "noise_plot", "history", "summary", "samples", "loss_plot",
                "ppc_plot", "corner"):
        assert folder.exists(key), key
    assert [c.name for c in folder.checkpoints()] == ["step_0000003.msgpack", "step_0000006.msgpack"]
    # the shipped sample is fitted with its own selection (r < 17.77 and 2MASS-detected), saved as the run's
    assert folder.read_config() == survey_selection("sdss", cfg) != cfg
    s = res["summary"]
    assert s["steps"] == 6 and np.all(np.isfinite(s["val_divergence"])) and s["data_floor"] > 0
    tab = folder.read_samples()
    assert len(tab) == 600 and set(pj.PARAM_NAMES) <= set(tab.colnames)
    assert {"selected", "member", "logM_surviving", "flux_sdss2001-r", "flux_twomass-Ks"} <= set(tab.colnames)
    np.testing.assert_array_equal(np.asarray(tab["z"]), np.asarray(res["samples"]["z"]))
    again = pj.run_fit("sdss", cfg, tmp_path / "run", resume=True, n_samples=600, progress=False)
    np.testing.assert_array_equal(np.asarray(again["samples"]["logM"]), np.asarray(tab["logM"]))
    np.testing.assert_array_equal(np.asarray(again["samples"]["flux_sdss2001-r"]), np.asarray(tab["flux_sdss2001-r"]))
    # every galaxy's posterior from the run folder: the fitted bands only (Ks served the selection)
    from popsed_jax.products import posterior

    gal, metrics = posterior.posterior_catalog(tmp_path / "run", n_bank=3000, refine=0, progress=False)
    assert gal.meta["BANDS"] == ",".join(f"sdss2001-{b}" for b in "ugriz") and len(gal) > 9000
    assert np.all(np.isfinite(gal["z_median"])) and metrics is not None
    assert gal.meta["MAPDEF"] == "posterior density"  # the bank carries the population's density


def test_large_posterior_banks_are_drawn_from_the_flow_in_chunks(monkeypatch):
    """Up to FLOW_CHUNK draws a member's bank is one call with its key (the banks of before); above
    it, calls of FLOW_CHUNK draws with folded keys: the right number of draws, none repeated."""
    import jax

    from popsed_jax.inference import flows
    from popsed_jax.products import posterior

    fc = fitlib.flow_config(FitConfig(**TINY))
    params = flows.init_flow(jax.random.PRNGKey(0), fc)
    draw = jax.jit(flows.sample_flow, static_argnums=(2, 3))
    key = jax.random.PRNGKey(5)
    one = posterior._draw_in_chunks(draw, params, key, 300, fc)
    np.testing.assert_array_equal(one, np.asarray(draw(params, key, 300, fc)))
    monkeypatch.setattr(posterior, "FLOW_CHUNK", 128)
    many = posterior._draw_in_chunks(draw, params, key, 300, fc)
    assert many.shape == (300, 11) and np.unique(many[:, 0]).size == 300
    np.testing.assert_array_equal(many[:128], np.asarray(draw(params, jax.random.fold_in(key, 0), 128, fc)))


def test_the_pooled_population_density_is_the_members_mixture():
    """An ensemble of two copies of one flow has that flow's density (the 1/K normalisation); of
    two different flows, the mean of their densities."""
    import jax

    from popsed_jax.inference import flows
    from popsed_jax.products import posterior

    fc = fitlib.flow_config(FitConfig(**TINY))
    a, b = (flows.init_flow(jax.random.PRNGKey(s), fc) for s in (0, 1))
    # a flow away from the identity it starts at (with much larger weights, float32 inversion
    # no longer round-trips the flow's own draws)
    b = jax.tree_util.tree_map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(2), x.shape), b)
    theta, lq = flows.sample_and_log_prob(b, jax.random.PRNGKey(3), 500, fc)
    theta = np.asarray(theta)
    la, lb = (np.asarray(flows.log_prob_flow(p, theta, fc), np.float64) for p in (a, b))
    np.testing.assert_allclose(lb, np.asarray(lq), atol=1e-2)  # the density of the draws, by the inverse
    assert np.max(np.abs(la - lb)) > 0.1  # the two flows differ
    stack = lambda *ps: jax.tree_util.tree_map(lambda *x: np.stack(x), *ps)  # noqa: E731
    np.testing.assert_allclose(posterior._pooled_log_density(stack(b, b), theta, fc), lb, atol=1e-4)
    np.testing.assert_allclose(posterior._pooled_log_density(stack(a, b), theta, fc), np.logaddexp(la, lb) - np.log(2), atol=1e-4)


def test_old_run_config_reads_as_it_was_fitted(tmp_path):
    """A run folder written before a key existed is read with the value it was fitted with, so
    its flow is rebuilt exactly: before 2026-12-07 there was no flow_tail_bound (the splines
    stopped at +-4); the mass function was Baldry+12, the prior flat, the stellar spectra BC03's."""
    folder = RunFolder(tmp_path / "old").create()
    folder.write_config(FitConfig(flow_tail_bound=5.0))
    assert folder.read_config().flow_tail_bound == 5.0
    d = json.loads(folder["config"].read_text())
    for key in ("flow_tail_bound", "mass_function", "prior", "ssp_library", "min_selected_fraction"):
        d.pop(key)
    folder["config"].write_text(json.dumps(d))
    old = folder.read_config()
    assert (old.flow_tail_bound, old.mass_function, old.prior, old.ssp_library) == (4.0, "baldry12", "flat", "bc03")
    assert old.min_selected_fraction == 0.0  # no floor on the selected fraction before 2026-12-07
    assert FitConfig().ssp_library == "bc03"
    assert fitlib.flow_config(old).tail_bound == 4.0
    assert fitlib.flow_config(FitConfig(flow_tail_bound=5.0)).tail_bound == 5.0
