"""Which ONNX graph form streams faster: the decomposed cell (Gemm/MatMul + gate ops) or the ONNX operator?

Per-step latency (µs, median over interleaved rounds, one thread) of single-step graphs through rnnedge's ORT
runner (IO binding, two swapped state bindings), next to the native numpy runtime, all in the same run on the
same inputs. fp32 and int8-dynamic (ORT quantize_dynamic, per-channel, reduce_range) for both forms;
int8-static (QDQ) for the decomposed form only (ORT's QDQ quantiser has no LSTM/GRU operator support).
Random weights, input 40, head Linear(H, 12), one layer. Also prints what ORT made of each graph.

    python benchmarks/onnx_graph_forms.py                       # LSTM and GRU, H = 64, 128, 256
    python benchmarks/onnx_graph_forms.py --cells gru --hidden 128 --rounds 15
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import torch
from rnnedge.export import onnx_graph, onnx_quant
from rnnedge.export.reference import fold_normalization
from rnnedge.runtime.backends.native import NumpyBackend
from rnnedge.runtime.backends.ort import OrtRunner, import_ort, session
from rnnedge.runtime.bundle import state_specs
from rnnedge.train.model import ModelConfig, RecurrentModel

INPUT, OUTPUT = 40, 12
VARIANTS = ("numpy", "cell fp32", "op fp32", "cell int8-dyn", "op int8-dyn", "cell int8-static")


def build(cell: str, H: int, seed: int = 0):
    """The random model, its folded weights, and every variant's runner factory."""
    torch.manual_seed(seed)
    cfg = ModelConfig(cell=cell, input_size=INPUT, hidden_size=H, num_layers=1, output_size=OUTPUT)
    model = RecurrentModel(cfg).eval()
    w = fold_normalization(model)
    specs = state_specs(cell, 1, H)
    rng = np.random.default_rng(seed)
    calib = [rng.standard_normal((100, INPUT)).astype(np.float32) for _ in range(8)]
    graphs = {}
    for form in ("cell", "op"):
        graphs[f"{form} fp32"] = onnx_graph.step_model(cell, w, INPUT, H, 1, OUTPUT, form=form)
        mm = onnx_graph.step_model(cell, w, INPUT, H, 1, OUTPUT, form=form, linear_op="matmul")
        graphs[f"{form} int8-dyn"] = onnx_quant.dynamic(mm)
    f32 = session(graphs["cell fp32"].SerializeToString(), threads=None)
    names = [o.name for o in f32.get_outputs()]
    cal = onnx_quant.calibration_inputs(
        lambda feed: dict(zip(names, f32.run(None, feed))), {s.input: s.size for s in specs}, calib
    )
    graphs["cell int8-static"] = onnx_quant.static(graphs["cell fp32"], cal)
    stub = SimpleNamespace(
        weights=lambda: w,
        cell=cell,
        input_size=INPUT,
        hidden_size=H,
        state_size=H,
        num_layers=1,
        states=specs,
        quant="fp32",
    )
    runners = {"numpy": NumpyBackend(stub).runner()}
    kernels = {}
    for name, g in graphs.items():
        sess, kernels[name] = optimized(g)
        runners[name] = OrtRunner(sess, specs, INPUT, OUTPUT)
    return runners, kernels


def optimized(model: onnx.ModelProto):
    """A one-thread session and the op types ORT runs after its graph optimisations."""
    ort = import_ort()
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # portable, serialisable
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    heavy = sorted(
        {o for o in ops if "MatMul" in o or "Gemm" in o or o in ("LSTM", "GRU", "RNN") or "LSTM" in o}
    )
    return session(model.SerializeToString(), threads=1), f"{len(ops)} nodes: {', '.join(heavy)}"


def measure(runners: dict, steps: int, rounds: int, seed: int = 0) -> dict[str, float]:
    xs = np.random.default_rng(seed).standard_normal((steps, INPUT)).astype(np.float32)
    times = {k: [] for k in runners}
    for r in runners.values():  # warm up
        for x in xs[:200]:
            r.step(x)
    for _ in range(rounds):
        for name, r in runners.items():  # interleaved: every variant sees the same machine load
            r.reset()
            step = r.step
            t0 = time.perf_counter_ns()
            for x in xs:
                step(x)
            times[name].append((time.perf_counter_ns() - t0) / steps / 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--hidden", default="64,128,256")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=11)
    args = ap.parse_args(argv)
    ort = import_ort()
    print(
        f"onnxruntime {ort.__version__}, one thread, input {INPUT}, head {OUTPUT}, one layer; µs per step\n"
    )
    rows, notes = [], []
    for cell in args.cells.split(","):
        for H in [int(h) for h in args.hidden.split(",")]:
            runners, kernels = build(cell, H)
            res = measure(runners, args.steps, args.rounds)
            rows.append((cell, H, res))
            notes += [f"  {cell} H={H} {k}: {v}" for k, v in kernels.items()]
    print("| cell | H | " + " | ".join(VARIANTS) + " |")
    print("|---|---|" + "---|" * len(VARIANTS))
    for cell, H, res in rows:
        print(f"| {cell} | {H} | " + " | ".join(f"{res[v]:.1f}" for v in VARIANTS) + " |")
    print("\nwhat ORT runs (after its graph optimisations):")
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
