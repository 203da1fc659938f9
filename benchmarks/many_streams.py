"""N streams per tick (N sensors on one gateway): throughput of the compiled batch against N single streams
and against LiteRT running the same model resized to batch N, side by side in interleaved rounds, one thread.

    python benchmarks/many_streams.py                         # LSTM/GRU H=128/256, fp32 + int8-dynamic, N=16
    python benchmarks/many_streams.py --streams 16 --cells lstm --hidden 256 --schemes int8-dynamic

Prints us per stream-step (one tick of N streams / N) and the speed-up of each way over one stream alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_backends import make_bundle  # noqa: E402
from rnnedge.devices import report, sysinfo  # noqa: E402
from rnnedge.runtime import load  # noqa: E402


def litert_batch(path: Path, n: int):
    """The bundle's model.tflite with every input resized to (n, ...): one invoke steps n streams."""
    from ai_edge_litert.interpreter import Interpreter

    model = load(path, backend="litert")
    it = Interpreter(model_content=(path / "model.tflite").read_bytes(), num_threads=1)
    runner = it.get_signature_runner("serving_default")
    ins, outs = runner.get_input_details(), runner.get_output_details()
    del runner  # it holds views of the interpreter's tensors, which forbid resizing
    for d in ins.values():
        it.resize_tensor_input(d["index"], [n, int(d["shape"][1])])
    it.allocate_tensors()
    pairs = [(ins[s.input]["index"], outs[s.output]["index"]) for s in model.bundle.states]
    xi, yi = ins["x"]["index"], outs["y"]["index"]
    set_, get, invoke = it.set_tensor, it.get_tensor, it.invoke
    for h_in, _ in pairs:
        set_(h_in, np.zeros((n, model.bundle.hidden_size), np.float32))

    def tick(X):
        set_(xi, X)
        invoke()
        for h_in, h_out in pairs:
            set_(h_in, get(h_out))
        return get(yi)

    return tick


def ways(paths: dict, n: int) -> dict:
    native = load(paths["native"])
    single = native.stream()
    streams = [native.stream() for _ in range(n)]
    batch = native.streams(n)
    out = {
        "native 1 stream": (single.step, 1),
        f"native {n} streams, one by one": (lambda X: [s.step(x) for s, x in zip(streams, X)], n),
        f"native StreamBatch({n})": (batch.step, n),
    }
    if paths.get("tflite"):
        lite = load(paths["tflite"], backend="litert").stream()
        out["litert 1 stream"] = (lite.step, 1)
        out[f"litert batch-{n} model"] = (litert_batch(paths["tflite"], n), n)
    return out


def measure(fns: dict, xs: np.ndarray, ticks: int, rounds: int, clock=time.thread_time_ns) -> dict:
    """us per stream-step, median over interleaved rounds (rotated order). The default clock is this
    thread's CPU time (every way here runs on the calling thread): a busy box's preemption is not in it."""
    names = list(fns)
    per = {k: [] for k in names}
    for fn, n in fns.values():  # first touches: page faults, frequency ramp, lazy initialisation
        for t in range(ticks):
            fn(xs[t, 0] if n == 1 else xs[t])
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = fns[name]
            arg = (lambda t: xs[t, 0]) if n == 1 else (lambda t: xs[t])
            for t in range(50):  # re-warm
                fn(arg(t))
            t0 = clock()
            for t in range(ticks):
                fn(arg(t))
            per[name].append((clock() - t0) / ticks / n / 1e3)
    return {k: float(np.median(v)) for k, v in per.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--hidden", default="128,256")
    ap.add_argument("--schemes", default="fp32,int8-dynamic")
    ap.add_argument("--ticks", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default="/tmp/rnnedge-compare-bundles")
    ap.add_argument("--wall", action="store_true", help="wall clock instead of the thread's CPU time")
    args = ap.parse_args(argv)
    clock = time.perf_counter_ns if args.wall else time.thread_time_ns
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = args.streams
    rows = []
    for cell in args.cells.split(","):
        for hidden in map(int, args.hidden.split(",")):
            for scheme in args.schemes.split(","):
                paths = {
                    fmt: make_bundle(out, cell, hidden, scheme, fmt, False)[0] for fmt in ("native", "tflite")
                }
                xs = np.random.default_rng(0).standard_normal((args.ticks + 50, n, 40), dtype=np.float32)
                res = measure(ways(paths, n), xs, args.ticks, args.rounds, clock)
                base = res["native 1 stream"]
                lite = res.get("litert 1 stream")
                for name, us in res.items():
                    ref = lite if name.startswith("litert") and lite else base
                    rows.append([f"{cell} H={hidden}", scheme, name, f"{us:.2f}", f"{ref / us:.1f}x"])
    print(sysinfo.format_machine(sysinfo.describe()))
    print(f"{n} streams, {args.ticks} ticks x {args.rounds} interleaved rounds, 1 thread, input 40, head 12")
    print("clock: " + ("wall (perf_counter)" if args.wall else "the thread's CPU time (thread_time)"))
    print("us per stream-step; speed-up over one stream of the same backend\n")
    print(report.table(["model", "scheme", "way", "us/stream-step", "speed-up"], rows, left=3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
