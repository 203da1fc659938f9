"""Every error rnnedge raises on purpose, in one module with no imports, so that any layer (train/, export/,
devices/, the CLI) can raise or catch them without loading the bundle reader. Each message says what was
expected and, where it can, what to do. The CLI prints an RnnEdgeError as one line and exits 1."""


class RnnEdgeError(Exception):
    """Base class: the CLI prints these as one line (no traceback unless --debug)."""


class BundleError(RnnEdgeError):
    """A bundle is missing, corrupted, truncated or of an unknown format."""


class InputError(RnnEdgeError, ValueError):
    """A sample or sequence has the wrong shape, dtype, or non-finite values. State is left unchanged."""


class ExportError(RnnEdgeError):
    """An export cannot be written or failed its parity check (nothing is installed)."""


class TrainError(RnnEdgeError):
    """Training cannot start or produced nothing to save."""


class DataError(RnnEdgeError):
    """A dataset name or .npz file is unknown, malformed or does not fit the task."""


class CheckpointError(RnnEdgeError):
    """A run folder is not a readable training checkpoint."""


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
