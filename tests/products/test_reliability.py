"""Nothing lost, nothing garbled: damaged checkpoints, mixed or locked run folders, failed writes,
signals, and inputs validated before anything is written."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

import popsed_jax as pj
from popsed_jax.errors import RunFolderError
from popsed_jax.survey.catalog import catalog_subset, read_sdss_main, write_catalog

TINY = dict(steps=6, n_sim=256, batch_obs=256, n_val=256, val_every=3, checkpoint_every=3, flow_layers=2, flow_hidden=16,
            flow_bins=8)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny SDSS run (6 steps, checkpoints at 3 and 6) and its parameters."""
    out = tmp_path_factory.mktemp("runs") / "done"
    res = pj.run_fit("sdss", pj.FitConfig(**TINY), out, n_samples=300, progress=False)
    return out, res


def _leaves(params):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def _copy(src, tmp_path, name="run"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["truncate payload", pytest.param("corrupt sidecar", marks=pytest.mark.slow)])
def test_damaged_newest_checkpoint_falls_back_and_finishes_identically(finished, tmp_path, damage):
    src, ref = finished
    run = _copy(src, tmp_path)
    newest = pj.RunFolder(run).latest_checkpoint()
    assert newest.name == "step_0000006.msgpack"
    if damage == "truncate payload":
        newest.write_bytes(newest.read_bytes()[:100])
    else:
        newest.with_suffix(".json").write_text("{not json")
    with pytest.warns(UserWarning, match=r"skipping checkpoint .*step_0000006"):
        res = pj.run_fit("sdss", pj.FitConfig(**TINY), run, resume=True, n_samples=300, progress=False)
    # resumed from step 3, re-ran steps 3-5: the same parameters as the uninterrupted run
    for a, b in zip(_leaves(res["params"]), _leaves(ref["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_no_readable_checkpoint_is_an_error_not_a_silent_restart(finished, tmp_path):
    run = _copy(finished[0], tmp_path)
    for ck in pj.RunFolder(run).checkpoints():
        ck.write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RunFolderError, match="none of the 2 checkpoints"):
            pj.run_fit("sdss", pj.FitConfig(**TINY), run, resume=True, n_samples=300, progress=False)


def test_a_folder_holding_a_run_is_not_mixed_with_a_new_one(finished, tmp_path):
    run = _copy(finished[0], tmp_path)
    info_before = (run / "run_info.json").read_text()
    with pytest.raises(RunFolderError, match=r"already holds a run.*--resume.*--overwrite"):
        pj.run_fit("sdss", pj.FitConfig(**dict(TINY, seed=1)), run, n_samples=300, progress=False)
    assert (run / "run_info.json").read_text() == info_before
    # resuming with another catalog is refused, naming both
    sdss = read_sdss_main()
    other = tmp_path / "other.fits"
    write_catalog(catalog_subset(sdss, np.arange(sdss.n) % 2 == 0), other)
    with pytest.raises(RunFolderError, match=r"other\.fits.*fitted sdss.*--force"):
        pj.run_fit(other, pj.FitConfig(**TINY), run, resume=True, n_samples=300, progress=False)
    assert (run / "run_info.json").read_text() == info_before


def test_inputs_are_validated_before_anything_is_written(finished, tmp_path):
    run = _copy(finished[0], tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    sdss = read_sdss_main()
    small = tmp_path / "small.fits"
    write_catalog(catalog_subset(sdss, np.arange(sdss.n) < 50), small)
    with pytest.raises(ValueError, match="minibatch needs 256"):
        pj.run_fit(small, pj.FitConfig(**TINY), run, overwrite=True, progress=False)
    with pytest.raises(pj.CatalogError, match="not found"):
        pj.run_fit(tmp_path / "missing.fits", pj.FitConfig(**TINY), run, overwrite=True, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_a_locked_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    folder = pj.RunFolder(tmp_path / "run").create()
    folder["lock"].write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname(), "since": "now"}))
    with pytest.raises(RunFolderError, match=rf"in use by process {os.getpid()}"):
        with folder.lock():
            pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    folder["lock"].write_text(json.dumps({"pid": int(dead), "host": __import__("socket").gethostname()}))
    with folder.lock():
        assert json.loads(folder["lock"].read_text())["pid"] == os.getpid()
    assert not folder["lock"].exists()


def test_a_failed_checkpoint_write_names_the_path_and_keeps_the_previous(finished, tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    run = _copy(finished[0], tmp_path)
    folder = pj.RunFolder(run)
    good = folder.latest_checkpoint().read_bytes()
    real = Path.write_bytes

    def full(self, data):
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(RunFolderError, match=r"cannot write .*step_0000009\.msgpack: No space left on device"):
        folder.save_checkpoint(9, finished[1]["params"], {"x": np.zeros(1)}, {})
    monkeypatch.undo()
    assert folder.latest_checkpoint().name == "step_0000006.msgpack" and folder.latest_checkpoint().read_bytes() == good
    assert not list((run / "checkpoints").glob("*.tmp"))


CHILD = """
import sys, json
import popsed_jax as pj
from popsed_jax.cli import main
sys.exit(main(["fit", "sdss", "--out", sys.argv[1], "--config", sys.argv[2], "--n-samples", "300"] + sys.argv[3:]))
"""


@pytest.mark.slow
def test_sigint_stops_at_a_step_boundary_with_a_checkpoint(tmp_path):
    cfg = tmp_path / "fit.toml"
    cfg.write_text("[fit]\n" + "\n".join(f"{k} = {v}" for k, v in dict(TINY, steps=5000, checkpoint_every=2500).items()) + "\n")
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(run), str(cfg)], stderr=subprocess.PIPE, text=True)
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: p.stderr.read(1), "")), daemon=True)
    reader.start()
    t0 = time.time()
    # wait for the progress bar to show a step done (compiled and stepping; a fixed sleep was not
    # enough on a loaded machine), then interrupt
    while not re.search(r"\|\s*[1-9]\d*/5000", "".join(chunks)):
        assert p.poll() is None and time.time() - t0 < 600, "".join(chunks)
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(chunks)
    assert p.returncode == 130, err
    assert "stopped by SIGINT after step" in err and "--resume" in err and "Traceback" not in err
    cks = pj.RunFolder(run).checkpoints()
    assert len(cks) >= 1 and not (run / ".lock").exists() and not (run / "summary.json").exists()
    done = json.loads(cks[-1].with_suffix(".json").read_text())["step"]
    assert 0 < done < 5000
    hist = json.loads(cks[-1].with_suffix(".json").read_text())["history"]
    assert hist["step"][-1] == done - 1  # the checkpoint holds every step done


DETERMINISM_CHILD = """
import sys, json
import popsed_jax as pj
tiny = json.loads(sys.argv[2])
for seed in (0, 1):
    pj.run_fit("sdss", pj.FitConfig(**dict(tiny, seed=seed)), f"{sys.argv[1]}/seed{seed}", n_samples=300, progress=False)
"""


@pytest.mark.slow
def test_same_seed_same_samples_in_a_fresh_process_and_other_seeds_differ(finished, tmp_path):
    subprocess.run([sys.executable, "-c", DETERMINISM_CHILD, str(tmp_path), json.dumps(TINY)], check=True)
    ref = pj.RunFolder(finished[0]).read_samples()
    same = pj.RunFolder(tmp_path / "seed0").read_samples()
    other = pj.RunFolder(tmp_path / "seed1").read_samples()
    for c in ("z", "logM", "logZ", "flux_sdss2001-r", "selected"):
        np.testing.assert_array_equal(np.asarray(same[c]), np.asarray(ref[c]))
        assert not np.array_equal(np.asarray(other[c]), np.asarray(ref[c])) or c == "selected"


def test_a_population_with_no_selected_samples_stops_before_the_products(finished, tmp_path, monkeypatch):
    from popsed_jax.inference import fit as fitlib
    from popsed_jax.products import runs

    run = _copy(finished[0], tmp_path)
    real = fitlib.sample

    def nothing_selected(*a, **k):
        cols = real(*a, **k)
        cols["selected"] = np.zeros_like(cols["selected"])
        return cols

    monkeypatch.setattr(fitlib, "sample", nothing_selected)
    for f in ("loss.png", "ppc.png", "corner.png"):
        (run / f).unlink()
    with pytest.raises(pj.PopsedError, match=r"no samples that pass the survey limit 'r<17.77[^']*'.*members \[0\] flagged"):
        runs.run_fit("sdss", pj.FitConfig(**TINY), run, resume=True, n_samples=300, progress=False)
    summary = pj.RunFolder(run).read_json("summary")
    assert summary["flagged_members"] == [0] and summary["members_without_selected_samples"] == [0]
    assert (run / "samples.fits").exists() and not (run / "corner.png").exists()
