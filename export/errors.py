"""The exceptions a user of the engines can meet, each with a message that says what to do."""

from __future__ import annotations


class EngineError(RuntimeError):
    """An engine cannot be built, loaded or run as asked (the message says why)."""


class MissingDependencyError(ImportError, EngineError):
    """An optional package that this engine needs is not installed (the message names the extra)."""

    def __init__(self, package: str, extra: str, purpose: str, reason: str = "not installed"):
        super().__init__(f"{purpose} needs the '{package}' package ({reason}): pip install 'splatcast[{extra}]'")
        self.package = package
        self.extra = extra


class EngineUnavailableError(EngineError):
    """The engine exists but cannot run on this machine (no CUDA GPU, no FP8 tensor cores, ...)."""


class EngineInputError(ValueError):
    """Inputs that do not match what the engine was built for (names, shapes, dtypes)."""


def require(module: str, package: str, extra: str, purpose: str):
    """Import an optional module, turning its absence into a MissingDependencyError."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(package, extra, purpose, f"import {module} failed: {error}") from error
