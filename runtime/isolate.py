"""Open an untrusted bundle on a crash-prone interpreter without risking the application.

tflite-runtime 2.14 segfaults on some malformed files (ARCHITECTURE.md, "Known traps"); a segfault cannot be
caught in-process.
`check_tflite` rejects what a flatbuffer verifier can see; for the rest, open the bundle first in a child
process:

    import rnnedge.runtime as rt
    info = rt.probe_bundle("incoming/bundle", backend="tflite-runtime")   # BundleError if the child dies
    model = rt.load_untrusted("incoming/bundle", backend="tflite-runtime")  # probe, then load here

The child loads the bundle (every check of `load`), steps it a few times from zeros and from random
samples, and reports. A crash (signal), a hang (timeout), running out of its memory cap or any exception
there becomes a BundleError here. `load_untrusted` then loads the same bundle in this process and checks that
the manifest it read is the one the child opened (its sha256), so a bundle swapped between the two is
caught: every payload's sha256 is pinned by that manifest and checked again as it is read.

Cost: one Python start + load, about 0.3-1 s. Do it when a bundle arrives, not on every start.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from .errors import BundleError

DEFAULT_TIMEOUT = 120.0
DEFAULT_MEMORY = 4 << 30  # address-space cap of the child (bytes); None = no cap


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def probe_bundle(
    path: str | os.PathLike,
    backend: str = "tflite-runtime",
    threads: int | None = 1,
    steps: int = 3,
    timeout: float = DEFAULT_TIMEOUT,
    memory: int | None = DEFAULT_MEMORY,
) -> dict:
    """Load `path` on `backend` and run `steps` steps in a child process. Returns {"ok": True, "backend",
    "manifest_sha256", "output_size"}; raises BundleError if the child fails, crashes or hangs."""
    path = Path(path)
    spec = json.dumps(
        {"path": str(path), "backend": backend, "threads": threads, "steps": steps, "memory": memory}
    )
    cmd = [sys.executable, "-m", "rnnedge.runtime.isolate", spec]
    import signal  # here, not at the top: `import rnnedge.runtime` stays cheap (benchmarks/coldstart_rss.py)
    import subprocess

    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BundleError(
            f"{path}: {backend} did not finish loading it within {timeout:.0f} s (probe killed)"
        ) from None
    report = _last_json(r.stdout)
    if r.returncode < 0:
        try:
            name = signal.Signals(-r.returncode).name
        except ValueError:
            name = f"signal {-r.returncode}"
        raise BundleError(
            f"{path}: {backend} crashed ({name}) opening this bundle in a probe process; the file is "
            "malformed or hostile, do not load it in-process"
        )
    if report is None or r.returncode != 0 or not report.get("ok"):
        why = (report or {}).get("error") or (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise BundleError(f"{path}: {backend} failed in a probe process: {why}")
    return report


def load_untrusted(
    path: str | os.PathLike,
    backend: str = "tflite-runtime",
    threads: int | None = 1,
    timeout: float = DEFAULT_TIMEOUT,
    memory: int | None = DEFAULT_MEMORY,
):
    """probe_bundle, then load the same bundle in this process (a Model, like `load`)."""
    from .backends import open_backend
    from .bundle import load_bundle
    from .stream import Model

    report = probe_bundle(path, backend, threads, timeout=timeout, memory=memory)
    bundle = load_bundle(path, verify=True)
    if manifest_digest(bundle.manifest) != report["manifest_sha256"]:
        raise BundleError(f"{path} changed between the probe and the load: load it again")
    return Model(bundle, open_backend(backend, bundle, threads), backend)


def _last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            return v
    return None


def _child(spec: dict) -> dict:
    import numpy as np

    from .errors import RnnEdgeError
    from .stream import load

    if spec.get("memory"):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (spec["memory"], spec["memory"]))
    try:
        model = load(spec["path"], backend=spec["backend"], threads=spec["threads"])
        s = model.stream()
        rng = np.random.default_rng(0)
        for k in range(spec["steps"]):
            x = np.zeros(model.input_size, np.float32) if k == 0 else rng.normal(0, 1, model.input_size)
            y = s.step(x.astype(np.float32))
        if spec["steps"] and y.shape != (model.output_size,):
            return {"ok": False, "error": f"output shape {y.shape}, want ({model.output_size},)"}
    except (RnnEdgeError, MemoryError, ValueError, RuntimeError, OSError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {
        "ok": True,
        "backend": spec["backend"],
        "manifest_sha256": manifest_digest(model.bundle.manifest),
        "output_size": model.output_size,
    }


def main(argv=None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    try:
        report = _child(spec)
    except Exception as e:  # anything else is still a report, not a traceback
        report = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write("\n" + json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
