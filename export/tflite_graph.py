"""The TFLite step graph: a tiny IR for one step of a stacked RNN + head, a numpy evaluator, and the writer.

One step, batch first, state explicit (every tensor (B, N)):

    x, h_in_0, c_in_0, ...  ->  y, h_out_0, c_out_0, ...

    layer (gates from two FULLY_CONNECTEDs so x and h are quantised separately in hybrid/integer graphs):
      LSTM  g = FC(x, W_ih, b_ih+b_hh) + FC(h, W_hh); i,f,gg,o = SPLIT(g, 4)
            c' = sig(f)*c + sig(i)*tanh(gg); h' = sig(o)*tanh(c')
      GRU   gx = FC(x, W_ih, b_ih + [b_hr, b_hz, 0]); gh = FC(h, W_hh, [0, 0, b_hn]); SPLIT both in 3
            r = sig(rx+rh); z = sig(zx+zh); n = tanh(nx + r*nh); h' = n + z*(h - n)
      RNN   h' = tanh(FC(x) + FC(h)) or ADD with fused RELU
    head    y = FC(h_top, W_y, b_y)

The evaluator runs the same IR in numpy: float tensors in float32, quantised activations as their dequantised
grid values (fake quantisation), hybrid FCs quantising their input per row exactly like TFLite's kernel. It is
the calibrator (float graph, min/max of every tensor) and the reference of the activation-quantised schemes.
Only builtin ops; the flatbuffer is written with the official schema object API (ai_edge_litert).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rnnedge.runtime.bundle import state_specs

F32, F16, I8, I16, I32, I64 = "float32", "float16", "int8", "int16", "int32", "int64"
QRANGE = {
    I8: (-128, 127),
    I16: (-32767, 32767),
    I32: (-(2**31) + 1, 2**31 - 1),
    I64: (-(2**63) + 1, 2**63 - 1),
}


@dataclass
class Tensor:
    name: str
    shape: tuple
    dtype: str = F32
    data: np.ndarray | None = None  # constant payload, already in dtype
    scale: np.ndarray | None = None  # quantisation: (1,) per tensor or (rows,) per output row (axis 0)
    zero_point: np.ndarray | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def value(self) -> np.ndarray:
        """Float value of a constant (dequantised)."""
        if not self.quantized:
            return self.data.astype(np.float32)
        s = self.scale.reshape((-1,) + (1,) * (self.data.ndim - 1))
        z = self.zero_point.reshape(s.shape)
        return ((self.data.astype(np.float64) - z) * s).astype(np.float32)


@dataclass
class Op:
    kind: str  # builtin name: FULLY_CONNECTED, ADD, ...
    inputs: list  # tensor indices; -1 = omitted optional input
    outputs: list
    opts: dict = field(default_factory=dict)  # act (NONE|RELU), asymmetric, num_splits


class Graph:
    def __init__(self):
        self.tensors: list[Tensor] = []
        self.ops: list[Op] = []
        self.inputs: list[int] = []  # signature order: x, h_in_0, c_in_0, ...
        self.outputs: list[int] = []  # y, h_out_0, ...
        self.float_io: set[int] = set()  # tensors that stay float in a full-integer graph

    def add(self, t: Tensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1

    def input(self, name: str, n: int) -> int:
        i = self.add(Tensor(name, (1, n)))
        self.inputs.append(i)
        self.float_io.add(i)
        return i

    def const(self, name: str, data: np.ndarray) -> int:
        return self.add(Tensor(name, tuple(data.shape), str(data.dtype), np.ascontiguousarray(data)))

    def op(self, kind: str, inputs: list, name: str, n: int, outputs: int = 1, **opts):
        """Append an op whose outputs are new (1, n) float activations; returns the output index (or list)."""
        outs = [self.add(Tensor(name if outputs == 1 else f"{name}_{k}", (1, n))) for k in range(outputs)]
        self.ops.append(Op(kind, list(inputs), outs, opts))
        return outs[0] if outputs == 1 else outs

    def index(self, name: str) -> int:
        return next(i for i, t in enumerate(self.tensors) if t.name == name)

    def fcs(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "FULLY_CONNECTED"]


# ----------------------------------------------------------------------------
# building the float step graph


class Layer:
    """Op helpers for one layer: tensors named '<prefix>.<name>', outputs (1, n) with n = H by default."""

    def __init__(self, g: Graph, prefix: str, H: int):
        self.g, self.p, self.H = g, prefix, H

    def op(self, kind, *inputs, name, n=None, **opts):
        return self.g.op(kind, list(inputs), f"{self.p}.{name}", n or self.H, **opts)

    def split(self, t, parts, name):  # (1, parts*H) -> parts x (1, H)
        axis = self.g.const(f"{self.p}.axis", np.array(1, np.int32))
        return self.g.op("SPLIT", [axis, t], f"{self.p}.{name}", self.H, parts, num_splits=parts)

    def fc(self, name, x, W, b, n):  # x (1, K) @ W.T (n, K) + b (n,) -> (1, n); b None: no bias input (-1)
        name = f"{self.p}.{name}" if name else self.p
        bias = -1 if b is None else self.g.const(f"{name}.bias", np.asarray(b, np.float32))
        weight = self.g.const(f"{name}.weight", np.asarray(W, np.float32))
        return self.g.op("FULLY_CONNECTED", [x, weight, bias], name, n)


def build(cfg, w: dict, in_norm=None, out_norm=None, boundary: bool = False) -> Graph:
    """Float step graph from PyTorch-named float32 weights.

    in_norm = (mean, std): normalise x in the graph (float MUL/ADD) instead of relying on folded weights;
    out_norm = (mean, std) likewise for y. boundary=True marks where a full-integer graph quantises: QUANTIZE
    after the (normalised) inputs and DEQUANTIZE before the outputs (identity ops in float).
    """
    cell, L, H, I, O = cfg.cell, cfg.num_layers, cfg.hidden_size, cfg.input_size, cfg.output_size
    P = cfg.proj_size  # LSTM projection: h = W_hr (o * tanh(c)), one more FULLY_CONNECTED
    specs = state_specs(cell, L, H, P)
    size = {s.input: s.size for s in specs}
    g = Graph()
    x = g.input("x", I)
    state = {s.input: g.input(s.input, s.size) for s in specs}
    if in_norm is not None:
        mean, std = (np.asarray(a, np.float32) for a in in_norm)
        xs = g.op("MUL", [x, g.const("in_scale", (1 / std)[None])], "x_scaled", I)
        x = g.op("ADD", [xs, g.const("in_shift", (-mean / std)[None])], "x_norm", I)
        g.float_io.update((xs, x))
    if boundary:
        x = g.op("QUANTIZE", [x], "x_q", I)
        state = {k: g.op("QUANTIZE", [v], f"{k}_q", size[k]) for k, v in state.items()}

    outs = {}  # producing tensor -> output name
    for k in range(L):
        w_ih, w_hh = w[f"rnn.weight_ih_l{k}"], w[f"rnn.weight_hh_l{k}"]
        b_ih, b_hh = w[f"rnn.bias_ih_l{k}"], w[f"rnn.bias_hh_l{k}"]
        h, ly = state[f"h_in_{k}"], Layer(g, f"l{k}", H)
        op = ly.op
        if cell == "lstm":
            gx, gh = ly.fc("gx", x, w_ih, b_ih + b_hh, 4 * H), ly.fc("gh", h, w_hh, None, 4 * H)
            i, f, gg, o = ly.split(op("ADD", gx, gh, name="g", n=4 * H), 4, "ifgo")  # PyTorch gate order
            i, f, o = (op("LOGISTIC", t, name=n) for t, n in ((i, "i"), (f, "f"), (o, "o")))
            gg = op("TANH", gg, name="gg")
            c = op("ADD", op("MUL", f, state[f"c_in_{k}"], name="fc"), op("MUL", i, gg, name="ig"), name="c")
            h = op("MUL", o, op("TANH", c, name="tanh_c"), name="m" if P else "h")  # h = o * tanh(c)
            if P:
                h = ly.fc("h", h, w[f"rnn.weight_hr_l{k}"], None, P)  # h = W_hr (o * tanh(c)) (P,)
            outs[c] = f"c_out_{k}"
        elif cell == "gru":
            zero = np.zeros(H, np.float32)
            b_x = b_ih + np.r_[b_hh[: 2 * H], zero]  # r, z biases merged; b_hn must stay inside r * (.)
            b_h = np.r_[zero, zero, b_hh[2 * H :]]
            rx, zx, nx = ly.split(ly.fc("gx", x, w_ih, b_x, 3 * H), 3, "rzn_x")
            rh, zh, nh = ly.split(ly.fc("gh", h, w_hh, b_h, 3 * H), 3, "rzn_h")
            r = op("LOGISTIC", op("ADD", rx, rh, name="r_pre"), name="r")
            z = op("LOGISTIC", op("ADD", zx, zh, name="z_pre"), name="z")
            n = op("TANH", op("ADD", nx, op("MUL", r, nh, name="r_nh"), name="n_pre"), name="n")
            d = op("MUL", z, op("SUB", h, n, name="h_minus_n"), name="z_d")
            h = op("ADD", n, d, name="h")  # h = n + z * (h - n) = (1 - z) * n + z * h
        elif cell == "gru_lbr0":  # n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
            b_x = b_ih + np.r_[b_hh[: 2 * H], np.zeros(H, np.float32)]
            rx, zx, nx = ly.split(ly.fc("gx", x, w_ih, b_x, 3 * H), 3, "rzn_x")
            rh, zh = ly.split(ly.fc("gh", h, w_hh[: 2 * H], None, 2 * H), 2, "rz_h")
            r = op("LOGISTIC", op("ADD", rx, rh, name="r_pre"), name="r")
            z = op("LOGISTIC", op("ADD", zx, zh, name="z_pre"), name="z")
            nh = ly.fc("nh", op("MUL", r, h, name="rh"), w_hh[2 * H :], b_hh[2 * H :], H)
            n = op("TANH", op("ADD", nx, nh, name="n_pre"), name="n")
            d = op("MUL", z, op("SUB", h, n, name="h_minus_n"), name="z_d")
            h = op("ADD", n, d, name="h")
        else:
            gx, gh = ly.fc("gx", x, w_ih, b_ih + b_hh, H), ly.fc("gh", h, w_hh, None, H)
            if cell == "rnn_relu":
                h = op("ADD", gx, gh, name="h", act="RELU")  # fused activation
            else:
                h = op("TANH", op("ADD", gx, gh, name="a"), name="h")
        outs[h] = f"h_out_{k}"
        x = h
    outs = {Layer(g, "head", O).fc(None, x, w["head.weight"], w["head.bias"], O): "y", **outs}

    final = {}  # output name -> tensor: DEQUANTIZE into it (full integer) or rename the producing tensor
    for t, name in outs.items():
        if boundary:
            g.tensors[t].name = f"{name}_q"
            t = g.op("DEQUANTIZE", [t], name, g.tensors[t].shape[1])
        else:
            g.tensors[t].name = name
        final[name] = t
    if out_norm is not None:
        mean, std = (np.asarray(a, np.float32) for a in out_norm)
        g.tensors[final["y"]].name = "y_norm"
        ys = g.op("MUL", [final["y"], g.const("out_scale", std[None])], "y_scaled", O)
        final["y"] = g.op("ADD", [ys, g.const("out_shift", mean[None])], "y", O)
        g.float_io.update(op.inputs[0] for op in g.ops[-2:])
    g.outputs = [final[n] for n in ["y"] + [s.output for s in specs]]
    g.float_io.update(g.outputs)
    g.float_io.update(o for op in g.ops if op.kind == "DEQUANTIZE" for o in op.outputs)
    return g


# ----------------------------------------------------------------------------
# numpy evaluation (float, hybrid emulation, fake-quantised integer)


def round_half_away(v):
    """std::round (TfLiteRound): halves away from zero, unlike np.rint."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def fake_quant(v: np.ndarray, t: Tensor) -> np.ndarray:
    lo, hi = QRANGE[t.dtype]
    s, z = float(t.scale[0]), float(t.zero_point[0])
    return ((np.clip(round_half_away(v / s) + z, lo, hi) - z) * s).astype(np.float32)


def hybrid_quantize_rows(x: np.ndarray, asymmetric: bool):
    """TFLite's per-row dynamic input quantisation for hybrid FC (tensor_utils::(A)SymmetricQuantizeFloats).

    x (B, K) float -> q (B, K) int values as float64, scale (B, 1), zero point (B, 1)."""
    x = x.astype(np.float64)
    if not asymmetric:
        amax = np.abs(x).max(axis=1, keepdims=True)
        scale = np.where(amax > 0, amax / 127.0, 1.0)
        return np.clip(round_half_away(x / scale), -127, 127), scale, np.zeros_like(scale)
    rmin = np.minimum(0.0, x.min(axis=1, keepdims=True))
    rmax = np.maximum(0.0, x.max(axis=1, keepdims=True))
    same = rmax == rmin
    scale = np.where(same, 1.0, (rmax - rmin) / 255.0)
    zmin, zmax = -128 - rmin / scale, 127 - rmax / scale
    zp = np.where(128 + np.abs(rmin / scale) < 127 + np.abs(rmax / scale), zmin, zmax)
    zp = np.where(same, 0.0, np.clip(round_half_away(zp), -128, 127))
    inv = (1.0 / scale.astype(np.float32)).astype(np.float32)
    q = np.clip(round_half_away(zp + x.astype(np.float32) * inv), -128, 127)
    return np.where(same, 0.0, q), scale.astype(np.float32).astype(np.float64), zp


# ----------------------------------------------------------------------------
# a8w8 ops as LiteRT computes them: its default XNNPACK delegate's qs8 kernels, integer by integer. A float
# product of dequantised values rounded once (fake quantisation) lands one grid step off near halves
# (float32 f*c = -17.5 where the integers give -17.4999995), and through an LSTM cell state that step is
# 0.4 % of the output range (benchmarks/tflite_static_probe.py measured it op by op)

INT8_KERNELS = ("QUANTIZE", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "TANH", "LOGISTIC")
F = np.float32


def _ints(v: np.ndarray, t: Tensor) -> np.ndarray:
    """Grid value (dequantised float) -> integer minus zero point, as int64."""
    return np.round(v.astype(np.float64) / float(t.scale[0])).astype(np.int64)


def _requantise(acc_f32: np.ndarray, t: Tensor) -> np.ndarray:
    """fp32 requantisation: round to nearest even (cvtps2dq / fcvtns), add the zero point, saturate."""
    z = int(t.zero_point[0])
    q = np.clip(np.rint(acc_f32.astype(F)) + z, *QRANGE[I8])
    return ((q - z) * F(t.scale[0])).astype(F)


def int8_op(g: Graph, op: Op, a: list) -> list[np.ndarray]:
    """One a8w8 op on grid values a (per input; None for constants and omitted inputs) -> outputs."""
    out = g.tensors[op.outputs[0]]
    ins = [g.tensors[i] if i >= 0 else None for i in op.inputs]
    so, k = F(out.scale[0]), op.kind
    if k == "QUANTIZE":  # f32 -> qs8: x * (1 / scale)
        return [_requantise(a[0].astype(F) * (F(1) / so), out)]
    if k == "FULLY_CONNECTED":  # qc8w GEMM: exact int32 sums, one float scale per output channel
        acc = _ints(a[0], ins[0]) @ ins[1].data.astype(np.int64).T
        if op.inputs[2] >= 0:
            acc = acc + ins[2].data.astype(np.int64)[None]
        scale = (F(ins[0].scale[0]) * ins[1].scale.astype(F) / so).astype(F)
        return [_requantise(acc.astype(F) * scale[None], out)]
    if k == "MUL":  # product of integers times (s_a * s_b / s_out) in float32
        scale = F(F(F(ins[0].scale[0]) * F(ins[1].scale[0])) / so)
        return [_requantise((_ints(a[0], ins[0]) * _ints(a[1], ins[1])).astype(F) * scale, out)]
    if k in ("ADD", "SUB"):  # fixed point: 21-bit multipliers, one rounding shift (ties up)
        sa, sb = F(F(ins[0].scale[0]) / so), F(F(ins[1].scale[0]) / so)
        shift = 20 - (int(np.frexp(max(sa, sb))[1]) - 1)
        ma, mb = (int(np.rint(F(np.ldexp(s, shift)))) for s in (sa, sb))
        mb = -mb if k == "SUB" else mb
        acc = ma * _ints(a[0], ins[0]) + mb * _ints(a[1], ins[1]) + (1 << (shift - 1))
        z = int(out.zero_point[0])
        q = np.clip((acc >> shift) + z, *QRANGE[I8])
        return [((q - z) * so).astype(F)]
    # TANH / LOGISTIC: a 256-entry table of the float function on the input grid
    x = _ints(a[0], ins[0]).astype(F) * F(ins[0].scale[0])
    y = np.tanh(x) if k == "TANH" else F(1) / (F(1) + np.exp(-x))
    return [_requantise(y.astype(F) / so, out)]


class Evaluator:
    """Runs a Graph on a batch in numpy. observe=True records the min/max of every activation tensor."""

    def __init__(self, g: Graph, observe: bool = False):
        self.g = g
        self.observe = observe
        self.lo = {}
        self.hi = {}
        self.consts = {i: t.value() for i, t in enumerate(g.tensors) if t.data is not None}

    def run_op(self, op: Op, v: dict) -> None:
        """Compute op's outputs into v (tensor index -> (B, N) float32 value)."""
        g, k = self.g, op.kind
        a = [v.get(i) if i >= 0 else None for i in op.inputs]
        if k in INT8_KERNELS and g.tensors[op.outputs[0]].dtype == I8:
            relu = op.opts.get("act") == "RELU"  # a fused RELU clamps at the zero point
            for i, r in zip(op.outputs, int8_op(g, op, a)):
                v[i] = np.maximum(r, 0.0) if relu else r
            return
        if k == "FULLY_CONNECTED":
            x, W, b = a
            wt = g.tensors[op.inputs[1]]
            if wt.dtype == I8 and g.tensors[op.inputs[0]].dtype == F32:  # hybrid: quantise x per row now
                q, s, zp = hybrid_quantize_rows(x, op.opts.get("asymmetric", False))
                wq = wt.data.astype(np.float64)
                acc = q @ wq.T - zp * wq.sum(axis=1)[None]  # the kernel's exact int32 accumulation
                r = (acc * s * wt.scale.astype(np.float64)[None]).astype(np.float32)
            else:
                r = x @ W.T  # (B, K) @ (K, N): quantised x and W are already on their grids
            res = [r if b is None else r + b]
        elif k == "ADD":
            res = [a[0] + a[1]]
        elif k == "SUB":
            res = [a[0] - a[1]]
        elif k == "MUL":
            res = [a[0] * a[1]]
        elif k == "LOGISTIC":
            res = [0.5 * np.tanh(0.5 * a[0]) + 0.5]
        elif k == "TANH":
            res = [np.tanh(a[0])]
        elif k == "SPLIT":
            res = np.split(a[1], op.opts["num_splits"], axis=1)
        elif k in ("QUANTIZE", "DEQUANTIZE"):  # the rounding happens below, on the output's grid
            res = [a[0]]
        else:
            raise NotImplementedError(k)
        for i, r in zip(op.outputs, res):
            t = g.tensors[i]
            r = r.astype(np.float32)
            if op.opts.get("act") == "RELU":
                r = np.maximum(r, 0.0)
            if t.quantized:
                r = fake_quant(r, t)
            v[i] = r
            if self.observe:
                self.lo[i] = min(self.lo.get(i, np.inf), float(r.min()))
                self.hi[i] = max(self.hi.get(i, -np.inf), float(r.max()))

    def step(self, feeds: dict[int, np.ndarray]) -> list[np.ndarray]:
        """One step: {input tensor index: (B, N)} -> the graph outputs [y, h_out_0, ...], each (B, N)."""
        v = dict(self.consts)
        for i, x in feeds.items():
            v[i] = x = np.asarray(x, np.float32)
            if self.observe:
                self.lo[i] = min(self.lo.get(i, 0.0), float(x.min()))
                self.hi[i] = max(self.hi.get(i, 0.0), float(x.max()))
        for op in self.g.ops:
            self.run_op(op, v)
        return [v[i] for i in self.g.outputs]

    def stream(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """Sequences (each (T, I), from a zero state) -> outputs (T, O); equal lengths run as one batch."""
        out = [None] * len(seqs)
        by_len = {}
        for n, s in enumerate(seqs):
            by_len.setdefault(len(s), []).append(n)
        x_in, state_in = self.g.inputs[0], self.g.inputs[1:]
        O = self.g.tensors[self.g.outputs[0]].shape[1]
        for T, idx in by_len.items():
            batch = np.stack([np.asarray(seqs[n], np.float32) for n in idx])  # (B, T, I)
            state = [np.zeros((len(idx), self.g.tensors[i].shape[1]), np.float32) for i in state_in]
            ys = np.zeros((len(idx), T, O), np.float32)
            for t in range(T):
                ys[:, t], *state = self.step({x_in: batch[:, t], **dict(zip(state_in, state))})
            for b, n in enumerate(idx):
                out[n] = ys[b]
        return out


# ----------------------------------------------------------------------------
# writing the flatbuffer


def op_version(g: Graph, op: Op) -> int:
    """The builtin version TFLite's converter would write (tensorflow/lite/tools/versioning/op_version.cc)."""
    t = [g.tensors[i] if i >= 0 else None for i in op.inputs]
    dt = t[1].dtype if op.kind == "SPLIT" else t[0].dtype
    k = op.kind
    if k == "FULLY_CONNECTED":
        x, w = t[0].dtype, t[1].dtype
        if x == F32 and w == I8 and len(t[1].scale) > 1:
            return 12  # per-channel hybrid: tflite-runtime 2.14 has no version 12 (and ignores such scales)
        if x == F32 and w == I8:
            return 9 if op.opts.get("asymmetric") else 3  # hybrid
        return {I8: 4, I16: 7}.get(x, 1)
    if k == "DEQUANTIZE":
        if dt in (F16, I16):
            return 3
        return (5 if len(t[0].scale) > 1 else 2) if dt == I8 else 1
    if k == "QUANTIZE":
        return 2 if g.tensors[op.outputs[0]].dtype == I16 else 1
    if k == "MUL" and dt == I8:
        s1, s2, so = t[0].scale[0], t[1].scale[0], g.tensors[op.outputs[0]].scale[0]
        return 3 if s1 * s2 / so >= 1.0 else 2
    table = {
        "ADD": {I8: 2, I16: 3},
        "SUB": {I8: 2, I16: 5},
        "MUL": {I16: 4},
        "LOGISTIC": {I8: 2, I16: 3},
        "TANH": {I8: 2, I16: 3},
        "SPLIT": {I8: 2, I16: 4},
    }
    return table.get(k, {}).get(dt, 1)


def to_flatbuffer(g: Graph, description: str, metadata: dict[str, bytes]) -> bytes:
    """Serialise with the official TFLite schema bindings; one subgraph, signature 'serving_default'."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    class AlignedBuffer(S.BufferT):  # constant data 16-byte aligned, like TFLite's converter
        def Pack(self, builder):
            data = None
            if self.data is not None and len(self.data):
                n = len(self.data)
                builder.StartVector(1, n, 16)
                builder.head -= n
                builder.Bytes[builder.head : builder.head + n] = self.data
                data = builder.EndVector()
            S.BufferStart(builder)
            if data is not None:
                S.BufferAddData(builder, data)
            return S.BufferEnd(builder)

    types = {
        F32: S.TensorType.FLOAT32,
        F16: S.TensorType.FLOAT16,
        I8: S.TensorType.INT8,
        I16: S.TensorType.INT16,
        I32: S.TensorType.INT32,
        I64: S.TensorType.INT64,
    }
    buffers = [AlignedBuffer()]  # buffer 0: the empty sentinel that every activation points to
    tensors = []
    for t in g.tensors:
        tt = S.TensorT()
        tt.name, tt.type = t.name, types[t.dtype]
        tt.shape = np.array(t.shape, np.int32)
        if t.data is not None:
            buffers.append(AlignedBuffer())
            buffers[-1].data = np.ascontiguousarray(t.data).tobytes()
            tt.buffer = len(buffers) - 1
        if t.quantized:
            q = S.QuantizationParametersT()
            q.scale = np.asarray(t.scale, np.float32)
            q.zeroPoint = np.asarray(t.zero_point, np.int64)
            q.quantizedDimension = 0
            tt.quantization = q
        tensors.append(tt)

    codes, operators = [], []
    for op in g.ops:
        code = (getattr(S.BuiltinOperator, op.kind), op_version(g, op))
        if code not in codes:
            codes.append(code)
        o = S.OperatorT()
        o.opcodeIndex = codes.index(code)
        o.inputs = np.array(op.inputs, np.int32)
        o.outputs = np.array(op.outputs, np.int32)
        o.builtinOptionsType, o.builtinOptions = _options(S, g, op)
        operators.append(o)

    sub = S.SubGraphT()
    sub.tensors, sub.operators, sub.name = tensors, operators, "main"
    sub.inputs, sub.outputs = np.array(g.inputs, np.int32), np.array(g.outputs, np.int32)

    sig = S.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    sig.inputs = [_tensor_map(S, g.tensors[i].name, i) for i in g.inputs]
    sig.outputs = [_tensor_map(S, g.tensors[i].name, i) for i in g.outputs]

    model = S.ModelT()
    model.version = 3
    model.description = description
    model.operatorCodes = []
    for builtin, version in codes:
        oc = S.OperatorCodeT()
        oc.deprecatedBuiltinCode = min(builtin, 127)  # 127 = PLACEHOLDER_FOR_GREATER_OP_CODES
        oc.builtinCode, oc.version = builtin, version
        model.operatorCodes.append(oc)
    model.subgraphs, model.signatureDefs = [sub], [sig]
    model.metadata = []
    for name, data in metadata.items():
        buffers.append(AlignedBuffer())
        buffers[-1].data = data
        m = S.MetadataT()
        m.name, m.buffer = name, len(buffers) - 1
        model.metadata.append(m)
    model.buffers = buffers

    b = flatbuffers.Builder(1 << 16)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _tensor_map(S, name, index):
    m = S.TensorMapT()
    m.name, m.tensorIndex = name, index
    return m


def _options(S, g: Graph, op: Op):
    act = getattr(S.ActivationFunctionType, op.opts.get("act", "NONE"))
    int16 = g.tensors[op.outputs[0]].dtype == I16
    if op.kind == "FULLY_CONNECTED":
        o = S.FullyConnectedOptionsT()
        o.fusedActivationFunction = act
        o.asymmetricQuantizeInputs = bool(op.opts.get("asymmetric", False))
        return S.BuiltinOptions.FullyConnectedOptions, o
    if op.kind in ("ADD", "SUB"):
        o = S.AddOptionsT() if op.kind == "ADD" else S.SubOptionsT()
        o.fusedActivationFunction = act
        o.potScaleInt16 = False if int16 else True  # general int16 scales (not powers of two)
        return getattr(S.BuiltinOptions, f"{op.kind.title()}Options"), o
    if op.kind == "MUL":
        o = S.MulOptionsT()
        o.fusedActivationFunction = act
        return S.BuiltinOptions.MulOptions, o
    if op.kind == "SPLIT":
        o = S.SplitOptionsT()
        o.numSplits = op.opts["num_splits"]
        return S.BuiltinOptions.SplitOptions, o
    return S.BuiltinOptions.NONE, None
