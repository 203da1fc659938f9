"""Cold start and resident memory of the compiled native backend against `import numpy` alone (issue 8).

    python benchmarks/coldstart_rss.py                       # LSTM H=256 int8-dynamic, 10 runs of each
    python benchmarks/coldstart_rss.py --cell gru --hidden 128 --scheme int8 --runs 20

Fresh `python -c` processes, the two kinds interleaved: one stamps `import numpy`, the other `import
rnnedge.runtime` + load + the first step (each from the child's first line, so interpreter start-up is in
neither; bytecode caches in place, as after an install). Wall (CLOCK_MONOTONIC) and CPU time (process_time,
the robust one on a busy box), median of the runs.
Memory: the child's VmRSS after `import rnnedge.runtime` and numpy (the interpreter baseline), after
importing what load imports (the backend module, safetensors: code pages, not the model) and after load +
first step; the differences against the bundle's weight bytes (every tensor in weights.safetensors: int8
matrices, float32 row scales and biases).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_backends import make_bundle  # noqa: E402
from rnnedge.devices import sysinfo  # noqa: E402

STAMPS = r"""
import json, sys, time
w0, c0 = time.monotonic_ns(), time.process_time_ns()

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

out = {}
if sys.argv[1] == "numpy":
    import numpy
else:
    import rnnedge.runtime as rt
    import numpy as np  # (rnnedge.runtime imports lazily: numpy is part of the baseline either way)
    out["rss_import_kb"] = rss_kb()
    import rnnedge.runtime.backends.native, safetensors.numpy  # what load imports: code, not the model
    out["rss_code_kb"] = rss_kb()
    model = rt.load(sys.argv[2])
    model.stream().step(np.zeros(model.input_size, np.float32))
    out["rss_loaded_kb"] = rss_kb()
    out["backend"] = f"{model.backend.name}/{getattr(model.backend, 'isa', '-')}"
out["wall_ms"], out["cpu_ms"] = (time.monotonic_ns() - w0) / 1e6, (time.process_time_ns() - c0) / 1e6
print(json.dumps(out))
"""


def child(kind: str, bundle: Path) -> dict:
    # bytecode caches written and used, as after `pip install` (which compiles them): with
    # PYTHONDONTWRITEBYTECODE every child would recompile rnnedge's sources (numpy's came with its wheel)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    p = subprocess.run(
        [sys.executable, "-c", STAMPS, kind, str(bundle)], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(p.stdout.strip().splitlines()[-1])


def weight_bytes(bundle: Path) -> int:
    from safetensors.numpy import load_file

    return sum(t.nbytes for t in load_file(str(bundle / "weights.safetensors")).values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", default="lstm", help="lstm | gru | rnn_tanh (default lstm)")
    ap.add_argument("--hidden", type=int, default=256, help="hidden size (default 256)")
    ap.add_argument("--scheme", default="int8-dynamic", help="quantisation scheme (default int8-dynamic)")
    ap.add_argument("--runs", type=int, default=10, help="fresh processes of each kind (default 10)")
    ap.add_argument("--out", type=Path, default=None, help="bundle folder (default: a temporary one)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="rnnedge-coldstart-"))
    bundle, why = make_bundle(out, args.cell, args.hidden, args.scheme, "native", force=False)
    if bundle is None:
        print(f"cannot export the bundle: {why}", file=sys.stderr)
        return 1
    print(sysinfo.format_machine(sysinfo.describe()))
    runs = {"numpy": [], "rnnedge": []}
    child("rnnedge", bundle)  # warm-up: writes the bytecode caches, fills the page cache
    for _ in range(args.runs):  # interleaved, so load drifts hit both kinds alike
        for kind in runs:
            runs[kind].append(child(kind, bundle))
    med = {
        k: {m: float(np.median([r[m] for r in rs])) for m in ("wall_ms", "cpu_ms")} for k, rs in runs.items()
    }
    r = runs["rnnedge"]
    print(f"{args.cell} H={args.hidden} {args.scheme}, {args.runs} fresh processes of each, median")
    print(f"backend: {r[0]['backend']}")
    for m in ("wall_ms", "cpu_ms"):
        a, b = med["rnnedge"][m], med["numpy"][m]
        what = "import rnnedge.runtime + load + step"
        print(f"  {m[:-3]:4s}  import numpy {b:6.1f} ms   {what} {a:6.1f} ms   {a / b:.2f}x")
    w = weight_bytes(bundle)
    print(f"  weights {w / 1024:.0f} KiB (weights.safetensors tensors); resident above")
    for after, key in (
        ("import rnnedge.runtime, numpy", "rss_import_kb"),
        ("+ the modules load imports", "rss_code_kb"),
    ):
        delta = float(np.median([x["rss_loaded_kb"] - x[key] for x in r])) * 1024
        print(f"    {after:28s} {delta / 1024:6.0f} KiB = {delta / w:.2f}x the weight bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
