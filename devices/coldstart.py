"""Cold start and memory of each backend, measured in a fresh `python -c` subprocess per backend and run.

A fresh interpreter per measurement, so one backend's imports never make another look cheap: the child stamps
CLOCK_MONOTONIC after interpreter start-up, after importing numpy + the backend's library + rnnedge, after
loading the bundle and after the first step, and reads its RSS from /proc.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

# what each backend imports: backends import it lazily on load, the child imports it first so that its cost
# shows in import_ms, not load_ms
LIBRARY = {
    "onnxruntime": "onnxruntime",
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
    "torch": "torch",
}

COLD_CHILD = r"""
import json, sys, time
t_code = time.monotonic_ns()

def status_mb(key):  # VmRSS / VmHWM from /proc (Linux); None elsewhere
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None

bundle, backend, threads, lib = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
out = {"t_code": t_code}
try:
    import numpy as np
    out["t_numpy"], out["rss_numpy_mb"] = time.monotonic_ns(), status_mb("VmRSS")
    if lib:
        __import__(lib)
    if backend == "torch":
        from rnnedge.devices.torch_baseline import open_model as load
    else:
        from rnnedge.runtime import load
    from rnnedge.runtime.backends.native import limit_blas_threads

    limit_blas_threads(threads)  # as `rnnedge run` does: the numpy path's BLAS pool on `threads` cores
    out["t_import"] = time.monotonic_ns()
    model = load(bundle, backend=backend, threads=threads)
    out["t_load"] = time.monotonic_ns()
    y = model.stream().step(np.zeros(model.input_size, np.float32))
    out["t_first"], out["rss_first_mb"] = time.monotonic_ns(), status_mb("VmRSS")
    peak = status_mb("VmHWM")
    if peak is None:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
        peak = kb / 1024
    out["peak_rss_mb"] = peak
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def cold_start(bundle_path, backend: str, threads: int = 1, timeout: float = 600) -> dict:
    """Spawn `python -c` and time process start -> import -> load -> first output; read its RSS.

    resident_mb = RSS after load + first step minus RSS after importing numpy: the backend library's and
    the model's own cost on top of the minimum any Python + numpy application already pays.
    """
    cmd = [
        sys.executable,
        "-c",
        COLD_CHILD,
        str(bundle_path),
        backend,
        str(threads or 1),
        LIBRARY.get(backend, ""),
    ]
    t0 = time.monotonic_ns()  # CLOCK_MONOTONIC is system-wide, so the child's stamps are comparable
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    try:
        c = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": f"child exited with {p.returncode}: " + " | ".join(tail)}
    if "error" in c:
        return {"error": c["error"]}
    ms = lambda a, b: (c[b] - a) / 1e6  # noqa: E731
    rss = c.get("rss_first_mb"), c.get("rss_numpy_mb")
    return {
        "total_ms": ms(t0, "t_first"),
        "python_ms": ms(t0, "t_code"),  # interpreter start-up (site, .pth files)
        "import_ms": ms(c["t_code"], "t_import"),  # numpy + the backend's library + rnnedge
        "load_ms": ms(c["t_import"], "t_load"),  # read + verify the bundle, build the session/interpreter
        "first_step_ms": ms(c["t_load"], "t_first"),
        "rss_after_numpy_mb": rss[1],
        "rss_after_first_step_mb": rss[0],
        "resident_mb": rss[0] - rss[1] if None not in rss else None,
        "peak_rss_mb": c.get("peak_rss_mb"),
    }


def cold_starts(bundle_path, backends: list[str], threads: int, runs: int, progress=None) -> dict:
    """`runs` cold starts per backend, interleaved; the median run (by total time) is reported."""
    got: dict[str, list] = {b: [] for b in backends}
    for _ in range(runs):
        for b in backends:
            got[b].append(cold_start(bundle_path, b, threads))
            if progress:
                progress(1, f"cold start: {b}")
    out = {}
    for b, rs in got.items():
        ok = sorted((r for r in rs if "error" not in r), key=lambda r: r["total_ms"])
        out[b] = (
            {**ok[len(ok) // 2], "runs": len(ok), "all_total_ms": [r["total_ms"] for r in ok]}
            if ok
            else rs[0]
        )
    return out
