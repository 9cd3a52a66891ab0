"""A run folder: every file a fit, an evaluation or the science products write, by name.

    RUN/run_info.json      the catalog the run fitted (path, size, bands)
    RUN/config.json        the FitConfig
    RUN/noise_model.json   the fitted noise model (+ noise_model.png)
    RUN/checkpoints/       step_NNNNNNN.msgpack (parameters, optimizer state) + .json (step, history)
    RUN/history.json       per-step losses, schedules, gradient norms, validation divergences
    RUN/summary.json       validation / data floor per member, flagged members, time, devices
    RUN/samples.fits       pooled population samples (theta, derived quantities, noisy fluxes,
                           ``selected``, ``member``)
    RUN/loss.png, ppc.png, corner.png                     fit figures
    RUN/evaluation.json, corner_vs_truth.png               ``evaluate`` against a mock's truth
    RUN/science.json, nz.png, smf.png, sfms.png, masses_vs_kcorrect.png    ``plot``
    RUN/report.html                                         ``report``
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

__all__ = ["RunFolder", "FILES"]

FILES = {
    "run_info": "run_info.json", "config": "config.json", "noise_model": "noise_model.json",
    "noise_plot": "noise_model.png", "checkpoints": "checkpoints", "history": "history.json",
    "summary": "summary.json", "samples": "samples.fits", "loss_plot": "loss.png", "ppc_plot": "ppc.png",
    "corner": "corner.png", "evaluation": "evaluation.json", "corner_truth": "corner_vs_truth.png",
    "science": "science.json", "nz_plot": "nz.png", "smf_plot": "smf.png", "sfms_plot": "sfms.png",
    "masses_plot": "masses_vs_kcorrect.png", "report": "report.html",
}


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """The files of one run, under ``path``. ``folder["summary"]`` is the summary's path."""

    path: Path

    def __init__(self, path):
        object.__setattr__(self, "path", Path(path))

    def __getitem__(self, key: str) -> Path:
        return self.path / FILES[key]

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def exists(self, key: str) -> bool:
        return self[key].exists()

    def create(self) -> "RunFolder":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # ---- JSON files ---------------------------------------------------------------------
    def read_json(self, key: str, required: bool = True):
        p = self[key]
        if not p.exists():
            if required:
                raise FileNotFoundError(f"{self.path} has no {FILES[key]}: is it a popsed-jax run folder?")
            return None
        return json.loads(p.read_text())

    def write_json(self, key: str, obj, indent: int | None = 2) -> Path:
        p = self[key]
        p.write_text(json.dumps(obj, indent=indent))
        return p

    def read_config(self):
        """The run's FitConfig. Runs written before nebular emission existed (no ``nebular``
        key) were fitted without it, and read so."""
        from ..inference.config import FitConfig

        d = self.read_json("config")
        d.setdefault("nebular", False)
        return FitConfig.from_dict(d, source=str(self["config"]))

    def write_config(self, cfg) -> Path:
        return self.write_json("config", cfg.to_dict())

    def read_noise_model(self):
        from ..survey.noise import load_noise_model

        return load_noise_model(self["noise_model"])

    def write_noise_model(self, noise) -> Path:
        from ..survey.noise import save_noise_model

        save_noise_model(noise, self["noise_model"])
        return self["noise_model"]

    # ---- population samples --------------------------------------------------------------
    def read_samples(self):
        """The population samples as an astropy Table."""
        from astropy.table import Table

        if not self.exists("samples"):
            raise FileNotFoundError(f"{self.path} is not a finished run folder (no {FILES['samples']})")
        return Table.read(self["samples"])

    def write_samples(self, cols: dict) -> Path:
        from astropy.table import Table

        Table(cols).write(self["samples"], overwrite=True)
        return self["samples"]

    # ---- checkpoints -----------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        d = self["checkpoints"]
        return sorted(d.glob("step_*.msgpack")) if d.exists() else []

    def latest_checkpoint(self) -> Path | None:
        c = self.checkpoints()
        return c[-1] if c else None

    def save_checkpoint(self, step: int, params, opt_state, history: dict, keep: int = 3) -> Path:
        """Write parameters and optimizer state (atomically) and the step's history; keep the
        newest ``keep`` checkpoints."""
        import jax
        from flax import serialization

        d = self["checkpoints"]
        d.mkdir(parents=True, exist_ok=True)
        payload = serialization.to_bytes({"params": jax.device_get(params), "opt_state": jax.device_get(opt_state)})
        p = d / f"step_{step:07d}.msgpack"
        tmp = p.with_suffix(".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, p)
        (d / f"step_{step:07d}.json").write_text(json.dumps({"step": step, "history": history}))
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        return p

    @staticmethod
    def load_checkpoint(path: Path, params_template, opt_template):
        """-> (params, opt_state, step, history) of a checkpoint file."""
        from flax import serialization

        state = serialization.from_bytes({"params": params_template, "opt_state": opt_template}, Path(path).read_bytes())
        meta = json.loads(Path(path).with_suffix(".json").read_text())
        return state["params"], state["opt_state"], meta["step"], meta["history"]
