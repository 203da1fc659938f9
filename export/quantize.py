"""Quantisation schemes: what each one means, defined once.

Weights here are the folded, PyTorch-layout float32 tensors of a bundle (see reference.fold_normalization).
`store(weights, scheme)` gives what goes into weights.safetensors; `effective(weights, scheme)` gives the
float32 weights the scheme computes with. The quantised reference (reference.py) runs PyTorch on the
effective weights; every backend is tested against it.

    fp32          weights and compute float32
    fp16          weights stored float16, compute float32
    int8          weight-only: weight matrices int8, symmetric, one scale per output row; biases float32;
                  activations float
    int8-dynamic  int8 weights as above; activations quantised per step (backend-specific kernels, see
                  the ONNX / TFLite exporters); the native bundle computes it as weight-only
    int8-static   full integer with calibrated activation ranges (ONNX QDQ / TFLite full-integer)
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("fp32", "fp16", "int8", "int8-dynamic", "int8-static")
WEIGHT_ONLY = ("fp32", "fp16", "int8")


def is_matrix(name: str) -> bool:
    """The tensors a scheme quantises: recurrent and head weight matrices (biases stay float32)."""
    return name.startswith("rnn.weight_") or name == "head.weight"


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output row: w (O, K) -> q int8 (O, K) in [-127, 127], scale float32 (O,)."""
    amax = np.abs(w).max(axis=1).astype(np.float32)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def store(weights: dict[str, np.ndarray], scheme: str) -> dict[str, np.ndarray]:
    """Tensors to write to weights.safetensors for this scheme."""
    check_scheme(scheme)
    out = {}
    for name, w in weights.items():
        w = np.ascontiguousarray(w, np.float32)
        if scheme == "fp16":
            out[name] = w.astype(np.float16)
        elif scheme != "fp32" and is_matrix(name):
            out[name], out[name + ".scale"] = quantize_rows(w)
        else:
            out[name] = w
    return out


def effective(weights: dict[str, np.ndarray], scheme: str) -> dict[str, np.ndarray]:
    """Float32 weights that the scheme computes with (its dequantised weights)."""
    check_scheme(scheme)
    out = {}
    for name, w in weights.items():
        w = np.asarray(w, np.float32)
        if scheme == "fp16":
            out[name] = w.astype(np.float16).astype(np.float32)
        elif scheme != "fp32" and is_matrix(name):
            q, scale = quantize_rows(w)
            out[name] = q.astype(np.float32) * scale[:, None]
        else:
            out[name] = w.copy()
    return out


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantisation scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
