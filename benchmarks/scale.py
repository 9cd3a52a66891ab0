"""Survey-size catalogs: a training step must not grow with the catalog.

    python benchmarks/scale.py [--mock runs/mock_1e6.fits] [--sizes 1e4 1e5 1e6] [--steps 10] [--ensemble-steps 30]
                               [--json bench_out/scale.json]

For each catalog size N (the first N rows of a `popsed-jax mock`, written to bench_out/ once),
a fresh process reads the catalog (FITS, memory-mapped), selects it, fits the noise model,
standardizes the features, builds the fit and times --steps training steps at the default
configuration (after one compile step); it reports the time of each stage, the median step
and the process's peak resident memory. The reference is the smallest size, measured in the
same run: the summary gives step(N_max) / step(N_min) (goal ~1) and the memory. The mock's
own generation time and draw counts come from its metadata (``popsed-jax mock`` records them);
without --mock, a mock of the largest size is drawn first (1e6: ~15-25 min on 2 cores).

With --ensemble-steps S > 0 it also times the ensemble step of `popsed-jax fit` (--members 4,
default configuration, the smallest catalog) launched as one process with 4 forced host devices
and as two local processes of 2 devices each on jax.distributed (localhost coordinator): the
median of the per-step wall times in history.json, past the compile step and leaving out the
steps that validate or checkpoint. The ratio two/one is the cost of the distributed runtime.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: kB


def one_size(path, steps):
    """Child process: prepare and step a fit on the catalog at `path`; JSON on stdout."""
    import jax

    from popsed_jax.inference import fit as fitlib
    from popsed_jax.inference.config import FitConfig
    from popsed_jax.survey.catalog import load_catalog

    out = {"rss_start_gb": _rss_gb()}
    t0 = time.perf_counter()
    cat = load_catalog(path)
    out["read_s"], out["n_catalog"] = time.perf_counter() - t0, int(cat.n)
    out["rss_after_read_gb"] = _rss_gb()
    t0 = time.perf_counter()
    problem = fitlib.prepare(cat, FitConfig())
    out["prepare_s"] = time.perf_counter() - t0
    out["n_train"], out["n_val"] = int(problem.obs_train.shape[0]), int(problem.obs_val.shape[0])
    del cat
    state = fitlib.init(problem)
    step = fitlib.make_step(problem)
    t0 = time.perf_counter()
    state, m = step(state)
    jax.block_until_ready(state.params)
    out["compile_step_s"] = time.perf_counter() - t0
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = step(state)
        jax.block_until_ready(state.params)
        ts.append(time.perf_counter() - t0)
    out["step_s"] = float(np.median(ts))
    out["step_s_all"] = [round(t, 4) for t in ts]
    out["peak_rss_gb"] = _rss_gb()
    print("SCALE_JSON " + json.dumps(out))


def subset(mock, n, folder):
    """The first n rows of the mock (drawn in random order) as a FITS catalog, written once."""
    from astropy.table import Table
    p = os.path.join(folder, f"scale_mock_{n}.fits")
    if not os.path.exists(p):
        t = Table.read(mock, memmap=True)
        if n > len(t):
            raise SystemExit(f"{mock} has {len(t)} rows; cannot take {n}")
        keep = ["id"] + [c for c in t.colnames if c.startswith(("flux_", "flux_err_")) and not c.startswith("flux_true_")] + ["z_spec"]
        t[keep][:n].write(p, overwrite=True)
    return p


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit_env(devices):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POPSED_", "SLURM_", "OMPI_"))}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    return env


def _median_step(run, steps):
    """Median wall time of the steps that neither validate nor checkpoint (history.json)."""
    h = json.load(open(os.path.join(run, "history.json")))
    t = np.diff(np.asarray(h["seconds"], float))
    skip = set(h.get("val_step", [])) | {steps}
    ok = [dt for s, dt in zip(h["step"][1:], t) if s > 2 and s not in skip]
    return float(np.median(ok)), len(ok)


def ensemble_layouts(catalog, folder, steps, members=4):
    """Time the ensemble step as 1 process x 4 devices and as 2 processes x 2 devices."""
    cfg = os.path.join(folder, "ensemble.toml")
    with open(cfg, "w") as f:  # no validation or checkpoint inside the timed steps
        f.write(f"[fit]\nsteps = {steps}\nval_every = {steps}\ncheckpoint_every = {steps}\n")
    base = [sys.executable, "-m", "popsed_jax.cli", "fit", catalog, "--config", cfg, "--members", str(members),
            "--n-samples", "100", "--overwrite"]
    out = {}
    one = os.path.join(folder, "ens_one")
    t0 = time.perf_counter()
    r = subprocess.run(base + ["--out", one], env=_fit_env(members), capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"one-process ensemble fit failed:\n{r.stderr[-3000:]}")
    out["one_process"] = dict(zip(("step_s", "n_steps_timed"), _median_step(one, steps)), wall_s=time.perf_counter() - t0,
                              layout=f"1 process x {members} devices")
    two = os.path.join(folder, "ens_two")
    port = _free_port()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(base + ["--out", two, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                      "--process-id", str(i)], env=_fit_env(members // 2),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    errs = [p.communicate()[1] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("two-process ensemble fit failed:\n" + "\n".join(e[-2000:] for e in errs))
    out["two_processes"] = dict(zip(("step_s", "n_steps_timed"), _median_step(two, steps)), wall_s=time.perf_counter() - t0,
                                layout=f"2 processes x {members // 2} devices")
    out["two_over_one"] = out["two_processes"]["step_s"] / out["one_process"]["step_s"]
    out["members"], out["catalog"], out["steps"] = members, catalog, steps
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mock", default=None, help="a popsed-jax mock with at least max(--sizes) rows (default: draw one)")
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", default="bench_out/scale.json")
    ap.add_argument("--ensemble-steps", type=int, default=30,
                    help="steps of the 1-process vs 2-process --members 4 fit (0: skip)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        return one_size(a.one, a.steps)

    folder = os.path.dirname(a.json) or "."
    os.makedirs(folder, exist_ok=True)
    sizes = [int(s) for s in a.sizes]
    mock = a.mock
    if mock is None:
        mock = os.path.join(folder, f"scale_mock_full_{max(sizes)}.fits")
        if not os.path.exists(mock):
            subprocess.run(["popsed-jax", "mock", "--n", str(max(sizes)), "--seed", "7", "--out", mock], check=True)
    from astropy.io import fits
    meta = json.loads(fits.getheader(mock, 1).get("PSMETA", "{}")) if mock.endswith(".fits") else {}
    result = {"mock": mock, "mock_generation": {k: meta.get(k) for k in
                                                 ("seconds", "n_drawn", "n_forward", "visible_fraction", "n_prior_equivalent", "population")},
              "sizes": {}}
    for n in sizes:
        p = subset(mock, n, folder) if n < fits.getheader(mock, 1)["NAXIS2"] else mock
        r = subprocess.run([sys.executable, __file__, "--one", p, "--steps", str(a.steps)], capture_output=True, text=True)
        line = [x for x in r.stdout.splitlines() if x.startswith("SCALE_JSON ")]
        if r.returncode or not line:
            raise SystemExit(f"size {n} failed:\n{r.stderr[-3000:]}")
        result["sizes"][str(n)] = json.loads(line[0][len("SCALE_JSON "):])
    lo, hi = result["sizes"][str(min(sizes))], result["sizes"][str(max(sizes))]
    result["step_ratio_max_over_min"] = hi["step_s"] / lo["step_s"]
    ens = ""
    if a.ensemble_steps > 0:
        n0 = min(sizes)
        p0 = subset(mock, n0, folder) if n0 < fits.getheader(mock, 1)["NAXIS2"] else mock
        e = result["ensemble"] = ensemble_layouts(p0, folder, a.ensemble_steps)
        ens = (f"; --members 4 step {e['one_process']['step_s']:.2f} s in 1 process x 4 devices, "
               f"{e['two_processes']['step_s']:.2f} s in 2 processes x 2 (ratio {e['two_over_one']:.2f})")
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    g = result["mock_generation"]
    gen = f"; mock drawn in {g['seconds']} s" if g.get("seconds") else ""
    print(f"scale: step {lo['step_s']:.3f} s at N={min(sizes):.0e}, {hi['step_s']:.3f} s at N={max(sizes):.0e} "
          f"(ratio {result['step_ratio_max_over_min']:.2f}); prepare {hi['prepare_s']:.1f} s, peak RSS "
          f"{hi['peak_rss_gb']:.2f} GB at N={max(sizes):.0e} ({lo['peak_rss_gb']:.2f} GB at {min(sizes):.0e}){gen}{ens} -> {a.json}")


if __name__ == "__main__":
    main()
