"""The TFLite artifact: model.tflite, one `serving_default` signature with explicit state, builtin ops only.

Written from the bundle's own weights with the official schema bindings (no TensorFlow, no converter), see
tflite_graph.py for the step graph and tflite_quant.py for the schemes. Options (ExportJob.options):

    tflite_target       "both" (default) | "litert" | "tflite-runtime": the interpreters the file must be
                        correct on; the export is verified on each of them
    tflite_activations  int8-static only: "int8" (a8w8, default; what integer accelerators run) | "int16"
                        (a16w8: resolves a large LSTM cell state that int8 cannot - BasicMotions LSTM
                        97.5 % vs 87.5 % for a8w8 - but both interpreters run it on slower kernels, 2-15x)
    tflite_weights      "per-channel" | "per-tensor" (default: per-channel, except int8-dynamic for a target
                        that includes tflite-runtime, which silently ignores per-channel hybrid scales)

Signature I/O is float32 for every scheme (x, h_in_0, c_in_0, ... -> y, h_out_0, ...). A full-integer graph
quantises them inside (QUANTIZE / DEQUANTIZE ops), with each state input and output sharing one grid, so the
state round-trips exactly and the runner never requantises in numpy. The rnnedge manifest (model, task,
normalisation, quant, io) is embedded as the TFLite metadata entry `rnnedge_manifest` (JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rnnedge.runtime.backends.litert import interpreter_module
from rnnedge.runtime.errors import ExportError, MissingDependency, require
from rnnedge.runtime.fileio import atomic_write_bytes
from rnnedge.runtime.vocab import TFLITE_INTERPRETERS

from . import quantize, tflite_graph, tflite_quant
from .format import ExportFormat, option
from .manifest import base_manifest

FILE = "model.tflite"
METADATA = "rnnedge_manifest"
TARGETS = {"both": list(TFLITE_INTERPRETERS), **{name: [name] for name in TFLITE_INTERPRETERS}}
EMBEDDED = ("model", "task", "normalization", "quant", "io")
ACT_DESC = {"int8": "a8w8 (int8 activations)", "int16": "a16w8 (int16 activations and state)"}


WEIGHTS = ("per-channel", "per-tensor")


@dataclass(frozen=True)
class TfliteOptions:
    target: str = option("both", tuple(TARGETS), "TFLite interpreter(s) the file must be correct on")
    activations: str = option(
        "int8",
        tuple(tflite_quant.ACTIVATIONS),
        "int8-static TFLite: int8 activations (a8w8) or int16 (a16w8: keeps a large LSTM cell state "
        "accurate, slower kernels)",
    )
    weights: str | None = option(
        None,
        WEIGHTS,
        "TFLite weight scales (default: per-channel, but per-tensor for int8-dynamic on tflite-runtime, "
        "which silently ignores per-channel hybrid scales)",
    )


def plan(job) -> dict:
    """Target, weight granularity and activation type for this job; ExportError for what cannot work."""
    opts = job.format_options(FORMAT)
    target, act = opts.target, opts.activations
    hybrid_rt = job.scheme == "int8-dynamic" and "tflite-runtime" in TARGETS[target]
    weights = opts.weights or ("per-tensor" if hybrid_rt else "per-channel")
    if hybrid_rt and weights == "per-channel":
        raise ExportError(
            "int8-dynamic with per-channel weight scales cannot run on tflite-runtime 2.14: it has no "
            "FULLY_CONNECTED version 12 and older versions silently ignore the per-channel scales. Use "
            "--target litert, or per-tensor weights (the default for targets that include tflite-runtime)"
        )
    if job.scheme == "int8" and weights != "per-channel":
        raise ExportError("int8 weight-only TFLite stores the bundle's per-row int8 weights: use per-channel")
    return {"target": target, "weights": weights, "activations": act if job.scheme == "int8-static" else None}


def backends(job) -> list[str]:
    return TARGETS[plan(job)["target"]]


def graph(job) -> tuple[tflite_graph.Graph, dict]:
    """The step graph for the job's scheme (built once per job: calibration is not free)."""
    cache = job.__dict__.setdefault("_tflite", {})
    if "graph" in cache:
        return cache["graph"], cache["info"]
    p = plan(job)
    try:
        require(
            "ai_edge_litert.schema_py_generated",
            "ai-edge-litert (TFLite schema bindings)",
            "'rnnedge[tflite]'",
        )
    except MissingDependency as e:
        raise ExportError(f"cannot write TFLite: {e}") from e
    for name in TARGETS[p["target"]]:  # fail before writing anything if a target cannot be verified
        try:
            interpreter_module(name)
        except MissingDependency as e:
            others = [t for t in TARGETS if t != p["target"] and name not in TARGETS[t]]
            raise ExportError(
                f"--target {p['target']} verifies the file on {name}, but {e}; or choose --target {others[0]}"
            ) from e
    cfg, scheme = job.cfg, job.scheme
    info = {"target": p["target"], "interpreters": TARGETS[p["target"]]}
    if scheme in quantize.WEIGHT_ONLY:
        g = tflite_graph.build(
            cfg, quantize.effective(job.folded, scheme) if scheme == "fp16" else job.folded
        )
        if scheme != "fp32":
            tflite_quant.weight_only(g, scheme)
        info["weights"] = {"fp32": "float32", "fp16": "float16, DEQUANTIZE'd to float32 at load"}.get(
            scheme, "int8 per output row, DEQUANTIZE'd to float32 at load"
        )
        info["compute"] = "float32"
    else:
        # activation-quantised: normalise inside the graph so each quantised tensor sees a unit range
        # (raw inputs can carry offsets and scales that a per-tensor int8 grid cannot resolve)
        w, in_norm, out_norm = unfolded(job)
        static = scheme == "int8-static"
        g = tflite_graph.build(cfg, w, in_norm, out_norm, boundary=static)
        per_channel = p["weights"] == "per-channel"
        info["weights"] = f"int8 symmetric, {p['weights']}"
        if static:
            if not job.calib_seqs:
                raise ExportError(
                    "int8-static needs calibration data: ExportJob.calib_seqs (training sequences) is empty"
                )
            ev = tflite_quant.calibrate(g, job.calib_seqs)
            cal = tflite_quant.full_integer(g, ev, p["activations"], per_channel)
            info["compute"] = f"full integer, {ACT_DESC[p['activations']]}, float32 I/O"
            info["calibration"] = {
                "sequences": len(job.calib_seqs),
                "steps": int(sum(len(s) for s in job.calib_seqs)),
                "method": "true min/max, each sequence from a zero state and all of them as one stream",
                **cal,
            }
        else:
            tflite_quant.hybrid(g, per_channel)
            info["compute"] = "hybrid: int8 weights, inputs quantised per step (asymmetric), float32 I/O"
        cache["float_graph"] = tflite_graph.build(cfg, w, in_norm, out_norm, boundary=static)
    info["ops"] = len(g.ops)
    cache["graph"], cache["info"] = g, info
    return g, info


def unfolded(job):
    """Trained weights without the folded normalisation, and the (mean, std) pairs (None when identity)."""
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in job.model.state_dict().items()}
    norm_in = sd.pop("in_mean"), sd.pop("in_std")
    norm_out = sd.pop("out_mean"), sd.pop("out_std")

    def keep(mean_std):
        mean, std = mean_std
        return None if (np.all(mean == 0) and np.all(std == 1)) else (mean, std)

    return sd, keep(norm_in), keep(norm_out)


def write(job, folder: Path) -> dict:
    g, info = graph(job)
    manifest = {k: v for k, v in base_manifest(job).items() if k in EMBEDDED}
    manifest["tflite"] = info
    desc = (
        f"rnnedge {job.cfg.cell} {job.cfg.num_layers}x{job.cfg.hidden_size} {job.scheme}: one step, explicit "
        f"state; signature serving_default; manifest JSON in metadata '{METADATA}'"
    )
    data = tflite_graph.to_flatbuffer(g, desc, {METADATA: json.dumps(manifest, sort_keys=True).encode()})
    path = Path(folder) / FILE
    atomic_write_bytes(path, data)
    art = {
        "file": FILE,
        "signature": "serving_default",
        "inputs": [g.tensors[i].name for i in g.inputs],
        "outputs": [g.tensors[i].name for i in g.outputs],
        "metadata": METADATA,
        "batch": 1,  # one stream per interpreter: every tensor is (1, N)
        **info,
    }
    if job.scheme not in quantize.WEIGHT_ONLY:
        art["layout_check"] = layout_check(job, path, g, manifest["model"])
    return art


LAYOUT_TOL = {"int8-dynamic": 0.01, "int8-static": 0.05}  # x the range of each output over the probe


def layout_check(job, path: Path, g, model: dict) -> dict:
    """One step at a time on held-out data, each target interpreter against the graph's numpy emulation.

    The exporter's parity check for activation-quantised schemes only asks for decision agreement, which a
    file that an interpreter misreads can pass. Here every step starts from the emulation's own state
    (teacher forcing), so rounding differences cannot grow through the recurrence. An output passes if it
    is within LAYOUT_TOL of its range, or within twice the scheme's own one-step error (emulation vs float
    graph): interpreters round differently when they requantise, which moves an output by a grid step or
    two, and through a saturating cell (a coarse LSTM cell state) by about one quantisation error. A correct
    hybrid file is off by ~1e-7; an interpreter that ignores quantisation parameters (tflite-runtime 2.14
    with per-channel hybrid scales) by 5-30 % of the output range. ExportError names the interpreter."""
    from rnnedge.runtime.backends.litert import TfliteBackend
    from rnnedge.runtime.bundle import Bundle
    from rnnedge.runtime.errors import RnnEdgeError

    x, states, outs, floats = probe(job, g, job.__dict__["_tflite"]["float_graph"])
    names = [g.tensors[i].name for i in g.outputs]
    span = {n: max(float(np.ptp([o[k] for o in outs])), 1e-6) for k, n in enumerate(names)}
    own = {
        n: max(float(np.abs(o[k] - f[k]).max()) for o, f in zip(outs, floats)) for k, n in enumerate(names)
    }
    tol = {n: max(LAYOUT_TOL[job.scheme] * span[n], 2 * own[n]) for n in names}
    bundle = Bundle(path.parent, {"model": model, "artifacts": {"tflite": {"file": path.name}}})
    errors = {}
    for name in backends(job):
        try:
            runner = TfliteBackend(bundle, 1, name).runner()
        except RnnEdgeError as e:
            raise ExportError(f"cannot check model.tflite on {name}: {e}") from e
        worst = {n: 0.0 for n in names}
        for t in range(len(x)):
            runner.set_state(states[t])
            got = [runner.step(x[t])[None]] + list(runner.get_state().values())
            for n, a, b in zip(names, got, outs[t]):
                worst[n] = max(worst[n], float(np.abs(a - b).max()))
        errors[name] = worst
        bad = [n for n in names if not worst[n] <= tol[n]]
        if bad:
            n = bad[0]
            raise ExportError(
                f"model.tflite computes wrong answers on {name}: one step from the same state, {n} is off "
                f"by {worst[n]:.3g} ({worst[n] / span[n]:.0%} of its range) from the numpy emulation of the "
                f"file (tolerance {tol[n]:.3g}). The interpreter misreads this layout (e.g. tflite-runtime "
                f"2.14 ignores per-channel hybrid scales): choose another --target or weight granularity"
            )
    return {"steps": len(x), "max_abs_error_one_step": errors, "tolerance": tol, "scheme_error_one_step": own}


def probe(job, g, float_graph, max_steps: int = 500):
    """Held-out steps: the emulation's state before each step, its outputs and the float graph's outputs."""
    seqs = [np.asarray(s, np.float32) for s in (job.eval_seqs or job.calib_seqs)]
    x = np.concatenate(seqs)[:max_steps] if seqs else np.zeros((0, job.cfg.input_size), np.float32)
    ev, fl = tflite_graph.Evaluator(g), tflite_graph.Evaluator(float_graph)
    state_in = g.inputs[1:]
    state = [np.zeros((1, g.tensors[i].shape[1]), np.float32) for i in state_in]
    states, outs, floats = [], [], []
    for t in range(len(x)):
        feed = {g.inputs[0]: x[t : t + 1], **dict(zip(state_in, state))}
        states.append({g.tensors[i].name: s for i, s in zip(state_in, state)})
        outs.append(ev.step(feed))
        floats.append(fl.step(feed))  # same tensor indices: the quantised graph is the float one, re-typed
        state = outs[-1][1:]
    return x, states, outs, floats


# int8-static (a8w8) per interpreter, measured op by op (benchmarks/tflite_static_probe.py): the numpy
# emulation computes the integers of LiteRT's default kernels (XNNPACK qs8, tflite_graph.int8_op), so LiteRT
# matches it exactly (tests/test_tflite.py checks every tensor of every step); tflite-runtime 2.14's int8
# FULLY_CONNECTED and MUL requantise with another rounding (one grid step off, the op alone on identical
# inputs), and through the recurrence those steps compound (BasicMotions logits 0.1-2.6 off). So LiteRT is
# held to the reference exactly and tflite-runtime to the general bound; where that cannot hold, `--target
# both` is refused
EXACT_BOUND = 1e-3  # x the output range: far below one int8 output step (1/255 of its range)


def relative_bound(job, backend: str) -> float | None:
    if job.scheme == "int8-static" and backend == "litert" and plan(job)["activations"] == "int8":
        return EXACT_BOUND
    return None


def failure_hint(job, backend: str, res: dict) -> str | None:
    if job.scheme != "int8-static" or backend != "tflite-runtime":
        return None
    return (
        f"tflite-runtime 2.14 rounds int8 FULLY_CONNECTED and MUL requantisation differently from LiteRT and "
        f"the reference (one grid step per op); through this model's recurrence that grows to "
        f"{res['relative_error']:.1%} of the output range (bound {res.get('max_relative_error', 0.05):.0%}), "
        "so this int8-static file cannot be verified on both interpreters: use --target litert, or "
        "--tflite-activations int16, or int8-dynamic for tflite-runtime"
    )


def reference(job):
    """Weight-only schemes: None (the PyTorch reference, exact). int8-dynamic / int8-static: the graph itself
    run in numpy, which defines what the file computes (hybrid FCs quantise their input per step exactly like
    TFLite's kernel; integer tensors are rounded to their calibrated grids)."""
    if job.scheme in quantize.WEIGHT_ONLY:
        return None
    g, _ = graph(job)
    ev = tflite_graph.Evaluator(g)
    return lambda seq: ev.stream([np.asarray(seq, np.float32)])[0]


def read_manifest(path) -> dict:
    """The rnnedge manifest embedded in a .tflite file (needs ai-edge-litert's schema bindings)."""
    from ai_edge_litert import schema_py_generated as S

    model = S.Model.GetRootAs(Path(path).read_bytes(), 0)
    for k in range(model.MetadataLength()):
        m = model.Metadata(k)
        if m.Name().decode() == METADATA:
            return json.loads(model.Buffers(m.Buffer()).DataAsNumpy().tobytes())
    raise KeyError(f"{path} has no '{METADATA}' metadata")


FORMAT = ExportFormat(
    "tflite",
    TfliteOptions,
    backends,
    write,
    reference,
    needs=("ai_edge_litert", "tflite_runtime"),  # the default target verifies on both interpreters
    relative_bound=relative_bound,
    failure_hint=failure_hint,
)
