"""The ONNX artifact: model.onnx, ONE step with explicit named state, built with onnx.helper (no torch.onnx).

    x (B, I), h_in_0 (B, H), c_in_0 (B, H), ...  ->  y (B, O), h_out_0 (B, H), c_out_0 (B, H), ...

Opset 17, batch dynamic. The base manifest (model, task, normalization, quant, io, version) is also in the
file's metadata_props, one JSON value per key, so the file describes itself without the bundle.

Schemes (export/quantize.py defines them):
    fp32, fp16, int8  weight-only: fp16 / int8-per-row matrices in the file, turned into the scheme's
                      float32 weights at load (Cast, Cast * scale), computed in float: exact vs PyTorch
    int8-dynamic      onnxruntime quantize_dynamic on the MatMuls (onnx_quant.py)
    int8-static       onnxruntime quantize_static, QDQ, calibrated by streaming job.calib_seqs (onnx_quant.py)
The activation-quantised schemes normalise x inside the graph (weights unfolded) so that each quantised
activation spans a unit-scale range instead of raw sensor units.

Options (ExportJob.options):
    onnx_graph  "cell" (default): decomposed cell, Gemm/MatMul + elementwise gate ops; "op": the ONNX
                LSTM/GRU/RNN operator. Measured (benchmarks/onnx_graph_forms.py): the two are within noise in
                float; only "cell" quantises GRU and RNN (ORT leaves those operators float) and supports
                int8-static (ORT's QDQ quantiser has no LSTM/GRU/RNN support), so "cell" is the default.
    onnx_sequence  True: also write model_seq.onnx, the same step as the body of a Scan over time, for
                offline batch inference: x (B, T, I) + initial state -> y (B, T, O) + final state. Checked
                to give the streaming graph's numbers; not faster per step than streaming (ORT's Scan has
                its own per-iteration cost), useful for whole batches of sequences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rnnedge.runtime.bundle import state_specs
from rnnedge.runtime.errors import ExportError, MissingDependency, require
from rnnedge.runtime.fileio import atomic_write_bytes

from . import quantize
from .format import ExportFormat, option
from .manifest import base_manifest

FILE = "model.onnx"
SEQ_FILE = "model_seq.onnx"
EMBEDDED = ("model", "task", "normalization", "quant", "io", "rnnedge_version")
PIP = "'rnnedge[onnx]'"


FORMS = ("cell", "op")


@dataclass(frozen=True)
class OnnxOptions:
    graph: str = option(
        "cell",
        FORMS,
        "ONNX graph form: the decomposed cell (ORT quantises every cell, int8-static works) or the ONNX "
        "LSTM/GRU/RNN operator",
    )
    sequence: bool = option(
        False, help="also write model_seq.onnx, a whole-sequence graph for offline batch inference"
    )


def backends(job) -> list[str]:
    return ["onnxruntime"]


def graph(job):
    """(ModelProto without metadata, info dict) for the job's scheme; built once per job (calibration)."""
    cache = job.__dict__.setdefault("_onnx", {})
    if "model" not in cache:
        cache["model"], cache["info"] = _build(job)
    return cache["model"], cache["info"]


def _build(job):
    try:
        require("onnx", "onnx", PIP)
        require("onnxruntime", "onnxruntime", PIP)
    except MissingDependency as e:
        raise ExportError(f"cannot write ONNX: {e}") from e
    from . import onnx_graph, onnx_quant

    cfg, scheme = job.cfg, job.scheme
    form = job.format_options(FORMAT).graph
    if form == "op" and scheme == "int8-static":
        raise ExportError(
            "int8-static needs onnx_graph='cell': ORT's QDQ quantiser leaves the LSTM/GRU/RNN operator float"
        )
    if form == "op" and cfg.proj_size:
        raise ExportError(
            "onnx_graph='op' cannot express LSTM proj_size: the ONNX LSTM operator has no projection; "
            "use onnx_graph='cell' (the default), which writes h = W_hr (o * tanh(c)) as a Gemm"
        )
    args = (cfg.cell, job.folded, cfg.input_size, cfg.hidden_size, cfg.num_layers, cfg.output_size)
    info = {"opset": onnx_graph.OPSET, "graph": form}
    if scheme in quantize.WEIGHT_ONLY:
        model = onnx_graph.step_model(*args, form=form, weight_format=scheme, proj_size=cfg.proj_size)
        info["weights"] = {
            "fp32": "float32",
            "fp16": "float16, Cast to float32 at load",
            "int8": "int8 symmetric per output row, x float32 scale at load",
        }[scheme]
        info["compute"] = "float32"
        return model, info
    norm = input_norm(job)
    info["input_normalization"] = "in graph" if norm else "none"
    if scheme == "int8-dynamic":
        model = onnx_graph.step_model(
            *args, form=form, input_norm=norm, linear_op="matmul", proj_size=cfg.proj_size
        )
        model = onnx_quant.dynamic(model)
        info["compute"] = "ORT quantize_dynamic: MatMul -> uint8 activations quantised per step (per tensor)"
    else:
        if not job.calib_seqs:
            raise ExportError(
                "int8-static needs calibration sequences (ExportJob.calib_seqs, the training split)"
            )
        model = onnx_graph.step_model(*args, form=form, input_norm=norm, proj_size=cfg.proj_size)
        cal = calibrate(job, model)
        model = onnx_quant.static(model, cal)
        info["compute"] = "ORT quantize_static QDQ: Gemm inputs uint8 with calibrated ranges, outputs float"
        info["calibration"] = {
            "steps": int(len(cal["x"])),
            "method": "true min/max over streamed steps, from reset and back-to-back chains",
        }
    info["weights"] = "int8 symmetric per output channel, 7-bit (reduce_range)"
    info["reduce_range"] = onnx_quant.REDUCE_RANGE
    onnx_quant.drop_unused_initializers(model)
    return model, info


def job_states(cfg):
    """The state tensors of a model config (h (P or H) and c (H) per layer)."""
    return state_specs(cfg.cell, cfg.num_layers, cfg.hidden_size, cfg.proj_size)


def input_norm(job):
    """(mean, std) of the trained input normalisation, None when it is the identity."""
    mean = job.model.in_mean.detach().cpu().numpy().astype(np.float32)
    std = job.model.in_std.detach().cpu().numpy().astype(np.float32)
    return None if (np.all(mean == 0) and np.all(std == 1)) else (mean, std)


def calibrate(job, float_model) -> dict:
    from rnnedge.runtime.backends.ort import session

    from . import onnx_quant

    sess = session(float_model.SerializeToString(), threads=None)
    names = [o.name for o in sess.get_outputs()]
    specs = job_states(job.cfg)
    return onnx_quant.calibration_inputs(
        lambda feed: dict(zip(names, sess.run(None, feed))),
        {s.input: s.size for s in specs},
        job.calib_seqs,
    )


def write(job, folder: Path) -> dict:
    import onnx
    from onnx import helper

    from rnnedge import __version__

    model, info = graph(job)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    manifest = base_manifest(job)
    manifest["quant"] = {**manifest["quant"], "onnx": info}
    helper.set_model_props(model, {k: json.dumps(manifest[k], sort_keys=True) for k in EMBEDDED})
    model.producer_name, model.producer_version = "rnnedge", __version__
    cfg = job.cfg
    model.doc_string = (
        f"rnnedge {cfg.cell} {cfg.num_layers}x{cfg.hidden_size} {job.scheme}: one step, state as explicit "
        f"inputs and outputs (batch dynamic); manifest fields as JSON in metadata_props"
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(f"the ONNX graph fails onnx.checker: {e}") from e
    data = model.SerializeToString()
    atomic_write_bytes(Path(folder) / FILE, data)
    specs = job_states(cfg)
    art = {
        "file": FILE,
        "inputs": ["x"] + [s.input for s in specs],
        "outputs": ["y"] + [s.output for s in specs],
        "metadata_props": list(EMBEDDED),
        **info,
    }
    if job.scheme not in quantize.WEIGHT_ONLY:
        art["vs_float"] = vs_float(job, data, specs)
    if job.format_options(FORMAT).sequence:
        from .onnx_graph import sequence_model

        seq = sequence_model(model)
        seq.doc_string = model.doc_string.replace("one step", "whole sequences (Scan over the step)")
        onnx.checker.check_model(seq, full_check=True)
        seq_data = seq.SerializeToString()
        art["sequence"] = {"file": SEQ_FILE, **check_sequence(job, data, seq_data, specs)}
        atomic_write_bytes(Path(folder) / SEQ_FILE, seq_data)
    return art


def check_sequence(job, step_data: bytes, seq_data: bytes, specs, n: int = 4) -> dict:
    """The sequence graph must give the streaming graph's outputs (one sequence per call: int8-dynamic's
    per-tensor activation scale would couple a batch's rows)."""
    from rnnedge.runtime.backends.ort import OrtRunner, session

    runner = OrtRunner(session(step_data), specs, job.cfg.input_size, job.cfg.output_size)
    sess = session(seq_data)
    err = 0.0
    for seq in job.eval_seqs[:n]:
        seq = np.asarray(seq, np.float32)
        runner.reset()
        want = np.stack([runner.step(x).copy() for x in seq])
        zeros = {s.input: np.zeros((1, s.size), np.float32) for s in specs}
        got = sess.run(["y"], {"x": seq[None], **zeros})[0][0]
        err = max(err, float(np.abs(got - want).max()))
    if not err <= 1e-5:
        raise ExportError(f"{SEQ_FILE} does not reproduce the streaming graph: max |err| = {err:.3g}")
    return {"max_abs_error_vs_step": err, "sequences_checked": min(n, len(job.eval_seqs))}


def vs_float(job, data: bytes, specs) -> dict:
    """What activation quantisation costs: ORT on the held-out sequences against the float PyTorch model
    (parity is checked against the graph's own semantics, which includes the quantisation)."""
    from rnnedge.runtime.backends.ort import OrtRunner, session

    from .reference import run_reference
    from .verify import compare

    runner = OrtRunner(session(data), specs, job.cfg.input_size, job.cfg.output_size)
    float_model = job.model.eval()

    def pairs():
        for seq in job.eval_seqs:
            runner.reset()
            y = np.stack([runner.step(x).copy() for x in np.asarray(seq, np.float32)])
            yield y, run_reference(float_model, seq)

    res = compare(pairs(), job.task.get("kind") == "classify")
    return {k: res[k] for k in ("sequences", "max_abs_error", "relative_error", "agreement") if k in res}


def reference(job):
    """Weight-only schemes: None (the PyTorch reference, exact to 1e-4).

    int8-dynamic / int8-static: the exported graph itself, evaluated by onnx.reference (ONNX's Python
    implementation of the operator specs). It defines what the scheme computes (which tensors are quantised,
    with which scales and rounding), independently of ORT's fused integer kernels; parity against it catches
    an ORT kernel that does not compute the graph, e.g. u8s8 saturation on x86 without VNNI (ARCHITECTURE.md,
    "Known traps")."""
    if job.scheme in quantize.WEIGHT_ONLY:
        return None
    model, _ = graph(job)
    if any(n.domain not in ("", "ai.onnx") for n in model.graph.node):
        # onnx_graph="op": ORT's DynamicQuantizeLSTM is a contrib op with no ONNX semantics to evaluate, so
        # this form is checked against the weight-only reference with the decision-agreement tolerance
        return None
    ref = GraphReference(model, job_states(job.cfg))
    if job.scheme != "int8-static":
        return (
            ref  # int8-dynamic: one scale per tensor per step couples a batch's rows: one sequence at a time
        )
    # static scales are fixed, so a batch's rows are independent: the held-out set goes through in one batch
    cache = {}

    def run(seq):
        if not cache:
            cache.update({id(s): y for s, y in zip(job.eval_seqs, ref.batch(job.eval_seqs))})
        return cache[id(seq)] if id(seq) in cache else ref(seq)

    return run


class GraphReference:
    """Stream sequences through a step graph with onnx.reference.ReferenceEvaluator. seq (T, I) -> (T, O)."""

    def __init__(self, model, specs):
        import onnx
        from onnx.reference import ReferenceEvaluator

        model = onnx.ModelProto.FromString(model.SerializeToString())
        for (
            op
        ) in model.opset_import:  # onnx.reference implements QuantizeLinear from opset 19 on (same semantics)
            if op.domain in ("", "ai.onnx"):
                op.version = max(op.version, 19)
        self.specs = specs
        self.ev = ReferenceEvaluator(fold_constants(model, ReferenceEvaluator(model), self._zeros(1)))

    def _zeros(self, batch: int, x_size: int | None = None) -> dict:
        state = {s.input: np.zeros((batch, s.size), np.float32) for s in self.specs}
        return state if x_size is None else {"x": np.zeros((batch, x_size), np.float32), **state}

    def __call__(self, seq: np.ndarray) -> np.ndarray:
        return self.batch([seq])[0]

    def batch(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """Step len(seqs) sequences side by side (shorter ones padded with zeros at the end)."""
        T = max(len(s) for s in seqs)
        x = np.zeros((T, len(seqs), seqs[0].shape[1]), np.float32)  # (T, B, I)
        for b, s in enumerate(seqs):
            x[: len(s), b] = s
        state, out = self._zeros(len(seqs)), []
        for t in range(T):
            res = dict(zip(self.ev.output_names, self.ev.run(None, {"x": x[t], **state})))
            out.append(res["y"])
            state = {s.input: res[s.output] for s in self.specs}
        y = np.stack(out, axis=1).astype(np.float32)  # (B, T, O)
        return [y[b, : len(s)] for b, s in enumerate(seqs)]


def fold_constants(model, ev, state: dict):
    """Replace nodes that read only initializers (weight dequantisation) by their values, computed once."""
    import onnx

    const = {t.name for t in model.graph.initializer}
    fold = []
    for n in model.graph.node:
        if all(i == "" or i in const for i in n.input):
            fold.append(n)
            const.update(n.output)
    if not fold:
        return model
    names = [o for n in fold for o in n.output]
    x = {"x": np.zeros((1, model.graph.input[0].type.tensor_type.shape.dim[1].dim_value), np.float32)}
    values = ev.run(names, {**x, **state})
    folded = {id(n) for n in fold}
    keep = [n for n in model.graph.node if id(n) not in folded]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in zip(names, values)
    )
    return model


def read_metadata(path) -> dict:
    """The manifest fields embedded in a model.onnx, decoded (needs onnx)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return {k: json.loads(v) for k, v in props.items() if k in EMBEDDED}


FORMAT = ExportFormat("onnx", OnnxOptions, backends, write, reference, needs=("onnx", "onnxruntime"))
