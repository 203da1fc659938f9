"""The native artifact: weights.safetensors in PyTorch names and layouts (see runtime/bundle.py)."""

from __future__ import annotations

from pathlib import Path

from rnnedge.runtime.bundle import WEIGHTS, atomic_write_bytes
from safetensors.numpy import save

from . import quantize

FILE = WEIGHTS


def backends(job) -> list[str]:
    return ["native"]


def write(job, folder: Path) -> dict:
    """Write weights.safetensors (int8-dynamic/static keep int8 weights; native computes them weight-only)."""
    # via atomic_write_bytes: safetensors' save_file creates the file 0600, ignoring the umask
    atomic_write_bytes(folder / FILE, save(quantize.store(job.folded, job.scheme)))
    return {"file": FILE, "weights": describe(job.scheme)}


def reference(job):
    return None  # the weight-only PyTorch reference


def describe(scheme: str) -> str:
    return {
        "fp32": "float32",
        "fp16": "float16 weights, float32 compute",
    }.get(scheme, "int8 symmetric per output row + float32 scales, float32 compute")
