"""The native artifact: weights.safetensors in PyTorch names and layouts (see runtime/bundle.py)."""

from __future__ import annotations

from pathlib import Path

from rnnedge.runtime.bundle import WEIGHTS
from safetensors.numpy import save_file

from . import quantize

FILE = WEIGHTS


def backends(job) -> list[str]:
    return ["native"]


def write(job, folder: Path) -> dict:
    """Write weights.safetensors (int8-dynamic/static keep int8 weights; native computes them weight-only)."""
    save_file(quantize.store(job.folded, job.scheme), str(folder / FILE))
    return {"file": FILE, "weights": describe(job.scheme)}


def reference(job):
    return None  # the weight-only PyTorch reference


def describe(scheme: str) -> str:
    return {
        "fp32": "float32",
        "fp16": "float16 weights, float32 compute",
    }.get(scheme, "int8 symmetric per output row + float32 scales, float32 compute")
