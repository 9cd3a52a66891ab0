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
    RUN/galaxies.fits, photoz.json, photoz.png             ``posterior`` (``_plain`` for the plain prior)
    RUN/report.html                                         ``report``
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import time
import warnings
from pathlib import Path

from ..errors import RunFolderError

__all__ = ["RunFolder", "FILES", "file_sha256"]

FILES = {
    "run_info": "run_info.json", "config": "config.json", "noise_model": "noise_model.json",
    "noise_plot": "noise_model.png", "checkpoints": "checkpoints", "history": "history.json",
    "summary": "summary.json", "samples": "samples.fits", "loss_plot": "loss.png", "ppc_plot": "ppc.png",
    "corner": "corner.png", "evaluation": "evaluation.json", "corner_truth": "corner_vs_truth.png",
    "science": "science.json", "nz_plot": "nz.png", "smf_plot": "smf.png", "sfms_plot": "sfms.png",
    "masses_plot": "masses_vs_kcorrect.png", "report": "report.html", "lock": ".lock",
    "galaxies": "galaxies.fits", "photoz": "photoz.json", "photoz_plot": "photoz.png",
}
# the files that make a folder "a run" (a new fit refuses to mix with them)
_RUN_MARKERS = ("run_info", "config", "summary", "checkpoints")


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: a failed write (disk
    full, read-only folder) leaves the previous file intact and raises RunFolderError."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise RunFolderError(f"cannot write {path}: {err.strerror or err}") from None


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
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"cannot create the run folder {self.path}: {err.strerror or err}") from None
        if not os.access(self.path, os.W_OK):
            raise RunFolderError(f"the run folder {self.path} is not writable")
        return self

    # ---- identity, locking, mixing -------------------------------------------------------
    def holds_a_run(self) -> bool:
        return any(self.exists(k) for k in _RUN_MARKERS)

    def clear(self) -> None:
        """Remove every file of a run (those named in FILES, and the checkpoints)."""
        import shutil

        for key, name in FILES.items():
            p = self.path / name
            if key == "checkpoints" and p.is_dir():
                shutil.rmtree(p)
            elif key != "lock" and p.exists():
                p.unlink()

    def check_new_run(self, run_info: dict, resume: bool, overwrite: bool, force: bool = False) -> None:
        """Refuse to mix two runs in one folder: a new fit into a folder holding a run needs
        ``overwrite`` (which clears it); a resumed fit must be of the catalog the run recorded
        (same SHA-256, or same name for the shipped SDSS sample) unless ``force``."""
        if not self.holds_a_run():
            return
        old = self.read_json("run_info", required=False) or {}
        if overwrite and not resume:
            self.clear()
            return
        if not resume:
            raise RunFolderError(
                f"{self.path} already holds a run (catalog {old.get('catalog', '?')}); continue it with --resume or "
                "replace it with --overwrite")
        same = (old.get("catalog_sha256") == run_info.get("catalog_sha256") if "catalog_sha256" in old
                else old.get("catalog") == run_info.get("catalog"))
        if old and not same and not force:
            raise RunFolderError(
                f"--resume with catalog {run_info.get('catalog_path', run_info.get('catalog'))} (sha256 "
                f"{str(run_info.get('catalog_sha256'))[:12]}), but {self.path} fitted {old.get('catalog_path', old.get('catalog'))} "
                f"(sha256 {str(old.get('catalog_sha256'))[:12]}); pass --force to resume anyway")

    @contextlib.contextmanager
    def lock(self):
        """Hold RUN/.lock (this process's pid and host) while a fit writes the folder; a second
        fit into the same folder is refused while the first one's process is alive."""
        p = self["lock"]
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = json.loads(p.read_text())
                except (OSError, ValueError):
                    owner = {}
                if owner.get("host") == me["host"] and _pid_alive(owner.get("pid")):
                    raise RunFolderError(
                        f"{self.path} is in use by process {owner['pid']} on {owner['host']} (since {owner.get('since')}); "
                        f"wait for it, or remove {p} if that process is gone") from None
                if owner.get("host") not in (None, me["host"]):
                    raise RunFolderError(f"{self.path} is locked by process {owner.get('pid')} on host {owner['host']}; "
                                         f"remove {p} if that fit is over") from None
                p.unlink(missing_ok=True)  # a stale lock of a dead process
                continue
            except OSError as err:
                raise RunFolderError(f"cannot lock {self.path}: {err.strerror or err}") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            break
        try:
            yield self
        finally:
            p.unlink(missing_ok=True)

    # ---- JSON files ---------------------------------------------------------------------
    def read_json(self, key: str, required: bool = True):
        p = self[key]
        if not p.exists():
            if required:
                raise FileNotFoundError(f"{self.path} has no {FILES[key]}: is it a popsed-jax run folder?")
            return None
        try:
            return json.loads(p.read_text())
        except ValueError as err:
            raise RunFolderError(f"{p} is not valid JSON ({err})") from None

    def write_json(self, key: str, obj, indent: int | None = 2) -> Path:
        p = self[key]
        _atomic_write(p, json.dumps(obj, indent=indent).encode())
        return p

    def read_config(self):
        """The run's FitConfig. Keys that runs written before them lack are read as those runs
        were fitted: no nebular emission, the flat prior, the box's logZ range of then, the
        Baldry+12 mass function, the flow's spline range of +-4, BC03's own spectra, no floor on
        the selected fraction."""
        from ..inference.config import FitConfig

        d = self.read_json("config")
        for key, then in (("nebular", False), ("prior", "flat"), ("logz_range", (-2.6, 0.3)), ("mass_function", "baldry12"),
                          ("flow_tail_bound", 4.0), ("ssp_library", "bc03"), ("min_selected_fraction", 0.0)):
            d.setdefault(key, then)
        return FitConfig.from_dict(d, source=str(self["config"]))

    def write_config(self, cfg) -> Path:
        return self.write_json("config", cfg.to_dict())

    def read_noise_model(self):
        from ..survey.noise import load_noise_model

        return load_noise_model(self["noise_model"])

    def write_noise_model(self, noise) -> Path:
        _atomic_write(self["noise_model"], json.dumps(noise.to_dict(), indent=1).encode())
        return self["noise_model"]

    # ---- population samples --------------------------------------------------------------
    def read_samples(self):
        """The population samples as an astropy Table."""
        from astropy.table import Table

        if not self.exists("samples"):
            raise FileNotFoundError(f"{self.path} is not a finished run folder (no {FILES['samples']})")
        return Table.read(self["samples"])

    def write_samples(self, cols: dict) -> Path:
        import io

        from astropy.table import Table

        buf = io.BytesIO()
        Table(cols).write(buf, format="fits")
        _atomic_write(self["samples"], buf.getvalue())
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
        """Write parameters and optimizer state and the step's history, each atomically (a
        failed write raises RunFolderError and leaves the previous checkpoints intact); keep the
        newest ``keep`` checkpoints. The JSON sidecar records the payload's SHA-256."""
        import jax
        from flax import serialization

        d = self["checkpoints"]
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"cannot create {d}: {err.strerror or err}") from None
        payload = serialization.to_bytes({"params": jax.device_get(params), "opt_state": jax.device_get(opt_state)})
        p = d / f"step_{step:07d}.msgpack"
        _atomic_write(p, payload)
        meta = {"step": step, "sha256": hashlib.sha256(payload).hexdigest(), "history": history}
        _atomic_write(p.with_suffix(".json"), json.dumps(meta).encode())
        for old in self.checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        return p

    @staticmethod
    def load_checkpoint(path: Path, params_template, opt_template):
        """-> (params, opt_state, step, history) of a checkpoint file, verified: its sidecar must
        parse and name the same step, and the payload must match the recorded SHA-256 and the
        templates' structure (RunFolderError otherwise, naming the file)."""
        from flax import serialization

        path = Path(path)
        try:
            payload = path.read_bytes()
            meta = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError) as err:
            raise RunFolderError(f"checkpoint {path} is unreadable: {err}") from None
        if "sha256" in meta and hashlib.sha256(payload).hexdigest() != meta["sha256"]:
            raise RunFolderError(f"checkpoint {path} is damaged: its SHA-256 differs from the one recorded")
        try:
            state = serialization.from_bytes({"params": params_template, "opt_state": opt_template}, payload)
            return state["params"], state["opt_state"], int(meta["step"]), meta["history"]
        except Exception as err:  # msgpack / flax raise several kinds for a damaged payload
            raise RunFolderError(f"checkpoint {path} is damaged: {type(err).__name__}: {err}") from None

    def load_latest_checkpoint(self, params_template, opt_template):
        """The newest checkpoint that loads and verifies, as load_checkpoint's tuple, or None if the
        run has none; damaged newer ones are skipped with a warning naming them and why."""
        found = self.checkpoints()
        for path in reversed(found):
            try:
                return self.load_checkpoint(path, params_template, opt_template)
            except RunFolderError as err:
                warnings.warn(f"skipping {err}", stacklevel=2)
        if found:
            raise RunFolderError(f"none of the {len(found)} checkpoints in {self['checkpoints']} is readable")
        return None


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
