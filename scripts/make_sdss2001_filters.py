"""Generate popsed_jax/data/filters/sdss2001-{u,g,r,i,z}.ecsv from the kcorrect wheel.

The SDSS 2.5m imager's response functions as measured by M. Doi in January 2001 (determined
by J. Gunn, M. Doi and D. Eisenstein, 2001-12-18), averaged over the six camera columns,
through 1.3 airmasses at APO: kcorrect 5.1.9's `data/responses/sdss_{u,g,r,i,z}0.dat`,
column `pass` ("SDSS magnitudes are calibrated to this airmass"). These are the curves the
SDSS -> AB offsets (u -0.04, z +0.02; Eisenstein et al. 2006) and kcorrect (Blanton & Roweis
2007) were derived with. speclite's `sdss2010-*` are Doi et al. (2010)'s later in-situ
measurements; their u band is 34 A redder, which makes old populations 0.04-0.11 mag bluer
in u - g (docs/physics.md#filter-curves).

Run:  python scripts/make_sdss2001_filters.py [--out DIR]   (needs `pip install kcorrect`)
The test suite checks that the committed files reproduce the wheel's curves.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

HEADER = """# %ECSV 1.0
# ---
# datatype:
# - {{name: wavelength, unit: Angstrom, datatype: float64}}
# - {{name: response, datatype: float64}}
# meta: !!omap
# - {{band_name: {band}}}
# - {{airmass: 1.3}}
# - {{description: 'SDSS 2.5m imager {band}-band response per photon through 1.3 airmasses,
#     measured by M. Doi in January 2001, averaged over the six camera columns (J. Gunn,
#     M. Doi, D. Eisenstein, 2001-12-18): column pass of kcorrect 5.1.9 data/responses/sdss_{band}0.dat
#     (BSD-3, see LICENSE.kcorrect). The curves the SDSS AB offsets were derived with.'}}
# - {{group_name: sdss2001}}
wavelength response
"""


def read_kcorrect_response(path) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength [A], 1.3-airmass response) from a kcorrect SDSS response table; the one
    negative value (r at 5380 A, -0.0013: an undershoot of the spline through the measurements)
    is set to 0."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("|") and "lambda" not in line:
            rows.append([float(x) for x in line.strip().strip("|").split("|")])
    a = np.asarray(rows)
    return a[:, 0], np.clip(a[:, 3], 0.0, None)


def kcorrect_responses_dir() -> Path:
    import kcorrect
    return Path(os.path.dirname(kcorrect.__file__)) / "data" / "responses"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "popsed_jax" / "data" / "filters"))
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for band in "ugriz":
        w, r = read_kcorrect_response(kcorrect_responses_dir() / f"sdss_{band}0.dat")
        body = "".join(f"{x:.1f} {y:.6g}\n" for x, y in zip(w, r))
        (out / f"sdss2001-{band}.ecsv").write_text(HEADER.format(band=band) + body)
        print(f"wrote {out / f'sdss2001-{band}.ecsv'} ({w.size} points)")


if __name__ == "__main__":
    main()
