"""The tutorial notebook runs top to bottom (smoke settings) and produces its figures and tables.

Executes notebooks/tutorial.ipynb with nbclient in a python3 kernel whose working directory is a
temporary folder (so no relative path into the repository can work), with POPSED_SMOKE=1 and
POPSED_TUTORIAL_DIR pointing at the temporary folder so the run folder can be inspected.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "tutorial.ipynb"


def _outputs(nb, kind):
    """All outputs of one kind: 'stream' texts, or the mime bundles of display/execute results."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if kind == "stream" and o["output_type"] == "stream":
                out.append(o["text"])
            elif kind == "data" and o["output_type"] in ("display_data", "execute_result"):
                out.append(o["data"])
    return out


def _cell_text(nb, needle):
    """Stream output of the code cell whose source contains `needle`."""
    cell = next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)
    return "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream" and o["name"] == "stdout")


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "clear the notebook's outputs before committing"
    assert 'SMOKE = os.environ.get("POPSED_SMOKE", "0") == "1"' in code[0].source


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    work = tmp_path_factory.mktemp("tutorial")
    cwd = work / "cwd"
    cwd.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = dict(os.environ, POPSED_SMOKE="1", POPSED_TUTORIAL_DIR=str(work / "files"))
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as in Jupyter
    # the kernel imports popsed_jax from this checkout, whatever is installed
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(cwd)}})
    t0 = time.perf_counter()
    client.execute(env=env, cwd=str(cwd))  # raises CellExecutionError (with the traceback) if a cell fails
    print(f"tutorial notebook executed in {time.perf_counter() - t0:.1f} s")
    return nb, work / "files", cwd


@pytest.mark.slow
def test_runs_and_writes_a_run_folder(executed):
    nb, files, cwd = executed
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    assert list(cwd.iterdir()) == [], "the notebook must write only into its WORK folder"
    run = files / "run_mock"
    for name in ("config.json", "summary.json", "samples.fits", "loss.png", "ppc.png", "corner_vs_truth.png",
                 "evaluation.json", "nz.png", "smf.png", "sfms.png", "report.html"):
        assert (run / name).is_file(), f"{name} missing from the run folder"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["steps"] <= 50, "POPSED_SMOKE=1 must select the tiny settings"
    assert json.loads((run / "run_info.json").read_text())["catalog"] == str(files / "mock.fits")


@pytest.mark.slow
def test_mock_obeys_the_survey_limit(executed):
    from astropy.table import Table

    _, files, _ = executed
    mock = Table.read(files / "mock.fits")
    r = 22.5 - 2.5 * np.log10(np.asarray(mock["flux_sdss2001-r"]))
    assert len(mock) >= 500 and np.all(r < 17.77)  # selection is on the noisy flux the catalog holds
    # the selected galaxies are a biased subset of the volume-weighted population: nearer than its median z
    from popsed_jax.survey.mock import sample_z_volume

    assert np.median(mock["z"]) < np.median(sample_z_volume(20000, 0))


@pytest.mark.slow
def test_outputs_show_figures_and_tables(executed):
    nb, files, _ = executed
    text = "".join(_outputs(nb, "stream"))
    data = _outputs(nb, "data")
    pngs = [d["image/png"] for d in data if "image/png" in d]
    # forward-model figure, 2 mock figures, loss, ppc, corner_vs_truth, nz, smf, sfms
    assert len(pngs) >= 9, f"only {len(pngs)} figures shown"
    # the magnitude table of step 1 (astropy Table): the quiescent galaxy is redder in g-r than the star-forming one
    html = next(d["text/html"] for d in data if "post-starburst" in d.get("text/html", ""))
    header = re.findall(r"<th>(.*?)</th>", html)
    rows = {r[0]: r for r in (re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", html)) if r}
    gr = header.index("g-r")
    assert float(rows["quiescent"][gr]) > float(rows["star-forming"][gr]) + 0.2
    # d r / d logM = -2.5 exactly (flux proportional to mass)
    line = next(ln for ln in _cell_text(nb, "jax.grad").splitlines() if ln.split()[:1] == ["logM"])
    assert float(line.split()[1]) == pytest.approx(-2.5, abs=1e-3)
    # the evaluation table, with every score printed as a finite number
    ev = json.loads((files / "run_mock" / "evaluation.json").read_text())["normalized_w1"]
    assert {"z", "logM", "logM_surviving"} <= set(ev)
    table = _cell_text(nb, "evaluate_run")
    assert "W1(rec,truth)/W1(prior,truth)" in table
    printed = {ln.split()[0]: ln.split()[1:] for ln in table.splitlines() if ln.split()}
    for q, v in ev.items():
        assert np.isfinite(v) and q in printed and float(printed[q][0]) == pytest.approx(v, abs=1e-3)
    assert "validation divergence" in text and "data floor" in text
