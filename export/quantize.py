"""Quantisation schemes: what each one means, defined once.

Weights here are the folded, PyTorch-layout float32 tensors of a bundle (see reference.fold_normalization).
The tensor rule lives in runtime/quant.py (re-exported here): `store(weights, scheme)` gives what goes into
weights.safetensors; `effective(weights, scheme)` = dequantize(store(...)), the float32 weights the scheme
computes with. The quantised reference (reference.py) runs PyTorch on the effective weights; every backend
is tested against it.

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
from rnnedge.runtime.quant import check_scheme, dequantize, effective, is_matrix, quantize_rows, store
from rnnedge.runtime.vocab import ACTIVATION_QUANTISED, SCHEMES, WEIGHT_ONLY

__all__ = [
    "SCHEMES",
    "WEIGHT_ONLY",
    "ACTIVATION_QUANTISED",
    "check_scheme",
    "is_matrix",
    "quantize_rows",
    "store",
    "dequantize",
    "effective",
    "calibrate_activations",
    "native_reference",
]

# ----------------------------------------------------------------------------
# activation-quantised schemes on the native backend


def calibrate_activations(cfg, folded: dict, seqs: list[np.ndarray], long_stream: int = 20_000) -> dict:
    """int8-static scales: max|v| / 127 of every product input of the float model (activation_names), over
    the sequences each streamed from a zero state and over them concatenated into one stream (the state's
    range over long runs, as deployed)."""
    L, H, P = cfg.num_layers, cfg.hidden_size, cfg.state_size
    names = activation_names(L, cfg.cell, cfg.proj_size)
    amax = dict.fromkeys(names, 0.0)

    def inner_of(k):  # the float in-cell product v -> W v + b, recording the range of its input v
        if cfg.proj_size:
            w, name = folded[f"rnn.weight_hr_l{k}"], f"hr_{k}"
            b = np.zeros(len(w), np.float32)
        elif cfg.cell == "gru_lbr0":
            w, b, name = (
                folded[f"rnn.weight_hh_l{k}"][2 * H :],
                folded[f"rnn.bias_hh_l{k}"][2 * H :],
                f"rh_{k}",
            )
        else:
            return None

        def run(v):
            amax[name] = max(amax[name], float(np.abs(v).max()))
            return w @ v + b

        return run

    lbr0 = slice(0, 2 * H) if cfg.cell == "gru_lbr0" else slice(None)  # its hh product: the r, z rows
    layers = [
        (
            folded[f"rnn.weight_ih_l{k}"],
            folded[f"rnn.bias_ih_l{k}"],
            folded[f"rnn.weight_hh_l{k}"][lbr0],
            folded[f"rnn.bias_hh_l{k}"][lbr0],
            inner_of(k),
        )
        for k in range(L)
    ]
    streams = [np.asarray(s, np.float32) for s in seqs]
    if len(streams) > 1:
        streams.append(np.concatenate(streams)[:long_stream])
    for seq in streams:
        h = [np.zeros(P, np.float32) for _ in layers]
        c = [np.zeros(H, np.float32) for _ in layers]
        amax["x"] = max(amax["x"], float(np.abs(seq).max()) if len(seq) else 0.0)
        for x in seq:
            v = x
            for k, (w_ih, b_ih, w_hh, b_hh, inner) in enumerate(layers):
                h[k], c[k] = gate_step(cfg.cell, w_ih @ v + b_ih, w_hh @ h[k] + b_hh, h[k], c[k], inner)
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
