"""The scheme -> tensor rule, defined once: what weights.safetensors holds for each scheme (`store`), and the
float32 weights a scheme computes with (`dequantize` of what is stored). `effective(w) = dequantize(store(w))`
by construction, so the quantised reference, the exporters and every backend share one rule.

    fp32          float32 as is
    fp16          float16; computed in float32
    int8, int8-dynamic, int8-static
                  weight matrices (rnn.weight_*, head.weight) int8 symmetric, one float32 scale per output
                  row (`name` + `name.scale`); biases float32

numpy only: the runtime reads bundles with this, the exporter writes them with it.
"""

from __future__ import annotations

import numpy as np

from .vocab import SCHEMES, check_choice


def check_scheme(scheme: str) -> str:
    return check_choice(scheme, SCHEMES, "quantisation scheme")


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
    """Float32 weights -> the tensors weights.safetensors holds for this scheme."""
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


def dequantize(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stored tensors -> float32: int8 `w` + `w.scale` (rows,) -> w * scale[:, None]; float16 -> float32."""
    out = {}
    for name, t in tensors.items():
        if name.endswith(".scale"):
            continue
        if t.dtype == np.int8:
            scale = tensors[name + ".scale"].astype(np.float32)
            out[name] = t.astype(np.float32) * scale.reshape((-1,) + (1,) * (t.ndim - 1))
        else:
            out[name] = t.astype(np.float32)  # a copy, also for float32
    return out


def effective(weights: dict[str, np.ndarray], scheme: str) -> dict[str, np.ndarray]:
    """Float32 weights that the scheme computes with: what a backend gets back from the stored tensors."""
    return dequantize(store(weights, scheme))
