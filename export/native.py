"""The native artifact: weights.safetensors in PyTorch names and layouts (see runtime/bundle.py).

int8-dynamic and int8-static keep int8 weights and quantise activations as export/quantize.py defines
(`q8_product`); int8-static's calibrated scales go into the manifest (artifacts.native.activation_scales).
"""

from __future__ import annotations

from pathlib import Path

from rnnedge.runtime.bundle import WEIGHTS
from rnnedge.runtime.fileio import atomic_write_bytes
from safetensors.numpy import save

from . import quantize
from .format import ExportFormat, NoOptions

FILE = WEIGHTS


def backends(job) -> list[str]:
    return ["native"]


def write(job, folder: Path) -> dict:
    # via atomic_write_bytes: safetensors' save_file creates the file 0600, ignoring the umask
    atomic_write_bytes(folder / FILE, save(quantize.store(job.folded, job.scheme)))
    art = {"file": FILE, "weights": describe(job.scheme)}
    if job.scheme == "int8-static":
        art["activation_scales"] = activation_scales(job)
    return art


def activation_scales(job) -> dict:
    """Calibrated once per job (write and reference must use the same scales)."""
    if getattr(job, "_native_scales", None) is None:
        seqs = job.calib_seqs or job.eval_seqs
        job._native_scales = quantize.calibrate_activations(job.cfg, job.folded, seqs)
    return job._native_scales


def reference(job):
    """Weight-only schemes: None (the PyTorch reference). int8-dynamic / int8-static: the native scheme."""
    if job.scheme not in quantize.ACTIVATION_QUANTISED:
        return None
    scales = activation_scales(job) if job.scheme == "int8-static" else None
    return quantize.native_reference(job.cfg, job.folded, job.scheme, scales)


def describe(scheme: str) -> str:
    return {
        "fp32": "float32",
        "fp16": "float16 weights, float32 compute",
        "int8": "int8 symmetric per output row + float32 scales, float32 compute",
        "int8-dynamic": "int8 per output row; activations int8 per step (max|v| / 127), int32 products",
        "int8-static": "int8 per output row; activations int8 with calibrated scales, int32 products",
    }[scheme]


FORMAT = ExportFormat("native", NoOptions, backends, write, reference)
