"""Per-step latency of the TFLite backends (litert, tflite-runtime) next to the native numpy runtime.

Random-weight LSTM and GRU (input 40, head 12, one layer) at H = 64 / 128 / 256 are exported with rnnedge's
exporter (verified in both interpreters), one bundle per TFLite variant. Every (bundle, backend) is then
timed in the same interleaved rounds, one thread, the same inputs: per-step time of Stream.step (what a
user calls: input checks + the backend's step + a copy of y), median over rounds, plus the file size.

    python benchmarks/tflite_step.py                                   # everything (~2 min)
    python benchmarks/tflite_step.py --cells lstm --hidden 128 --variants fp32,int8-dynamic --steps 5000
    python benchmarks/tflite_step.py --run runs/basic_motions-lstm   # a trained run: + test accuracy

With --run, each variant is exported from the training run (test split for parity, training split for
calibration) and the table adds the test accuracy measured by the export's parity check in each backend.
"""

# ruff: noqa: E402  (BLAS threads must be set before numpy is imported)
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # "one thread" includes numpy's BLAS

import json

import numpy as np
import torch
from rnnedge.export.exporter import ExportJob, export, job_from_run
from rnnedge.runtime import load
from rnnedge.train.model import ModelConfig, RecurrentModel

INPUT, OUTPUT = 40, 12
BACKENDS = ("native", "litert", "tflite-runtime")
# variant -> (scheme, tflite options)
VARIANTS = {
    "fp32": ("fp32", {}),
    "fp16": ("fp16", {}),
    "int8": ("int8", {}),
    "int8-dynamic": ("int8-dynamic", {}),  # per-tensor weights: correct on both interpreters
    "int8-dynamic/litert": ("int8-dynamic", {"tflite_target": "litert"}),  # per-channel, LiteRT only
    "int8-static/a8w8": ("int8-static", {"tflite_activations": "int8"}),
    "int8-static/a16w8": ("int8-static", {"tflite_activations": "int16"}),
}


def make_job(cell: str, hidden: int, scheme: str, options: dict) -> ExportJob:
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig(cell, INPUT, hidden, 1, OUTPUT)).eval()
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((100, INPUT)).astype(np.float32) for _ in range(8)]
    task = {"kind": "regress", "labels": None, "readout": "every_step"}
    return ExportJob(model.cfg, model, scheme, task, seqs[:2], calib_seqs=seqs, options=options)


def time_steps(stream, xs: np.ndarray) -> float:
    step = stream.step
    t0 = time.perf_counter()
    for x in xs:
        step(x)
    return (time.perf_counter() - t0) / len(xs) * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--hidden", default="64,128,256")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=2000, help="steps per timing (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds, median reported")
    p.add_argument("--run", type=Path, help="a training run folder: benchmark its model instead")
    a = p.parse_args()
    cells, hiddens = a.cells.split(","), [int(h) for h in a.hidden.split(",")]
    variants = a.variants.split(",")

    import ai_edge_litert
    import tflite_runtime

    print(
        f"# {platform.machine()} {platform.processor() or ''} python {platform.python_version()}, "
        f"numpy {np.__version__}, ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}, "
        f"tflite-runtime {tflite_runtime.__version__}; 1 thread; {a.rounds} rounds x {a.steps} steps"
    )
    tmp = Path(tempfile.mkdtemp(prefix="tflite-bench-"))
    rows, streams, acc = [], {}, {}
    models = [(c, h) for c in cells for h in hiddens] if a.run is None else [(None, None)]
    for cell, hidden in models:
        for v in variants:
            scheme, opts = VARIANTS[v]
            job = (
                make_job(cell, hidden, scheme, opts)
                if a.run is None
                else job_from_run(a.run, scheme, options=opts)
            )
            row = (job.cfg.cell, job.cfg.hidden_size, v)
            path = export(
                job, ["tflite"], tmp / "-".join(map(str, row)).replace("/", "-"), log=lambda *_: None
            )
            rows.append((row, (path / "model.tflite").stat().st_size))
            parity = json.loads((path / "manifest.json").read_text())["parity"]
            acc.update({row + (b,): r["accuracy"] for b, r in parity.items() if "accuracy" in r})
            xs = (
                np.concatenate(job.eval_seqs)
                if a.run
                else np.random.default_rng(1).standard_normal((1, INPUT))
            )
            xs = np.resize(xs.astype(np.float32), (a.steps, job.cfg.input_size))  # (steps, I), repeated
            for b in ["native", "litert"] + (
                [] if opts.get("tflite_target") == "litert" else ["tflite-runtime"]
            ):
                streams[row + (b,)] = (load(path, backend=b).stream(), xs)
    times = {k: [] for k in streams}
    keys = list(streams)
    for r in range(a.rounds):  # interleaved: every (bundle, backend) once per round, order shuffled
        for i in np.random.default_rng(r).permutation(len(keys)):
            times[keys[i]].append(time_steps(*streams[keys[i]]))

    head = "| cell | H | variant | file KB | " + " | ".join(f"{b} us" for b in BACKENDS) + " |"
    if acc:
        head += " " + " | ".join(f"{b} acc" for b in BACKENDS) + " |"
    print("\n" + head + "\n" + "|---" * head.count(" | ") + "|---|")
    for row, size in rows:
        cols = [f"{np.median(times[row + (b,)]):.1f}" if row + (b,) in times else "-" for b in BACKENDS]
        if acc:
            cols += [f"{acc[row + (b,)]:.1%}" if row + (b,) in acc else "-" for b in BACKENDS]
        print(f"| {row[0]} | {row[1]} | {row[2]} | {size / 1024:.0f} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
