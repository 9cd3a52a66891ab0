"""The package's own exception types: the CLI prints these as one-line errors."""
from __future__ import annotations

__all__ = ["PopsedError", "ConfigError", "CatalogError", "FitDiverged", "FitInterrupted", "RunFolderError"]


class PopsedError(Exception):
    """Base of every error popsed-jax raises on purpose (bad input, a failed fit)."""


class ConfigError(PopsedError, ValueError):
    """A configuration value is invalid: the message names the key, the value and the range."""


class FitDiverged(PopsedError, RuntimeError):
    """A training step produced a non-finite loss, gradient or parameter."""


class CatalogError(PopsedError, ValueError):
    """A catalog cannot be read or holds bad values: the message names the file, column, band or row."""


class FitInterrupted(PopsedError):
    """A fit stopped on SIGINT / SIGTERM after checkpointing; ``--resume`` continues it."""


class RunFolderError(PopsedError):
    """A run folder cannot be written or read as asked (locked, another run's, unwritable)."""
