"""Front end + model step per 10 ms frame, next to the model step alone, interleaved in one run.

    .venv/bin/python benchmarks/frontend_step.py [BUNDLE ...]      (default: random GRU/LSTM bundles, 32 mels)

Rows (thread CPU time per 10 ms frame, median of rounds; every round runs every row once):
    model step, native            stream.step(x): one C call per step (the fastest path a Python app has)
    model step, native C loop     the same step in a pure C loop (no Python): the kernel's own cost
    model step, litert            LiteRT's stream.step(x) on the same bundle's .tflite
    push_step, 1 s per call       stream.push(pcm): C front end + model step for each of 100 hops, one call
    push_step, 10 ms per call     stream.push(pcm) once per hop (a microphone read every 10 ms)
    front end alone (C)           the compiled front end, 1 s per call
    front end alone (numpy)       the numpy reference, 10 ms per call
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_bundles(tmp: Path) -> list[Path]:
    from rnnedge.export.exporter import ExportJob, export
    from rnnedge.runtime.frontend import Frontend, FrontendConfig

    from tests.conftest import random_model

    cfg = FrontendConfig()
    rng = np.random.default_rng(0)
    feats = [Frontend(cfg).push(rng.standard_normal(16000).astype(np.float32) * 0.1) for _ in range(2)]
    out = []
    for cell, H in (("gru", 64), ("lstm", 128)):
        m = random_model(cell, 1, H, 32, 5)
        task = {"kind": "classify", "labels": [f"k{i}" for i in range(5)], "readout": "last"}
        for scheme in ("fp32", "int8-dynamic"):
            job = ExportJob(
                m.cfg, m, scheme, task, feats, [0, 1], feats, signal={"frontend": cfg.to_manifest()}
            )
            out.append(export(job, ["native", "tflite"], tmp / f"{cell}{H}-{scheme}", log=lambda *a: None))
    return out


def per_frame(fn, frames: int) -> float:
    t = time.thread_time()
    fn()
    return (time.thread_time() - t) / frames * 1e6


def bench(bundle: Path, rounds: int = 15) -> dict:
    import rnnedge.runtime as rt
    from rnnedge.runtime.frontend import CompiledFrontend, Frontend

    native = rt.load(bundle)
    fe = native.frontend
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(16000) * 3000).astype(np.int16)  # 1 s: 98 frames
    hops = [pcm[i : i + fe.hop_length] for i in range(0, len(pcm), fe.hop_length)]
    x = rng.standard_normal(native.input_size).astype(np.float32)
    s_step, s_push, s_hop = native.stream(), native.stream(), native.stream()
    try:
        lite = rt.load(bundle, backend="litert").stream()
    except rt.RnnEdgeError:
        lite = None
    cfe, nfe = CompiledFrontend(fe), Frontend(fe)
    n = 98

    def steps(s):
        return lambda: [s.step(x) for _ in range(n)]

    rows = {
        "model step, native": steps(s_step),
        "model step, native C loop": lambda: s_step._runner.c.time_steps(x, n),
        "push_step, 1 s per call": lambda: s_push.push(pcm),
        "push_step, 10 ms per call": lambda: [s_hop.push(h) for h in hops],
        "front end alone (C)": lambda: cfe.push(pcm),
        "front end alone (numpy)": lambda: [nfe.push(h) for h in hops],
    }
    if lite is not None:
        rows["model step, litert"] = steps(lite)
    res = {k: [] for k in rows}
    for _ in range(rounds):
        for k, fn in rows.items():
            if k == "model step, native C loop":
                res[k].append(fn() / n * 1e6)  # the kernel times its own loop (wall clock, C)
            else:
                res[k].append(per_frame(fn, n))
    return {k: float(np.median(v)) for k, v in res.items()}


def main(argv) -> int:
    import os
    import platform

    with tempfile.TemporaryDirectory() as tmp:
        bundles = [Path(p) for p in argv] or make_bundles(Path(tmp))
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln), "?")
        print(f"# {platform.machine()} {cpu}, load {os.getloadavg()[0]:.1f}, µs per 10 ms frame (median)")
        for b in bundles:
            import rnnedge.runtime as rt

            m = rt.load(b)
            r = bench(b)
            base = r["model step, native"]
            print(f"\n{b.name}: {m!r}  isa={m.backend.isa}")
            for k, v in r.items():
                print(f"  {k:28s} {v:8.2f}   {v / base:5.2f}x model step")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
