"""Quantisation schemes: what each one means, defined once.

Weights here are the folded, PyTorch-layout float32 tensors of a bundle (see reference.fold_normalization).
`store(weights, scheme)` gives what goes into weights.safetensors; `effective(weights, scheme)` gives the
float32 weights the scheme computes with. The quantised reference (reference.py) runs PyTorch on the
effective weights; every backend is tested against it.

    fp32          weights and compute float32
    fp16          weights stored float16, compute float32
    int8          weight-only: weight matrices int8, symmetric, one scale per output row; biases float32;
                  activations float
    int8-dynamic  int8 weights as above; the input vector of every product (x, each layer's h, the head's
                  h) quantised to int8 each step with s = max|v| / 127; products exact in int32
    int8-static   the same with each s fixed, calibrated as max|v| / 127 over streamed training data
                  (the ONNX / TFLite exporters define their own graph forms of both, see their modules)

The native activation-quantised product (`q8_product`), for an input v (K,) and int8 rows W (R, K) with row
scales s_w (R,), all float32:
    inv = 127 / max|v| (dynamic; 0 when v == 0) or 1 / s (static)
    q   = rint(clip(v * inv, -127, 127))                    round half to even
    out = float(W q) * (s_w * s) + b                        W q exact in int32
`q8_product` and the gate equations live in runtime/cells.py (the numpy path runs them as they are);
`native_reference` runs PyTorch's gate equations on those products: every native backend (numpy and the
compiled kernel) is tested against it.
"""

from __future__ import annotations

import numpy as np
from rnnedge.runtime.cells import Q8Model, activation_names, gate_step

SCHEMES = ("fp32", "fp16", "int8", "int8-dynamic", "int8-static")
WEIGHT_ONLY = ("fp32", "fp16", "int8")
ACTIVATION_QUANTISED = ("int8-dynamic", "int8-static")


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


# ----------------------------------------------------------------------------
# activation-quantised schemes on the native backend


def calibrate_activations(cfg, folded: dict, seqs: list[np.ndarray], long_stream: int = 20_000) -> dict:
    """int8-static scales: max|v| / 127 of every product input of the float model, over the sequences each
    streamed from a zero state and over them concatenated into one stream (the state's range over long runs,
    as deployed)."""
    L, H = cfg.num_layers, cfg.hidden_size
    layers = [
        tuple(folded[f"rnn.{n}_l{k}"] for n in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))
        for k in range(L)
    ]
    amax = dict.fromkeys(activation_names(L), 0.0)
    streams = [np.asarray(s, np.float32) for s in seqs]
    if len(streams) > 1:
        streams.append(np.concatenate(streams)[:long_stream])
    for seq in streams:
        h = [np.zeros(H, np.float32) for _ in layers]
        c = [np.zeros(H, np.float32) for _ in layers]
        amax["x"] = max(amax["x"], float(np.abs(seq).max()) if len(seq) else 0.0)
        for x in seq:
            v = x
            for k, (w_ih, b_ih, w_hh, b_hh) in enumerate(layers):
                h[k], c[k] = gate_step(cfg.cell, w_ih @ v + b_ih, w_hh @ h[k] + b_hh, h[k], c[k])
                amax[f"h_{k}"] = max(amax[f"h_{k}"], float(np.abs(h[k]).max()))
                v = h[k]
    return {k: max(a, 1e-8) / 127.0 for k, a in amax.items()}


def native_reference(cfg, folded: dict, scheme: str, scales: dict | None = None):
    """seq (T, I) -> (T, O): the native int8-dynamic / int8-static scheme, step by step (see above)."""
    if scheme not in ACTIVATION_QUANTISED:
        raise ValueError(f"native_reference is for {ACTIVATION_QUANTISED}, not {scheme!r}")
    net = Q8Model(
        cfg.cell, store(folded, scheme), cfg.num_layers, scales if scheme == "int8-static" else None
    )

    def run(seq: np.ndarray) -> np.ndarray:
        h, c = net.zero_state()
        return np.stack([net.step(x, h, c) for x in np.asarray(seq, np.float32)])

    return run
