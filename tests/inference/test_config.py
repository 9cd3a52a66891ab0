"""The fit configuration: every value validated where it is declared, errors naming key, value,
range and file; help text written once and used by the CLI and the report."""
from __future__ import annotations

import dataclasses

import pytest

from popsed_jax.cli import build_parser, main
from popsed_jax.errors import ConfigError
from popsed_jax.inference.config import FitConfig, config_groups, config_help


@pytest.mark.parametrize("bad, match", [
    (dict(steps=0), "steps must be >= 1, got 0"),
    (dict(members=0), "members must be >= 1, got 0"),
    (dict(members=1.5), "members must be an integer >= 1, got 1.5"),
    (dict(steps="3"), "steps must be an integer >= 1, got '3'"),
    (dict(blur=0.5), "blur must be a list of"),
    (dict(lr=-1e-3), "lr must be > 0"),
    (dict(loss="sinkhorm"), r"loss must be one of \['auto', 'sliced', 'sinkhorn'\]"),
    (dict(z_range=(0.5, 0.1)), "z_range must satisfy 0 < z_min < z_max"),
    (dict(logU=1.0), "logU must be <= 0.0"),
])
def test_bad_values_name_key_value_and_range(bad, match):
    with pytest.raises(ConfigError, match=match):
        FitConfig(**bad)


def test_toml_errors_name_the_file(tmp_path):
    p = tmp_path / "fit.toml"
    p.write_text("[fit]\nsteps = \"3\"\n")
    with pytest.raises(ConfigError, match=rf"steps must be an integer >= 1, got '3' in {p}"):
        FitConfig.from_toml(p)
    p.write_text("[fit\nsteps = 3\n")
    with pytest.raises(ConfigError, match=rf"{p}: TOML syntax error"):
        FitConfig.from_toml(p)
    p.write_text("[fit]\nstepz = 3\n")
    with pytest.raises(ConfigError, match=r"unknown fit configuration key\(s\) \['stepz'\] in .*known:"):
        FitConfig.from_toml(p)


def test_old_config_json_still_reads_and_round_trips():
    old = {k: v for k, v in FitConfig().to_dict().items() if k not in ("nebular", "logU")}  # a run of before nebular
    cfg = FitConfig.from_dict(old)
    assert cfg == FitConfig() and FitConfig.from_dict(dataclasses.asdict(cfg)) == cfg


def test_cli_refuses_bad_options_with_one_line(capsys):
    assert main(["fit", "sdss", "--steps", "0", "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err
    assert "steps must be >= 1, got 0" in err and "Traceback" not in err
    assert main(["fit", "sdss", "--members", "0", "--out", "/nonexistent/x"]) == 2
    assert "members must be >= 1, got 0" in capsys.readouterr().err


def test_help_text_is_declared_once_and_used_by_cli_and_groups():
    h = config_help()
    assert set(h) == {f.name for f in dataclasses.fields(FitConfig)}
    grouped = [k for _, keys in config_groups() for k in keys]
    assert sorted(grouped) == sorted(h)
    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    steps = next(a for a in fit._actions if a.dest == "steps")
    assert steps.help.startswith(h["steps"])


def test_auto_loss_is_sliced_on_cpu_and_ott_sinkhorn_on_accelerators():
    from popsed_jax.inference.fit import training_loss

    cfg = FitConfig()
    assert cfg.loss == "auto"
    assert training_loss(cfg, "cpu") == {"kind": "sliced", "solver": "scaling", "backend": "cpu"}
    for backend in ("gpu", "cuda", "tpu"):
        assert training_loss(cfg, backend)["kind"] == "sinkhorn"
        assert training_loss(cfg, backend)["solver"] == "ott"
    assert training_loss(FitConfig(loss="sliced"), "gpu")["kind"] == "sliced"
    assert training_loss(FitConfig(loss="sinkhorn"), "cpu") == {"kind": "sinkhorn", "solver": "scaling", "backend": "cpu"}
