"""Quantising the TFLite step graph: weight formats, hybrid (dynamic-range) FCs, calibration and full integer.

fp16 / int8 weight-only   matrices stored float16 / int8 per output row, DEQUANTIZE'd once to float32
                          (same rounding as export/quantize.py, so the torch reference is exact)
int8-dynamic (hybrid)     FCs take int8 weights directly; TFLite quantises each input row per step
                          (asymmetric). Weight scale per tensor unless the target is LiteRT only:
                          tflite-runtime 2.14 silently ignores per-channel scales here (ARCHITECTURE.md,
                          "Known traps")
int8-static               every activation int8 (a8w8) or int16 (a16w8), weights int8, biases int32/int64,
                          ranges = true min/max of the float graph streamed over training sequences
"""

from __future__ import annotations

import numpy as np

from .quantize import quantize_rows
from .tflite_graph import F16, I8, I16, I32, I64, Evaluator, Graph, Op, Tensor, round_half_away


def quantize_matrix(w: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (O, K): per output row exactly as the native bundle, or one scale for the matrix."""
    if per_channel:
        return quantize_rows(w)  # scale (O,)
    amax = float(np.abs(w).max())
    scale = np.array([amax / 127.0 if amax > 0 else 1.0], np.float32)  # (1,)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def _set_int8(t: Tensor, per_channel: bool) -> None:
    t.data, t.scale = quantize_matrix(t.data.astype(np.float32), per_channel)
    t.dtype, t.zero_point = I8, np.zeros(len(t.scale), np.int64)


def weight_only(g: Graph, scheme: str) -> None:
    """fp16 / int8: store each matrix compressed, DEQUANTIZE it to float32 (a constant: done once at load)."""
    for op in g.fcs():
        w = g.tensors[op.inputs[1]]
        deq = g.add(Tensor(w.name, w.shape))
        w.name += "_" + scheme
        if scheme == "fp16":
            w.data, w.dtype = w.data.astype(np.float16), F16
        else:
            _set_int8(w, per_channel=True)
        g.ops.insert(0, Op("DEQUANTIZE", [op.inputs[1]], [deq]))
        op.inputs[1] = deq


def hybrid(g: Graph, per_channel: bool) -> None:
    """int8-dynamic: int8 weights into the FCs, inputs quantised per row at run time (asymmetric)."""
    for op in g.fcs():
        _set_int8(g.tensors[op.inputs[1]], per_channel)
        op.opts["asymmetric"] = True


# ----------------------------------------------------------------------------
# full integer


LONG_STREAM = 20_000  # steps of the concatenated calibration stream (numpy: ~5 s at most)


def calibrate(g: Graph, seqs: list[np.ndarray]) -> Evaluator:
    """True min/max of every tensor of the float graph over the sequences, each streamed from a zero state,
    and over them concatenated into one long stream without resets (the state's range over long runs)."""
    ev = Evaluator(g, observe=True)
    seqs = [np.asarray(s, np.float32) for s in seqs]
    ev.stream(seqs)
    if len(seqs) > 1:
        ev.stream([np.concatenate(seqs)[:LONG_STREAM]])
    return ev


def qparams(lo: float, hi: float, dtype: str) -> tuple[float, int]:
    """Scale and zero point covering [lo, hi] (always including 0): int8 asymmetric, int16 symmetric."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if dtype == I16:
        return max(-lo, hi, 1e-8) / 32767.0, 0
    scale = max(hi - lo, 1e-8) / 255.0
    return scale, int(np.clip(round_half_away(-128 - lo / scale), -128, 127))


# fixed output grids of the integer LOGISTIC / TANH kernels
FIXED = {
    ("LOGISTIC", I8): (1 / 256, -128),
    ("TANH", I8): (1 / 128, 0),
    ("LOGISTIC", I16): (1 / 32768, 0),
    ("TANH", I16): (1 / 32768, 0),
}
ACTIVATIONS = {"int8": I8, "int16": I16}


def full_integer(g: Graph, ev: Evaluator, act: str, per_channel: bool) -> dict:
    """Quantise every activation outside g.float_io to `act` (int8: a8w8, int16: a16w8) from the calibrated
    ranges. The state input (QUANTIZE(h_in_k)) and state output (h_out_k before its DEQUANTIZE) share one
    grid, so the state round-trips exactly. Returns the state ranges (for the manifest)."""
    act = ACTIVATIONS[act]
    producer = {o: op for op in g.ops for o in op.outputs}
    params: dict[int, tuple[float, int]] = {}

    state_ranges = {}  # state pairs first: h_in_k_q <- QUANTIZE(h_in_k), h_out_k_q -> DEQUANTIZE -> h_out_k
    for i in g.inputs[1:]:
        name = g.tensors[i].name
        q_in = next(op.outputs[0] for op in g.ops if op.kind == "QUANTIZE" and op.inputs[0] == i)
        q_out = producer[g.index(name.replace("_in_", "_out_"))].inputs[0]
        lo, hi = min(ev.lo[q_in], ev.lo[q_out]), max(ev.hi[q_in], ev.hi[q_out])
        params[q_in] = params[q_out] = FIXED.get((producer[q_out].kind, act)) or qparams(lo, hi, act)
        state_ranges[name] = [lo, hi]

    for op in g.ops:
        for o in op.outputs:
            if o in params or o in g.float_io:
                continue
            if op.kind == "SPLIT":
                params[o] = params[op.inputs[1]]  # SPLIT keeps its input's grid
            else:
                params[o] = FIXED.get((op.kind, act)) or qparams(ev.lo[o], ev.hi[o], act)
    for i, (s, z) in params.items():
        t = g.tensors[i]
        t.dtype, t.scale, t.zero_point = act, np.array([s], np.float32), np.array([z], np.int64)

    for op in g.fcs():
        x, w = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
        _set_int8(w, per_channel)
        if op.inputs[2] >= 0:
            b = g.tensors[op.inputs[2]]
            bs = (x.scale.astype(np.float64) * w.scale.astype(np.float64)).astype(np.float32)
            bias_t = I64 if act == I16 else I32
            b.data = round_half_away(b.data.astype(np.float64) / np.broadcast_to(bs, b.data.shape)).astype(
                bias_t
            )
            b.dtype, b.scale, b.zero_point = bias_t, bs, np.zeros(len(bs), np.int64)
    return {"state_ranges": state_ranges}
