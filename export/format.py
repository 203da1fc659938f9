"""The contract of an export format. Each format module (native.py, onnx_export.py, tflite_export.py) makes
one ExportFormat; formats.py registers them by name; the exporter only ever calls these four things:

    verified_on(job) -> [backend, ...]   the runtime backends the written file is checked on (parity)
    write(job, folder) -> dict           writes the artifact into folder, returns its manifest entry
                                          (artifacts.<name>; must hold "file")
    reference(job) -> fn | None          seq (T, I) -> (T, O): what the file must compute for job.scheme,
                                          or None for the scheme's PyTorch reference (weight-only schemes)
    runs_on                              every backend that can run the file (verified_on picks from it)
    needs                                the modules writing and verifying it import (default options)
    options                              a frozen dataclass of the format's options; a field `graph` of
                                          format `onnx` is the option key `onnx_graph` (ExportJob.options,
                                          CLI flags); `choices` in a field's metadata bound its values

Options are validated when a job is built (ExportJob) and by the CLI before anything is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rnnedge.runtime.errors import ExportError
from rnnedge.runtime.vocab import ARTIFACT_OF

Reference = Callable[[np.ndarray], np.ndarray]  # seq (T, I) -> (T, O)


def option(default: Any, choices: tuple | None = None, help: str = ""):
    """A format option: its default, the values it may take (None: any of the default's type)."""
    return dataclasses.field(default=default, metadata={"choices": choices, "help": help})


@dataclass(frozen=True)
class NoOptions:
    """A format without options."""


@dataclass(frozen=True)
class ExportFormat:
    name: str
    options: type  # a frozen dataclass (see option())
    verified_on: Callable[[Any], list[str]]
    write: Callable[[Any, Path], dict]
    reference: Callable[[Any], Reference | None]
    needs: tuple[str, ...] = ()
    # optional: (job, backend) -> a tighter/looser parity bound relative to the output range (None = verify's
    # default), and (job, backend, parity) -> what to do when that backend failed (None = nothing to add)
    relative_bound: Callable[[Any, str], float | None] | None = None
    failure_hint: Callable[[Any, str, dict], str | None] | None = None

    @property
    def runs_on(self) -> tuple[str, ...]:
        return tuple(b for b, fmt in ARTIFACT_OF.items() if fmt == self.name)

    def keys(self) -> dict[str, dataclasses.Field]:
        """Option key (e.g. 'onnx_graph') -> its dataclass field."""
        return {f"{self.name}_{f.name}": f for f in dataclasses.fields(self.options)}

    def parse(self, flat: dict) -> Any:
        """This format's options from a flat {key: value} dict (other formats' keys are ignored)."""
        values = {}
        for key, f in self.keys().items():
            if key not in flat:
                continue
            value, choices = flat[key], f.metadata.get("choices")
            if choices is not None and value not in choices and not (value is None and f.default is None):
                raise ExportError(f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")
            if choices is None and f.default is not None and not isinstance(value, type(f.default)):
                raise ExportError(f"{key} must be a {type(f.default).__name__}, got {value!r}")
            values[f.name] = value
        return self.options(**values)
