"""rnnedge.runtime: stream a recurrent model one sample at a time. Needs numpy and safetensors only.

The names below load on first use, so `rnnedge.runtime.errors`, `.vocab`, `.quant` and `.fileio` can be
imported (by train/, export/, the CLI) without loading the bundle reader or a backend.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "load": "stream",
    "Model": "stream",
    "Stream": "stream",
    "load_bundle": "bundle",
    "Bundle": "bundle",
    "Limits": "bundle",
    "probe_bundle": "isolate",
    "load_untrusted": "isolate",
    "RnnEdgeError": "errors",
    "BundleError": "errors",
    "InputError": "errors",
    "OutputError": "errors",
    "MissingDependency": "errors",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'rnnedge.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
