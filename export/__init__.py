"""rnnedge.export: quantise and export models to verified bundles.

Bring your own model: `from_torch(module, out, ...)` (export/from_torch.py) and `from_onnx(path, out, ...)`
(export/from_onnx.py).
"""

from .from_torch import from_torch

__all__ = ["from_torch", "from_onnx"]


def __getattr__(name):
    if name == "from_onnx":  # imports onnx lazily
        from .from_onnx import from_onnx

        return from_onnx
    raise AttributeError(name)
