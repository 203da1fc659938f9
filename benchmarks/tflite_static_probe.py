"""Which TFLite kernel does tflite-runtime 2.14 compute differently from LiteRT in an int8-static graph?

Writes the int8-static step graph of a run (the exporter's own graph), then steps held-out data through
LiteRT, tflite-runtime and the numpy emulation (export/tflite_graph.Evaluator, the reference) from the
same state each step, with every intermediate tensor preserved (`experimental_preserve_all_tensors`), and
reports per op the largest difference of its integer output in grid steps. Preserved intermediates of
tflite-runtime 2.14 are not reliable (its arena reuses buffers), so each op is then also cut out into a graph
of its own (QUANTIZE -> op -> DEQUANTIZE, the same grids and constants) and fed the emulation's exact inputs:
an op that differs there is a kernel that computes differently.

    python benchmarks/tflite_static_probe.py RUN [--activations int8|int16] [--steps 300]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def interpreters(content: bytes) -> dict:
    from rnnedge.runtime.backends.litert import interpreter_module

    out = {}
    for name in ("litert", "tflite-runtime"):
        mod = interpreter_module(name)
        it = mod.Interpreter(model_content=content, num_threads=1, experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        out[name] = it
    return out


def by_name(it) -> dict[str, int]:
    return {d["name"]: d["index"] for d in it.get_tensor_details()}


def step_all(it, names: dict, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for n, v in feeds.items():
        it.set_tensor(names[n], v.astype(np.float32))
    it.invoke()
    return {n: it.get_tensor(i).copy() for n, i in names.items()}


def single_op_graph(g, j: int):
    """Op j of g alone: float inputs -> QUANTIZE (same grids) -> op -> DEQUANTIZE -> float outputs."""
    from dataclasses import replace

    from rnnedge.export.tflite_graph import Graph, Op

    op, s = g.ops[j], Graph()
    ins = []
    for i in op.inputs:
        if i < 0:
            ins.append(-1)
            continue
        t = g.tensors[i]
        if t.data is not None:  # a constant: copied as it is
            ins.append(s.add(replace(t)))
            continue
        f = s.input(f"in{len(ins)}", t.shape[1])
        if t.quantized:
            q = s.add(replace(t, name=f"in{len(ins)}_q"))
            s.ops.append(Op("QUANTIZE", [f], [q]))
            f = q
        ins.append(f)
    outs = [s.add(replace(g.tensors[o], name=f"out{k}_q")) for k, o in enumerate(op.outputs)]
    s.ops.append(Op(op.kind, ins, outs, dict(op.opts)))
    for k, o in enumerate(outs):
        if s.tensors[o].quantized:
            d = s.add(replace(s.tensors[o], name=f"out{k}", dtype="float32", scale=None, zero_point=None))
            s.ops.append(Op("DEQUANTIZE", [o], [d]))
            o = d
        s.outputs.append(o)
    return s


def isolate(g, ev, x, state, steps: int) -> list[tuple]:
    """Per op: max difference (grid steps) of LiteRT and tflite-runtime from the emulation, op run alone."""
    from rnnedge.export import tflite_graph

    # the emulation's values of every tensor, each step (teacher forcing through the state)
    values = []
    for t in range(min(steps, len(x))):
        v = dict(ev.consts)
        for i, f in zip(g.inputs, [x[t : t + 1], *state]):
            v[i] = f
        for op in g.ops:
            ev.run_op(op, v)
        values.append(v)
        state = [v[i] for i in g.outputs[1:]]
    rows = []
    for j, op in enumerate(g.ops):
        if op.kind in ("QUANTIZE", "DEQUANTIZE") or all(i in g.float_io for i in op.outputs):
            continue
        s = single_op_graph(g, j)
        its = interpreters(tflite_graph.to_flatbuffer(s, "probe", {}))
        feeds_idx = [i for i in op.inputs if i >= 0 and g.tensors[i].data is None]
        worst = dict.fromkeys(its, 0.0)
        for v in values:
            feeds = {f"in{op.inputs.index(i)}": v[i] for i in feeds_idx}
            for name, it in its.items():
                got = step_all(it, by_name(it), feeds)
                for k, o in enumerate(op.outputs):
                    t = g.tensors[o]
                    d = np.abs(got[f"out{k}"].astype(np.float64) - v[o]).max() / float(t.scale[0])
                    worst[name] = max(worst[name], float(d))
        rows.append((j, op.kind, g.tensors[op.outputs[0]].name, worst["litert"], worst["tflite-runtime"]))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--activations", default="int8", choices=("int8", "int16"))
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args(argv)

    from rnnedge.export import tflite_export, tflite_graph
    from rnnedge.export.exporter import job_from_run

    job = job_from_run(a.run, "int8-static", options={"tflite_activations": a.activations})
    g, _ = tflite_export.graph(job)
    content = tflite_graph.to_flatbuffer(g, "probe", {})
    its = interpreters(content)
    names = {k: by_name(it) for k, it in its.items()}
    ev = tflite_graph.Evaluator(g)
    x = np.concatenate([np.asarray(s, np.float32) for s in job.eval_seqs])[: a.steps]
    state_in = g.inputs[1:]
    state = [np.zeros((1, g.tensors[i].shape[1]), np.float32) for i in state_in]
    # per op output: max |a - b| in grid steps, for litert vs emulation and tflite-runtime vs emulation
    worst = {k: {} for k in its}
    for t in range(len(x)):
        feeds = {"x": x[t : t + 1], **{g.tensors[i].name: s for i, s in zip(state_in, state)}}
        v = dict(ev.consts)
        for i, f in zip(g.inputs, [feeds["x"], *state]):
            v[i] = f
        for op in g.ops:
            ev.run_op(op, v)
        got = {k: step_all(it, names[k], feeds) for k, it in its.items()}
        for op in g.ops:
            for o in op.outputs:
                tt = g.tensors[o]
                for k in its:
                    if tt.name not in got[k]:
                        continue
                    val = got[k][tt.name].astype(np.float64)
                    ref = v[o].astype(np.float64)
                    if tt.quantized:  # the interpreter holds integers: compare in grid steps
                        s, z = float(tt.scale[0]), float(tt.zero_point[0])
                        ref, val = np.round(ref / s + z), val
                    d = float(np.abs(val.reshape(ref.shape) - ref).max())
                    key = (g.ops.index(op), op.kind, tt.name)
                    worst[k][key] = max(worst[k].get(key, 0.0), d)
        state = [v[i] for i in g.outputs[1:]]  # teacher forcing: the emulation's state
    print(f"{a.activations} int8-static, {len(x)} steps from the emulation's state each step")
    print("| op | kind | output | LiteRT - emulation | tflite-runtime - emulation |")
    print("|---|---|---|---|---|")
    for key in worst["litert"]:
        lr, tr = worst["litert"][key], worst["tflite-runtime"].get(key, float("nan"))
        print(f"| {key[0]} | {key[1]} | {key[2]} | {lr:.3g} | {tr:.3g} |")
    print("\neach op alone, fed the emulation's inputs (max difference in output grid steps)")
    print("| op | kind | output | LiteRT - emulation | tflite-runtime - emulation |")
    print("|---|---|---|---|---|")
    zero = [np.zeros((1, g.tensors[i].shape[1]), np.float32) for i in state_in]
    for j, kind, name, lr, tr in isolate(g, tflite_graph.Evaluator(g), x, zero, a.steps):
        print(f"| {j} | {kind} | {name} | {lr:.3g} | {tr:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
