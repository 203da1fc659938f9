"""Errors the runtime raises. Every message says what was expected and, where it can, what to do."""


class RnnEdgeError(Exception):
    """Base class: the CLI prints these as one line (no traceback unless --debug)."""


class BundleError(RnnEdgeError):
    """A bundle is missing, corrupted, truncated or of an unknown format."""


class InputError(RnnEdgeError, ValueError):
    """A sample or sequence has the wrong shape, dtype, or non-finite values. State is left unchanged."""


class MissingDependency(RnnEdgeError, ImportError):
    """An optional package is not installed. The message names the pip command that fixes it."""

    def __init__(self, what: str, pip: str):
        super().__init__(f"{what} is not installed: run `pip install {pip}`")
        self.pip = pip


def require(module: str, what: str, pip: str):
    """Import an optional module or raise MissingDependency naming the pip command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # a broken install (e.g. numpy ABI) also lands here: say so
        if isinstance(e, ModuleNotFoundError) and e.name and module.startswith(e.name):
            raise MissingDependency(what, pip) from e
        raise MissingDependency(f"{what} ({module} failed to import: {e})", pip) from e


class OutputError(RnnEdgeError, ArithmeticError):
    """A step produced NaN/Inf (weights or state that overflow on this input). The stream's state was rolled
    back to what it was before the call, so the stream can go on or be reset."""
