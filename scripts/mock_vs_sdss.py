"""Regenerate docs/mock_vs_sdss.png: the Table-2 mock against the SDSS main sample
(n(z), r-band counts, per-band errors vs flux).

    python scripts/mock_vs_sdss.py [--n 10000] [--out docs/mock_vs_sdss.png]
"""
from __future__ import annotations

import argparse
import pathlib
import time

from popsed_jax.products.plots import plot_mock_vs_sdss
from popsed_jax.survey.catalog import read_sdss_main
from popsed_jax.survey.mock import draw_mock
from popsed_jax.survey.noise import fit_noise_model
from popsed_jax.survey.selection import select_catalog

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--n", type=int, default=10000)
ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "docs" / "mock_vs_sdss.png"))
a = ap.parse_args()
sdss = read_sdss_main()
t0 = time.perf_counter()
tab = draw_mock(a.n, seed=1, noise_model=fit_noise_model(sdss), progress=True)
print(f"mock: {len(tab)} in {time.perf_counter() - t0:.1f} s; {tab.meta['PSMETA']}")
plot_mock_vs_sdss(tab, select_catalog(sdss, "r<17.77"), a.out)
print("wrote", a.out)
