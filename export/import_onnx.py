"""Bring your own ONNX model: map a graph built around the standard LSTM / GRU / RNN operators onto rnnedge's
model form and export it through the normal pipeline, checked against ONNX Runtime on the original file.

What maps:
    graph input -> [Transpose / Identity / Cast, and Sub / Div / Mul / Add with per-channel constants: an
    input normalisation, folded into the first layer] -> LSTM|GRU|RNN (1-3 nodes, each fed by the previous
    one's Y through Squeeze / Unsqueeze / Transpose / Reshape / Identity) -> head -> the FIRST graph output
    head: MatMul / Gemm / Add / Sub / Mul with constant operands (composed into one Linear layer), with
    Squeeze / Unsqueeze / Transpose / Reshape / Identity / Flatten / Dropout / Gather / Slice between (the
    last step or every step); no head = the last layer's h.
Operator attributes: `layout` 0 and 1; GRU `linear_before_reset` 1 (PyTorch's GRU) and 0 (ONNX's default,
rnnedge cell gru_lbr0); RNN activations Tanh or Relu; initial_h / initial_c as graph inputs (fed zeros: a
bundle's streams start from zero) or zero constants; sequence_lens as a graph input (fed T). Gate orders
are converted to PyTorch's: ONNX LSTM W/R/B rows i,o,f,c -> i,f,g,o; GRU z,r,h -> r,z,n.
Refused, naming the node and why: direction reverse / bidirectional (cannot stream), clip, non-default
activations, input_forget, non-zero peepholes, non-zero constant initial states, weights that are not
constants, activations in the head, and any other operator on the path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from rnnedge.train.model import ModelConfig, RecurrentModel

from .exporter import ExportJob, export
from .import_torch import ImportRefused, file_sha256, job_data, probe_sequences

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
SHAPE_OPS = ("Squeeze", "Unsqueeze", "Transpose", "Reshape", "Identity", "Flatten", "Dropout", "Cast")
TIME_SELECT_OPS = ("Gather", "Slice")
LINEAR_OPS = ("MatMul", "Gemm", "Add", "Sub", "Mul")
ACTIVATION_OPS = (
    "Relu",
    "Tanh",
    "Sigmoid",
    "Softmax",
    "LogSoftmax",
    "Gelu",
    "LeakyRelu",
    "Elu",
    "HardSigmoid",
)
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
# rows of ONNX's W/R/B per gate -> PyTorch's gate order
TO_TORCH = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2), "RNN": (0,)}  # i,o,f,c -> i,f,c(g),o; z,r,h -> r,z,n


class Graph:
    """The parts of an ONNX graph the mapper reads: constants, producers, inputs."""

    def __init__(self, model):
        from onnx import numpy_helper

        g = model.graph
        self.nodes = list(g.node)
        self.const = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.const[n.output[0]] = numpy_helper.to_array(a.t)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.inputs = {i.name: i for i in g.input if i.name not in self.const}
        self.outputs = [o.name for o in g.output]

    def is_zero(self, name: str) -> bool:
        """Provably all zeros: a zero constant, ConstantOfShape(0), or Expand/Reshape/... of one (the zero
        initial states torch.onnx builds from the input's shape)."""
        if name in self.const:
            return not np.any(self.const[name])
        n = self.producer.get(name)
        if n is None:
            return False
        if n.op_type == "ConstantOfShape":
            v = attrs(n).get("value")
            return v is None or not np.any(__import__("onnx").numpy_helper.to_array(v))
        if n.op_type in (
            "Expand",
            "Tile",
            "Reshape",
            "Unsqueeze",
            "Squeeze",
            "Identity",
            "Cast",
            "Transpose",
            "Slice",
            "Gather",
        ):
            return self.is_zero(n.input[0])
        if n.op_type == "Concat":
            return all(self.is_zero(i) for i in n.input)
        return False

    def value(self, name: str):
        """A constant tensor (initializer, Constant, or Identity of one), else None."""
        while name not in self.const and name in self.producer and self.producer[name].op_type == "Identity":
            name = self.producer[name].input[0]
        return self.const.get(name)


def label(node) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = (
            v.decode()
            if isinstance(v, bytes)
            else [x.decode() if isinstance(x, bytes) else x for x in v]
            if isinstance(v, list)
            else v
        )
    return out


# ----------------------------------------------------------------------------
# the recurrent nodes


def recurrent_weights(g: Graph, node, k: int) -> tuple[str, dict, int, int]:
    """One LSTM/GRU/RNN node -> (cell, {rnn.weight_ih_l{k}: ...} in PyTorch layout, I, H)."""
    a, op, ins = attrs(node), node.op_type, list(node.input) + [""] * 8
    where = label(node)
    direction = a.get("direction", "forward")
    if direction != "forward":
        raise ImportRefused(
            f"{where} has direction={direction}: a {direction} layer needs the future of the "
            "sequence, so it cannot stream"
        )
    if "clip" in a:
        raise ImportRefused(
            f"{where} has clip={a['clip']}: gate clipping is not supported by rnnedge's cells"
        )
    if a.get("input_forget", 0):
        raise ImportRefused(f"{where} has input_forget=1 (coupled gates): not supported")
    acts = a.get("activations")
    cell = {"LSTM": "lstm", "GRU": "gru" if a.get("linear_before_reset", 0) else "gru_lbr0"}.get(op)
    if op == "RNN":
        act = (acts or ["Tanh"])[0]
        if act not in ("Tanh", "Relu") or (acts and len(acts) > 1):
            raise ImportRefused(f"{where} has activations={acts}: rnnedge's RNN cell is Tanh or Relu")
        cell = "rnn_tanh" if act == "Tanh" else "rnn_relu"
    elif acts and acts != DEFAULT_ACTIVATIONS[op]:
        raise ImportRefused(f"{where} has activations={acts}: only the default {DEFAULT_ACTIVATIONS[op]} map")
    if any(k in a for k in ("activation_alpha", "activation_beta")):
        raise ImportRefused(f"{where} has activation_alpha/beta: not supported")
    W, R = g.value(ins[1]), g.value(ins[2])
    if W is None or R is None:
        raise ImportRefused(
            f"{where}: W and R must be constants (initializers), not computed or graph inputs"
        )
    B = g.value(ins[3]) if ins[3] else None
    if ins[3] and B is None:
        raise ImportRefused(f"{where}: B must be a constant (initializer)")
    check_optional_inputs(g, node, ins)
    H = int(a.get("hidden_size", R.shape[-1]))
    G = len(TO_TORCH[op])
    W, R = np.asarray(W, np.float64)[0], np.asarray(R, np.float64)[0]  # (G*H, I), (G*H, H)
    B = np.zeros(2 * G * H) if B is None else np.asarray(B, np.float64)[0]
    if W.shape[0] != G * H or R.shape != (G * H, H) or B.shape != (2 * G * H,):
        raise ImportRefused(f"{where}: W {W.shape}, R {R.shape}, B {B.shape} do not fit hidden_size={H}")
    order = np.concatenate([np.arange(j * H, (j + 1) * H) for j in TO_TORCH[op]])
    w = {
        f"rnn.weight_ih_l{k}": W[order],
        f"rnn.weight_hh_l{k}": R[order],
        f"rnn.bias_ih_l{k}": B[: G * H][order],
        f"rnn.bias_hh_l{k}": B[G * H :][order],
    }
    return cell, w, W.shape[1], H


def check_optional_inputs(g: Graph, node, ins: list) -> None:
    """sequence_lens (4), initial_h (5), initial_c (6), P (7): graph inputs or harmless constants."""
    where = label(node)
    for idx, what in ((5, "initial_h"), (6, "initial_c")):
        name = ins[idx]
        if name and trace_back(g, name, SHAPE_OPS + TIME_SELECT_OPS)[0] not in g.inputs:
            if not g.is_zero(name):
                raise ImportRefused(
                    f"{where}: {what} is a non-zero constant or computed, but a bundle's streams "
                    "start from a zero state; feed it as a graph input instead"
                )
    if ins[7]:
        P = g.value(ins[7])
        if P is None or np.any(P != 0):
            raise ImportRefused(
                f"{where} has peepholes (P): rnnedge's LSTM cell has none (PyTorch's neither)"
            )
    if ins[4] and ins[4] not in g.inputs and g.value(ins[4]) is None:
        raise ImportRefused(f"{where}: sequence_lens must be a graph input (fed the sequence length)")


def trace_back(g: Graph, name: str, allowed: Sequence[str]) -> tuple[str, list]:
    """Follow producers from `name` through `allowed` single-data-input ops -> (origin name, ops walked)."""
    walked = []
    while name in g.producer and g.producer[name].op_type in allowed:
        n = g.producer[name]
        walked.append(n)
        name = n.input[0]
    return name, walked


def find_core(g: Graph) -> list:
    rec = [n for n in g.nodes if n.op_type in RECURRENT_OPS]
    if not rec:
        raise ImportRefused("the graph has no LSTM, GRU or RNN operator to map")
    if len({n.op_type for n in rec}) > 1:
        raise ImportRefused(f"{label(rec[0])} and {label(rec[1])}: one recurrent operator type per model")
    if len(rec) > 3:
        raise ImportRefused(f"{len(rec)} stacked {rec[0].op_type} nodes: rnnedge streams 1-3 layers")
    for prev, n in zip(rec, rec[1:]):
        origin, _ = trace_back(g, n.input[0], SHAPE_OPS)
        if origin != prev.output[0]:
            bad = g.producer.get(origin)
            raise ImportRefused(
                f"{label(n)} is not fed by {label(prev)}'s Y through reshapes only"
                + (f" ({label(bad)} in between)" if bad is not None else "")
            )
    origin, walked = trace_input(g, rec[0].input[0])
    if origin not in g.inputs:
        bad = g.producer.get(origin)
        raise ImportRefused(
            f"{label(bad) if bad is not None else origin} before the recurrent core: rnnedge maps "
            "graph input -> LSTM/GRU/RNN (input normalisation or projections in the graph are not "
            "supported)"
        )
    return rec


INPUT_PATH_OPS = ("Transpose", "Identity", "Cast", "Sub", "Div", "Mul", "Add")


def trace_input(g: Graph, name: str) -> tuple[str, list]:
    """Back from the first recurrent node's X to the graph input through reshapes and per-channel affine
    ops with a constant operand (input normalisation) -> (origin, nodes walked, nearest the core first)."""
    walked = []
    while name in g.producer and g.producer[name].op_type in INPUT_PATH_OPS:
        n = g.producer[name]
        walked.append(n)
        name = linear_data_input(g, n) if n.op_type in LINEAR_OPS else n.input[0]
    return name, walked


def input_normalization(g: Graph, first, I: int) -> tuple[np.ndarray, np.ndarray]:
    """The affine ops on the input path, z = a x + b per channel -> (mean, std): z = (x - mean) / std."""
    a, b = np.ones(I), np.zeros(I)
    for n in reversed(trace_input(g, first.input[0])[1]):  # from the graph input towards the core
        if n.op_type == "Transpose":
            perm = attrs(n).get("perm")
            if perm is None or perm[-1] != len(perm) - 1:
                raise ImportRefused(f"{label(n)} before the core moves the channel axis: not supported")
            continue
        if n.op_type in ("Identity", "Cast"):
            continue
        k = 0 if g.value(n.input[0]) is not None else 1
        c = np.asarray(g.value(n.input[k]), np.float64)
        if c.size not in (1, I) or (c.size == I and c.shape[-1] != I):
            raise ImportRefused(
                f"{label(n)} before the core: its constant {c.shape} is not per input channel"
            )
        c = np.broadcast_to(c.reshape(-1), (I,))
        if n.op_type == "Add":
            b = b + c
        elif n.op_type == "Sub":
            a, b = (a, b - c) if k == 1 else (-a, c - b)
        elif n.op_type == "Mul":
            a, b = a * c, b * c
        elif k == 0:
            raise ImportRefused(f"{label(n)} divides a constant by the input: not an affine normalisation")
        else:
            a, b = a / c, b / c
    if np.any(a == 0) or not np.all(np.isfinite(a)):
        raise ImportRefused(
            "the input normalisation in the graph scales a channel by 0 or a non-finite value"
        )
    return -b / a, 1.0 / a


def input_time_axis(g: Graph, first) -> tuple[str, int]:
    """-> (graph input name, its time axis) from the first node's layout and the Transposes before it."""
    name, walked = trace_input(g, first.input[0])
    axes = [1, 0, 2] if attrs(first).get("layout", 0) else [0, 1, 2]  # X axes (T, B, I) in the input's terms
    for n in walked:  # nearest the node first: X = transpose(v, perm) means X axis j is v axis perm[j]
        if n.op_type == "Transpose":
            perm = attrs(n).get("perm", [2, 1, 0])
            axes = [perm[a] for a in axes]
    return name, axes[0]


# ----------------------------------------------------------------------------
# the head


def find_head(g: Graph, core: list, H: int) -> tuple[np.ndarray, np.ndarray, list]:
    """From the first graph output back to the last recurrent node -> W (O, H), b (O,), node names."""
    last = core[-1]
    name, W, b, names, steps = g.outputs[0], np.eye(H), np.zeros(H), [], []
    while name not in (last.output[0], last.output[1] if len(last.output) > 1 else None):
        n = g.producer.get(name)
        if n is None:
            raise ImportRefused(f"graph output {g.outputs[0]!r} does not come from {label(last)}'s Y or Y_h")
        if len(last.output) > 2 and name == last.output[2]:
            raise ImportRefused(
                f"graph output {g.outputs[0]!r} is the LSTM cell state Y_c: rnnedge outputs h"
            )
        if n.op_type in ACTIVATION_OPS:
            raise ImportRefused(
                f"{label(n)} in the head: rnnedge's head is one linear layer, so activations in or "
                "after it are not supported yet (drop a final Softmax: argmax is the same)"
            )
        if n.op_type in SHAPE_OPS + TIME_SELECT_OPS:
            name = n.input[0]
            continue
        if n.op_type not in LINEAR_OPS:
            raise ImportRefused(f"{label(n)} between {label(last)} and the output: rnnedge cannot map it")
        steps.append(n)
        names.append(n.name or n.output[0])
        name = linear_data_input(g, n)
    if len(last.output) > 2 and name == last.output[2]:
        raise ImportRefused(f"graph output {g.outputs[0]!r} is the LSTM cell state Y_c: rnnedge outputs h")
    for n in reversed(steps):  # forward order: v -> op(v)
        W, b = apply_linear(g, n, W, b)
    return W, b, names[::-1]


def linear_data_input(g: Graph, n) -> str:
    ins = [i for i in n.input[:2]]
    consts = [g.value(i) is not None for i in ins]
    if n.op_type == "Gemm":
        if not all(g.value(i) is not None for i in n.input[1:3] if i):
            raise ImportRefused(f"{label(n)}: B and C must be constants")
        return n.input[0]
    if sum(consts) != 1:
        raise ImportRefused(f"{label(n)}: exactly one operand must be a constant for it to be a linear map")
    return ins[consts.index(False)]


def apply_linear(g: Graph, n, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) so far (y = W h + b along the last axis) -> after node n."""
    op = n.op_type
    if op == "Gemm":
        a = attrs(n)
        if a.get("transA", 0):
            raise ImportRefused(f"{label(n)} with transA=1 cannot be a head layer")
        M = np.asarray(g.value(n.input[1]), np.float64)
        M = M.T if a.get("transB", 0) else M  # (in, out)
        C = np.asarray(g.value(n.input[2]), np.float64) if len(n.input) > 2 and n.input[2] else 0.0
        alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
        return alpha * M.T @ W, alpha * M.T @ b + beta * np.broadcast_to(C, (M.shape[1],)).reshape(-1)
    k = 0 if g.value(n.input[0]) is not None else 1
    C = np.asarray(g.value(n.input[k]), np.float64)
    if op == "MatMul":
        if k == 0 or C.ndim != 2:
            raise ImportRefused(f"{label(n)}: a head MatMul must be data @ constant (in, out)")
        return C.T @ W, C.T @ b
    size = W.shape[0]
    if C.size not in (1, size) or (C.ndim and C.shape[-1] not in (1, size)):
        raise ImportRefused(f"{label(n)}: its constant {C.shape} is not a per-output vector")
    v = np.broadcast_to(C.reshape(-1), (size,)) if C.size == 1 else C.reshape(-1)
    if op == "Add":
        return W, b + v
    if op == "Sub":
        return (W, b - v) if k == 1 else (-W, v - b)
    return W * v[:, None], b * v  # Mul


# ----------------------------------------------------------------------------
# mapping, the original in ONNX Runtime, and the API


def map_onnx(path: str | Path) -> tuple[ModelConfig, RecurrentModel, dict]:
    """An ONNX file -> (config, rnnedge's model form, parts {core, head, input, time_axis, fixed_steps})."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ImportRefused(f"no ONNX file at {path}")
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ImportRefused(f"cannot read {path} as ONNX: {str(e).splitlines()[0][:200]}") from None
    g = Graph(model)
    core = find_core(g)
    cells, w, sizes = set(), {}, []
    for k, n in enumerate(core):
        cell, wk, I, H = recurrent_weights(g, n, k)
        cells.add(cell)
        sizes.append((I, H))
        w.update(wk)
    if len(cells) > 1:
        raise ImportRefused(f"the layers mix {sorted(cells)}: one cell kind per model")
    (cell,) = cells
    I, H = sizes[0]
    if any(s != (H, H) for s in sizes[1:]):
        raise ImportRefused(f"stacked layers of sizes {sizes}: every layer needs one hidden size")
    W, b, head = find_head(g, core, H)
    w["head.weight"], w["head.bias"] = W, b
    cfg = ModelConfig(cell=cell, input_size=I, hidden_size=H, num_layers=len(core), output_size=W.shape[0])
    m = RecurrentModel(cfg)
    m.load_state_dict({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in w.items()}, strict=False)
    m.set_normalization(*input_normalization(g, core[0], I))
    x_name, t_axis = input_time_axis(g, core[0])
    dims = g.inputs[x_name].type.tensor_type.shape.dim
    fixed = dims[t_axis].dim_value if len(dims) == 3 and dims[t_axis].HasField("dim_value") else None
    parts = {
        "core": [n.name or n.op_type for n in core],
        "head": head,
        "input": x_name,
        "time_axis": t_axis,
        "fixed_steps": fixed,
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
    }
    return cfg, m.eval(), parts


def original_session(path: str | Path) -> tuple[str, Callable, list]:
    """ONNX Runtime on the original file, or onnx.reference when ORT refuses the graph (ORT has no
    batch-major GRU/RNN, layout=1) -> (which, run(feeds) -> first output, [(input name, type, shape)])."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        if "layout" not in str(e):
            raise ImportRefused(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0][:200]}") from None
        import onnx
        from onnx.reference import ReferenceEvaluator

        model = onnx.load(str(path))
        ref = ReferenceEvaluator(model)
        init = {t.name for t in model.graph.initializer}
        ins = [
            (
                i.name,
                "tensor(int32)"
                if i.type.tensor_type.elem_type == onnx.TensorProto.INT32
                else "tensor(float)",
                [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim],
            )
            for i in model.graph.input
            if i.name not in init
        ]
        return "onnx.reference", lambda feeds: ref.run(None, feeds)[0], ins
    ins = [(i.name, i.type, i.shape) for i in sess.get_inputs()]
    return "onnxruntime", lambda feeds: sess.run(None, feeds)[0], ins


def ort_runner(path: str | Path, parts: dict) -> Callable[[np.ndarray], np.ndarray]:
    """The ORIGINAL file in ONNX Runtime: one raw sequence (T, I) -> (T, O) or (O,) (last step only)."""
    parts["original_runtime"], run_feeds, inputs = original_session(path)
    x_name, t_axis = parts["input"], parts["time_axis"]
    others = [i for i in inputs if i[0] != x_name]

    def run(seq: np.ndarray) -> np.ndarray:
        T = len(seq)
        x = np.asarray(seq, np.float32)[None] if t_axis == 1 else np.asarray(seq, np.float32)[:, None]
        feeds = {x_name: x}
        for name, kind, dims in others:  # initial states: zeros (a stream's start); sequence_lens: T
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in dims]
            feeds[name] = np.full(shape, T, np.int32) if "int" in kind else np.zeros(shape, np.float32)
        y = run_feeds(feeds)
        y = np.asarray(y, np.float32)
        if y.ndim >= 3 and y.shape[-2] == 1 and y.size == T * y.shape[-1] and T > 1:
            return y.reshape(T, y.shape[-1])  # (T, 1, 1, O) / (T, 1, O) from Y: every step
        if y.ndim >= 2 and y.size == T * y.shape[-1] and T > 1:
            return y.reshape(T, y.shape[-1])
        if y.size == y.shape[-1]:
            return y.reshape(-1)  # Y_h or a last-step slice
        raise ImportRefused(f"the graph output has shape {y.shape} for one ({T}, {seq.shape[1]}) sequence")

    return run


def from_onnx(
    path: str | Path,
    out: str | Path,
    *,
    quant: str = "fp32",
    formats: Sequence[str] = ("native",),
    task: str = "classify",
    labels: Sequence[str] | None = None,
    data=None,
    options: dict | None = None,
    force: bool = False,
    log=print,
) -> Path:
    """Export a standard ONNX recurrent model to a verified rnnedge bundle at `out`; returns its path.

        import rnnedge.export as rx
        rx.from_onnx("model.onnx", "bundles/mine", data="basic_motions")

    The same arguments as from_torch (task, labels, data, quant, formats). The bundle is checked against the
    quantised reference AND against ONNX Runtime on the original file (parity["original"]; gating for fp32).
    Raises ImportRefused naming the node that cannot be mapped."""
    cfg, m, parts = map_onnx(path)
    mean, std = m.in_mean.double().numpy(), m.in_std.double().numpy()
    d = job_data(data, cfg.input_size, task, mean, std)
    if data is None and parts["fixed_steps"]:  # synthetic probes of the one length the graph takes
        d["eval_seqs"] = d["calib_seqs"] = probe_sequences(cfg.input_size, mean, std, T=parts["fixed_steps"])
    if parts["fixed_steps"]:  # a graph exported with a fixed sequence length runs only that length in ORT
        T0 = parts["fixed_steps"]
        d["eval_seqs"] = [s[:T0] for s in d["eval_seqs"] if len(s) >= T0]
        if not d["eval_seqs"]:
            raise ImportRefused(
                f"the ONNX input has a fixed length of {T0} steps and no data sequence is that "
                "long: pass --data with longer sequences or export with a dynamic time axis"
            )
        if d.get("eval_targets") is not None:
            d.pop("eval_targets")  # cropped sequences: accuracy would not be the model's
    labels = list(labels) if labels is not None else d.get("labels")
    if task == "classify" and labels is not None and len(labels) != cfg.output_size:
        raise ImportRefused(f"{len(labels)} labels for {cfg.output_size} outputs")
    original = ort_runner(path, parts)
    core, head = ", ".join(parts["core"]), ", ".join(parts["head"]) or "none"
    log(
        f"  mapped {Path(path).name}: {cfg.cell} {cfg.num_layers}x{cfg.hidden_size}, "
        f"input {cfg.input_size} -> {cfg.output_size} (core {core}; head {head})"
    )
    job = ExportJob(
        cfg=cfg,
        model=m,
        scheme=quant,
        task={"kind": task, "labels": labels, "readout": "last" if task == "classify" else "every_step"},
        eval_seqs=d["eval_seqs"],
        eval_targets=d.get("eval_targets"),
        calib_seqs=d["calib_seqs"],
        options=options or {},
        source={
            "kind": "onnx",
            "file": str(Path(path).resolve()),
            "sha256": file_sha256(path),
            **parts,
            "data": d["data"],
        },
        original=original,
    )
    return export(job, list(formats), out, force=force, log=log)
