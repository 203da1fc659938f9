"""rnnedge.export: quantise and export models to verified bundles.

Bring your own model: `from_torch(module, out, ...)` (a live nn.Module; export/import_torch.py) and
`from_onnx(path, out, ...)` (a standard ONNX file; export/import_onnx.py). Imported on first use, so that
`import rnnedge.export.formats` (the CLI's option choices) needs neither torch nor onnx.
"""

from __future__ import annotations

import importlib

_API = {"from_torch": "import_torch", "from_onnx": "import_onnx"}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        fn = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
        globals()[name] = fn
        return fn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
