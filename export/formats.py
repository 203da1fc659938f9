"""The export formats rnnedge writes, registered explicitly (one line each). The native artifact is always
written: the bundle's weights are the runtime's source of truth and every other format is checked against
the same quantised reference."""

from __future__ import annotations

import importlib.util

from rnnedge.runtime.errors import ExportError

from . import native, onnx_export, tflite_export
from .format import ExportFormat

FORMATS: dict[str, ExportFormat] = {
    f.name: f for f in (native.FORMAT, onnx_export.FORMAT, tflite_export.FORMAT)
}


def get(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise ExportError(f"unknown format {name!r}: choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def check_options(flat: dict) -> None:
    """ExportError for an unknown option key or a value outside its choices (every format's options)."""
    known = {key for f in FORMATS.values() for key in f.keys()}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ExportError(
            f"unknown export option {unknown[0]!r}: known options are {', '.join(sorted(known))}"
        )
    for f in FORMATS.values():
        f.parse(flat)


def option_choices(key: str) -> tuple:
    """The values an option key may take (the CLI's choices)."""
    for f in FORMATS.values():
        if key in f.keys():
            return f.keys()[key].metadata["choices"]
    raise KeyError(key)


def available() -> list[str]:
    """The formats whose writer and verifying interpreters are installed (with their default options)."""
    return [name for name, f in FORMATS.items() if all(_installed(m) for m in f.needs)]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
