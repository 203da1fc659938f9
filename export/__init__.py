"""rnnedge.export: quantise and export models to verified bundles.

Bring your own model: `from_torch(module, out, ...)` (export/from_torch.py) and `from_onnx(path, out, ...)`
(export/from_onnx.py; imports onnx only when called).
"""

from .from_onnx import from_onnx
from .from_torch import from_torch

__all__ = ["from_onnx", "from_torch"]
