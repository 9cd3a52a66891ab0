"""The command line: ssp info, forward."""
from __future__ import annotations

import numpy as np
from astropy.table import Table

from popsed_jax.cli import main


def _params(path, n=5, fmt=None):
    rng = np.random.default_rng(2)
    t = Table({
        "z": rng.uniform(0.02, 0.3, n), "logM": rng.uniform(9, 11.5, n),
        "beta1": np.full(n, 0.1), "beta2": np.full(n, 0.2), "beta3": np.full(n, 0.3), "beta4": np.full(n, 0.4),
        "t_burst": rng.uniform(0.1, 5, n), "f_burst": rng.uniform(0, 0.3, n), "logZ": rng.uniform(-1, 0.2, n),
        "n_dust": rng.uniform(-1, 0.5, n), "tau1": rng.uniform(0, 1, n), "tau2": rng.uniform(0, 1, n),
    })
    t.write(path, format=fmt, overwrite=True)
    return t


def test_forward_cli_writes_fluxes(tmp_path, model):
    from popsed_jax.physics.forward import forward_fluxes, theta_from_columns

    t = _params(tmp_path / "p.fits")
    assert main(["forward", str(tmp_path / "p.fits"), "--out", str(tmp_path / "o.ecsv"), "--derived"]) == 0
    out = Table.read(tmp_path / "o.ecsv")
    for b in ("u", "g", "r", "i", "z"):
        assert f"flux_sdss2001-{b}" in out.colnames
    assert "sfr_100myr" in out.colnames and "logM" in out.colnames
    ref = np.asarray(forward_fluxes(model, theta_from_columns(t)))
    got = np.stack([out[f"flux_{b}"] for b in model.bands], -1)
    np.testing.assert_allclose(got, ref, rtol=2e-5)


def test_forward_cli_errors_name_the_fault(tmp_path, capsys):
    t = _params(tmp_path / "p.fits")
    assert main(["forward", str(tmp_path / "p.fits"), "--filters", "sdss2001-r,bogus-x", "--out", str(tmp_path / "o.fits")]) == 2
    assert "bogus-x" in capsys.readouterr().err
    t.remove_column("tau2")
    t.write(tmp_path / "q.fits", overwrite=True)
    assert main(["forward", str(tmp_path / "q.fits"), "--out", str(tmp_path / "o.fits")]) == 2
    assert "tau2" in capsys.readouterr().err


def test_ssp_info(capsys):
    assert main(["ssp", "info"]) == 0
    out = capsys.readouterr().out
    assert "(7, 220" in out and "metallicity" in out


def test_catalog_info_cli(capsys):
    from popsed_jax.survey.catalog import default_sdss_path

    assert main(["catalog", "info", str(default_sdss_path())]) == 0
    out = capsys.readouterr().out
    assert "10000" in out and "sdss2001-r" in out and "depth" in out


def test_plot_refuses_a_negative_area(tmp_path, capsys):
    assert main(["plot", str(tmp_path), "--area", "-5"]) == 2
    err = capsys.readouterr().err
    assert "area_deg2 must be a positive number, got -5.0" in err and "Traceback" not in err


def test_evaluate_verdict_follows_the_number():
    from popsed_jax.products.evaluate import photometry_verdict

    assert "cannot tell" in photometry_verdict({"z": 0.4})
    assert "CAN tell them apart" in photometry_verdict({"z": 36.8})
