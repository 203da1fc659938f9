"""Build the ONNX graphs of a recurrent model with onnx.helper, from PyTorch-layout weights.

The streaming graph is ONE step with the state as explicit named inputs and outputs (batch dynamic):

    x (B, I), h_in_0 (B, H), c_in_0 (B, H), ...  ->  y (B, O), h_out_0 (B, H), c_out_0 (B, H), ...
    (an LSTM with proj_size P: h (B, P), c (B, H))

Two forms of the cell (benchmarks/onnx_graph_forms.py measures them; export/onnx_export.py picks "cell"):
    "cell"  decomposed: Gemm(x, W_ih) + Gemm(h, W_hh) (MatMul + Add for quantize_dynamic) + the gate math
            in elementwise ops. x and h get separate products (not one on concat(x, h)) so that int8
            activation quantisation gives each its own scale: inputs and a state in (-1, 1) share no range.
    "op"    the ONNX LSTM / GRU / RNN operator on a sequence of length 1. It has no LSTM projection (its R is
            (4H, H)), so an LSTM with proj_size is "cell" only: there h = Gemm(o * tanh(c), W_hr).
PyTorch gate order is the spec; ONNX's operators want LSTM i,o,f,c and GRU z,r,h (with linear_before_reset=1,
which is PyTorch's GRU; gru_lbr0 is linear_before_reset=0, the ONNX default).

Weight storage ("fp32" | "fp16" | "int8"): fp16 and int8 store the matrices small and turn them back into the
scheme's float32 weights in the graph (Cast, Cast * scale on initializers, which ORT folds once at load), so
the graph computes exactly what export/quantize.effective() defines.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from rnnedge.export import quantize
from rnnedge.export.onnx_export import FORMS  # the graph forms, defined with the ONNX export options

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; ORT >= 1.14 reads it


class GraphBuilder:
    """Collects nodes and initializers; tensor names are unique and readable (l0_gates, ...)."""

    def __init__(self, weight_format: str = "fp32", linear: str = "gemm"):
        self.linear = linear  # "gemm" | "matmul": how x @ W.T + b is written (see linear())
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.weight_format = weight_format
        self.names: set[str] = set()

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attrs):
        """Add a node; returns its output name (or list of names: name_0, name_1, ...)."""
        outs = [name] if outputs == 1 else [f"{name}_{k}" for k in range(outputs)]
        assert not self.names.intersection(outs), f"duplicate tensor name in {outs}"
        self.names.update(outs)
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{name}", **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, name: str, a: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def matrix(self, name: str, w: np.ndarray, axis: int) -> str:
        """A float32 weight matrix as the graph sees it, stored per the weight format.

        `axis` is the output-channel axis of `w` as stored (int8 keeps one scale per output channel, the
        rows of the PyTorch matrix, exactly as quantize.quantize_rows does)."""
        w = np.asarray(w, np.float32)
        if self.weight_format == "fp32":
            return self.const(name, w)
        if self.weight_format == "fp16":
            return self.op(
                "Cast", [self.const(name + "_fp16", w.astype(np.float16))], name, to=TensorProto.FLOAT
            )
        # int8: quantise the rows of the PyTorch matrix (channel axis moved first), store in w's layout.
        # Cast + Mul, not DequantizeLinear: ORT fuses DequantizeLinear -> MatMul into MatMulNBits, which
        # quantises the activations too (4e-3 off the weight-only reference); Cast + Mul is folded at load.
        wt = np.moveaxis(w, axis, 0)
        q, scale = quantize.quantize_rows(wt.reshape(wt.shape[0], -1))
        q = np.moveaxis(q.reshape(wt.shape), 0, axis)
        shape = [1] * w.ndim
        shape[axis] = -1
        wf = self.op("Cast", [self.const(name + "_int8", q)], name + "_float", to=TensorProto.FLOAT)
        return self.op("Mul", [wf, self.const(name + "_scale", scale.reshape(shape))], name)


# ----------------------------------------------------------------------------
# decomposed cells: one step, x (B, I) and state (B, H) -> new state


def linear(g: GraphBuilder, x: str, w: np.ndarray, b: np.ndarray | None, name: str) -> str:
    """x (B, K) @ w.T + b, w (N, K) in PyTorch layout.

    Gemm(transB=1) takes PyTorch's layout as is, and ORT's QDQ fusion turns DQ -> Gemm into one integer QGemm
    (a QDQ MatMul followed by Add is first fused into a float Gemm and then runs its DequantizeLinear every
    step: 15x slower). quantize_dynamic only quantises MatMul, so the dynamic scheme gets MatMul + Add."""
    if g.linear == "gemm":
        ins = [x, g.matrix(name + "_W", w, axis=0)] + (
            [] if b is None else [g.const(name + "_b", np.asarray(b, np.float32))]
        )
        return g.op("Gemm", ins, name, transB=1)
    y = g.op("MatMul", [x, g.matrix(name + "_W", w.T, axis=1)], name + "_mm")
    return y if b is None else g.op("Add", [y, g.const(name + "_b", np.asarray(b, np.float32))], name)


def lstm_cell(g, x, h, c, w_ih, w_hh, b_ih, b_hh, H, p, w_hr=None):
    """w_hr (P, H): the projection of an LSTM with proj_size, h = (o * tanh(c)) @ w_hr.T; None: none."""
    order = np.r_[0 : 2 * H, 3 * H : 4 * H, 2 * H : 3 * H]  # i,f,g,o -> i,f,o,g: sigmoid gates contiguous
    gx = linear(g, x, w_ih[order], (b_ih + b_hh)[order], p + "xproj")  # (B, 4H)
    gh = linear(g, h, w_hh[order], None, p + "hproj")  # (B, 4H)
    a = g.op("Add", [gx, gh], p + "gates")
    ifo, gg = g.op(
        "Split", [a, g.const(p + "split_sig", np.array([3 * H, H], np.int64))], p + "split", 2, axis=1
    )
    i, f, o = g.op("Split", [g.op("Sigmoid", [ifo], p + "sig")], p + "ifo", 3, axis=1)
    c1 = g.op(
        "Add",
        [g.op("Mul", [f, c], p + "fc"), g.op("Mul", [i, g.op("Tanh", [gg], p + "g")], p + "ig")],
        p + "c",
    )
    h1 = g.op("Mul", [o, g.op("Tanh", [c1], p + "tanh_c")], p + ("h" if w_hr is None else "m"))
    return (h1 if w_hr is None else linear(g, h1, w_hr, None, p + "h")), c1


def gru_cell(g, x, h, w_ih, w_hh, b_ih, b_hh, H, p):
    gx = linear(g, x, w_ih, b_ih, p + "xproj")  # (B, 3H) rows r, z, n
    gh = linear(g, h, w_hh, b_hh, p + "hproj")  # (B, 3H)
    sizes = g.const(p + "split_rz", np.array([2 * H, H], np.int64))
    rz_x, n_x = g.op("Split", [gx, sizes], p + "split_x", 2, axis=1)
    rz_h, n_h = g.op("Split", [gh, sizes], p + "split_h", 2, axis=1)
    rz = g.op("Sigmoid", [g.op("Add", [rz_x, rz_h], p + "rz_pre")], p + "rz")
    r, z = g.op("Split", [rz], p + "split_rz", 2, axis=1)
    n = g.op("Tanh", [g.op("Add", [n_x, g.op("Mul", [r, n_h], p + "r_nh")], p + "n_pre")], p + "n")
    # h' = (1 - z) * n + z * h = n + z * (h - n)
    return g.op("Add", [n, g.op("Mul", [z, g.op("Sub", [h, n], p + "h_n")], p + "z_hn")], p + "h")


def gru_lbr0_cell(g, x, h, w_ih, w_hh, b_ih, b_hh, H, p):
    """linear_before_reset=0: n = tanh(W_in x + b_in + W_hn (r * h) + b_hn); rows r, z, n as gru_cell."""
    gx = linear(g, x, w_ih, b_ih, p + "xproj")  # (B, 3H)
    rz_h = linear(g, h, w_hh[: 2 * H], b_hh[: 2 * H], p + "hproj")  # (B, 2H)
    rz_x, n_x = g.op(
        "Split", [gx, g.const(p + "split_rz", np.array([2 * H, H], np.int64))], p + "split_x", 2, axis=1
    )
    rz = g.op("Sigmoid", [g.op("Add", [rz_x, rz_h], p + "rz_pre")], p + "rz")
    r, z = g.op("Split", [rz], p + "split_rz", 2, axis=1)
    n_h = linear(g, g.op("Mul", [r, h], p + "rh"), w_hh[2 * H :], b_hh[2 * H :], p + "nproj")  # (B, H)
    n = g.op("Tanh", [g.op("Add", [n_x, n_h], p + "n_pre")], p + "n")
    return g.op("Add", [n, g.op("Mul", [z, g.op("Sub", [h, n], p + "h_n")], p + "z_hn")], p + "h")


def rnn_cell(g, x, h, w_ih, w_hh, b_ih, b_hh, act, p):
    a = g.op(
        "Add",
        [linear(g, x, w_ih, b_ih + b_hh, p + "xproj"), linear(g, h, w_hh, None, p + "hproj")],
        p + "pre",
    )
    return g.op(act, [a], p + "h")


# ----------------------------------------------------------------------------
# ONNX operators on a length-1 sequence


# PyTorch i,f,g,o -> ONNX i,o,f,c; r,z,n -> z,r,h
ONNX_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "gru_lbr0": (1, 0, 2)}


def onnx_gates(cell: str, a: np.ndarray, H: int) -> np.ndarray:
    if cell not in ONNX_ORDER:
        return a
    return np.concatenate([a[k * H : (k + 1) * H] for k in ONNX_ORDER[cell]])


def op_layer(g, cell, x3, h, c, w_ih, w_hh, b_ih, b_hh, H, p):
    """x3 (1, B, K) -> (Y (1, B, H) for the next layer, h (B, H), c (B, H) or None)."""
    zero = g.const(p + "axis0", np.array([0], np.int64))
    W = g.matrix(p + "W", onnx_gates(cell, w_ih, H)[None], axis=1)  # (1, G*H, K)
    R = g.matrix(p + "R", onnx_gates(cell, w_hh, H)[None], axis=1)  # (1, G*H, H)
    B = g.const(p + "B", np.concatenate([onnx_gates(cell, b_ih, H), onnx_gates(cell, b_hh, H)])[None])
    ins = [x3, W, R, B, "", g.op("Unsqueeze", [h, zero], p + "h0")]
    attrs = {"hidden_size": H}
    if cell == "lstm":
        ins.append(g.op("Unsqueeze", [c, zero], p + "c0"))
        op_type, nout = "LSTM", 3
    elif cell in ("gru", "gru_lbr0"):
        op_type, nout, attrs["linear_before_reset"] = "GRU", 2, int(cell == "gru")
    else:
        op_type, nout, attrs["activations"] = "RNN", 2, ["Tanh" if cell == "rnn_tanh" else "Relu"]
    outs = g.op(op_type, ins, p + cell, nout, **attrs)  # Y (1, 1, B, H), Y_h (1, B, H)[, Y_c]
    y3 = g.op("Squeeze", [outs[0], g.const(p + "axis1", np.array([1], np.int64))], p + "Y")
    h1 = g.op("Squeeze", [outs[1], zero], p + "h")
    c1 = g.op("Squeeze", [outs[2], zero], p + "c") if cell == "lstm" else None
    return y3, h1, c1


# ----------------------------------------------------------------------------
# the whole step graph


def unfold_input_normalization(w: dict, mean, std) -> dict:
    """Folded weights -> layer-0 weights for normalised input (inverse of reference.fold_normalization)."""
    w = dict(w)
    w_ih, b_ih = w["rnn.weight_ih_l0"].astype(np.float64), w["rnn.bias_ih_l0"].astype(np.float64)
    w["rnn.bias_ih_l0"] = (b_ih + w_ih @ np.asarray(mean, np.float64)).astype(np.float32)
    w["rnn.weight_ih_l0"] = (w_ih * np.asarray(std, np.float64)[None, :]).astype(np.float32)
    return w


def step_model(
    cell: str,
    weights: dict[str, np.ndarray],  # folded, PyTorch names and layouts (job.folded)
    input_size: int,
    hidden_size: int,
    num_layers: int,
    output_size: int,
    form: str = "cell",
    weight_format: str = "fp32",
    input_norm: tuple | None = None,  # (mean, std): normalise x in the graph instead of in the weights
    linear_op: str = "gemm",  # "matmul" for quantize_dynamic
    proj_size: int = 0,  # LSTM: h = W_hr (o * tanh(c)) of this size ("cell" form only)
) -> onnx.ModelProto:
    if form not in FORMS:
        raise ValueError(f"unknown graph form {form!r}: choose one of {FORMS}")
    if proj_size and form == "op":
        raise ValueError("the ONNX LSTM operator has no projection (proj_size): use the 'cell' form")
    I, H, L, O = input_size, hidden_size, num_layers, output_size
    S = proj_size or H  # the size of h
    g = GraphBuilder(weight_format, linear_op)
    # biases: the scheme's own values (fp16 rounds them too); matrices are stored by GraphBuilder.matrix
    w = {
        k: v if quantize.is_matrix(k) else quantize.effective({k: v}, weight_format)[k]
        for k, v in weights.items()
    }
    x = "x"
    if input_norm is not None:  # x_n = (x - mean) / std; the quantised MatMul then sees a unit-scale input
        mean, std = (np.asarray(a, np.float32) for a in input_norm)
        w = unfold_input_normalization(w, mean, std)
        x = g.op("Sub", [x, g.const("in_mean", mean)], "x_centered")
        x = g.op("Mul", [x, g.const("in_inv_std", (1.0 / std).astype(np.float32))], "x_norm")
    state_in = [f"h_in_{k}" for k in range(L)]
    c_in = [f"c_in_{k}" for k in range(L)]
    h_out, c_out = [], []
    if form == "op":
        x = g.op("Unsqueeze", [x, g.const("axis0", np.array([0], np.int64))], "x_seq")  # (1, B, I)
    for k in range(L):
        p = f"l{k}_"
        args = [w[f"rnn.{n}_l{k}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        c = c_in[k] if cell == "lstm" else None
        if form == "op":
            x, h1, c1 = op_layer(g, cell, x, state_in[k], c, *args, H, p)
        elif cell == "lstm":
            h1, c1 = lstm_cell(g, x, state_in[k], c, *args, H, p, w.get(f"rnn.weight_hr_l{k}"))
        elif cell == "gru":
            h1, c1 = gru_cell(g, x, state_in[k], *args, H, p), None
        elif cell == "gru_lbr0":
            h1, c1 = gru_lbr0_cell(g, x, state_in[k], *args, H, p), None
        else:
            h1, c1 = rnn_cell(g, x, state_in[k], *args, "Tanh" if cell == "rnn_tanh" else "Relu", p), None
        h_out.append(h1)
        c_out.append(c1)
        if form == "cell":
            x = h1
    y = linear(g, h_out[-1], w["head.weight"], w["head.bias"], "head")

    # name the outputs: graph outputs are renamed node outputs (an Identity per output would cost a kernel)
    rename = {y: "y"}
    for k in range(L):
        rename[h_out[k]] = f"h_out_{k}"
        if cell == "lstm":
            rename[c_out[k]] = f"c_out_{k}"
    for node in g.nodes:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]

    def vi(name, size):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", size])

    inputs, outputs = [vi("x", I)], [vi("y", O)]
    for k in range(L):
        inputs.append(vi(f"h_in_{k}", S))
        outputs.append(vi(f"h_out_{k}", S))
        if cell == "lstm":
            inputs.append(vi(f"c_in_{k}", H))
            outputs.append(vi(f"c_out_{k}", H))
    graph = helper.make_graph(g.nodes, "rnnedge_step", inputs, outputs, g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rnnedge", ir_version=IR_VERSION
    )
    return model


# ----------------------------------------------------------------------------
# the whole-sequence graph: the step graph as the body of one Scan


def sequence_model(step: onnx.ModelProto) -> onnx.ModelProto:
    """x (B, T, I) + initial state (B, H) each -> y (B, T, O) + final state, for offline batch inference.

    The body is the step graph's own nodes (float or quantised), reading its weights from the outer graph, so
    every step computes exactly what the streaming graph computes."""
    g = step.graph
    states = [i for i in g.input if i.name != "x"]
    outs = {o.name: o for o in g.output}
    state_outs = [outs[s.name.replace("_in_", "_out_")] for s in states]
    io_names = [i.name for i in g.input] + [o.name for o in g.output]
    inner = {n: f"{n}_t" for n in io_names}  # SSA: body names may not repeat outer ones
    body_nodes = []
    for node in g.node:
        n = onnx.NodeProto.FromString(node.SerializeToString())
        n.input[:] = [inner.get(i, i) for i in n.input]
        n.output[:] = [inner.get(o, o) for o in n.output]
        body_nodes.append(n)

    def renamed(vi, name):
        v = onnx.ValueInfoProto.FromString(vi.SerializeToString())
        v.name = name
        return v

    x = next(i for i in g.input if i.name == "x")
    body = helper.make_graph(
        body_nodes,
        "rnnedge_step_body",
        [renamed(s, inner[s.name]) for s in states] + [renamed(x, "x_t")],
        [renamed(o, inner[o.name]) for o in state_outs] + [renamed(outs["y"], "y_t")],
    )
    scan = helper.make_node(
        "Scan",
        [s.name for s in states] + ["x"],
        [o.name for o in state_outs] + ["y"],
        name="Scan_steps",
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_output_axes=[1],
    )

    def seq_vi(name, vi):  # (batch, F) -> (batch, time, F)
        size = vi.type.tensor_type.shape.dim[1].dim_value
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "time", size])

    graph = helper.make_graph(
        [scan],
        "rnnedge_sequence",
        [seq_vi("x", x)] + list(states),
        [seq_vi("y", outs["y"])] + state_outs,
        list(g.initializer),
    )
    model = helper.make_model(graph, opset_imports=list(step.opset_import), ir_version=step.ir_version)
    model.metadata_props.extend(step.metadata_props)
    return model
