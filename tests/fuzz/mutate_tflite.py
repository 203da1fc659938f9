"""Measure what byte-mutated model.tflite files (manifest checksum re-sealed) do to each line of defence.

    .venv/bin/python -m tests.fuzz.mutate_tflite BUNDLE [-n 200] [--seed 0] [--json out.json]

For each mutation: (1) the bare interpreter (tflite-runtime, no rnnedge checks) in a child process: did it
crash (signal), raise, or load; (2) rnnedge's structural check (check_tflite via rnnedge.runtime.load
semantics): rejected or accepted; (3) for accepted files, rnnedge.runtime.load_untrusted in this process:
every crash must end as a BundleError here. The parent process never loads an unchecked file itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BARE = r"""
import resource, sys, numpy as np
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from tflite_runtime.interpreter import Interpreter
it = Interpreter(model_content=open(sys.argv[1], 'rb').read(), num_threads=1)
it.allocate_tensors()
for d in it.get_input_details():
    it.set_tensor(d['index'], np.zeros(d['shape'], d['dtype']))
it.invoke()
"""


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:  # flip 1-8 bits
        for _ in range(rng.integers(1, 9)):
            i = rng.integers(len(b))
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # overwrite 1-4 bytes with random values
        for _ in range(rng.integers(1, 5)):
            b[rng.integers(len(b))] = int(rng.integers(256))
    elif kind == 2:  # an interesting 32-bit value at an aligned position (offsets, lengths, indices)
        i = int(rng.integers(len(b) // 4)) * 4
        v = int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, len(b), len(b) * 2, 0xFFFF, 4]))
        b[i : i + 4] = v.to_bytes(4, "little")
    elif kind == 3:  # truncate
        b = b[: int(rng.integers(8, len(b)))]
    elif kind == 4:  # zero a run (or insert zeros near the end)
        i = rng.integers(len(b))
        b[i : i + int(rng.integers(1, 64))] = bytes(min(len(b) - i, 64))[: len(b[i : i + 64])]
    else:  # copy a run elsewhere
        i, j, n = rng.integers(len(b)), rng.integers(len(b)), int(rng.integers(4, 64))
        chunk = b[i : i + n]
        b[j : j + len(chunk)] = chunk
    return bytes(b)


def reseal(folder: Path, name: str) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    data = (folder / name).read_bytes()
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(m))


def run(bundle: Path, n: int, seed: int, backend: str = "tflite-runtime") -> dict:
    import rnnedge.runtime as rt
    from rnnedge.runtime.errors import BundleError

    rng = np.random.default_rng(seed)
    orig = (bundle / "model.tflite").read_bytes()
    counts = {
        "mutations": 0,
        "identical_skipped": 0,
        "bare_crash": 0,
        "bare_hang": 0,
        "bare_error": 0,
        "bare_loaded": 0,
        "checker_rejected": 0,
        "checker_accepted": 0,
        "accepted_probe_crash_caught": 0,
        "accepted_probe_error_caught": 0,
        "accepted_loaded": 0,
        "parent_other_exception": 0,
        "bare_crash_but_checker_accepted": 0,
    }
    signals = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "b"
        shutil.copytree(bundle, work)
        while counts["mutations"] < n:
            data = mutate(orig, rng)
            if data == orig:
                counts["identical_skipped"] += 1
                continue
            counts["mutations"] += 1
            (work / "model.tflite").write_bytes(data)
            reseal(work, "model.tflite")
            try:
                r = subprocess.run(
                    [sys.executable, "-c", BARE, str(work / "model.tflite")], capture_output=True, timeout=20
                )
            except subprocess.TimeoutExpired:
                r = None
            bare_crash = r is None or r.returncode < 0
            if r is None:
                counts["bare_hang"] += 1
            elif bare_crash:
                counts["bare_crash"] += 1
                signals[-r.returncode] = signals.get(-r.returncode, 0) + 1
            else:
                counts["bare_error" if r.returncode else "bare_loaded"] += 1
            try:
                rt.load_bundle(work)  # the manifest is intact and re-sealed: this passes
                from rnnedge.runtime.backends.litert import expected_signature
                from rnnedge.runtime.tflite_check import check_tflite

                check_tflite(data, expected_signature(rt.load_bundle(work)))
            except BundleError:
                counts["checker_rejected"] += 1
                continue
            counts["checker_accepted"] += 1
            counts["bare_crash_but_checker_accepted"] += bare_crash
            try:
                rt.load_untrusted(work, backend, timeout=20).stream().step(
                    np.zeros(rt.load_bundle(work).input_size)
                )
                counts["accepted_loaded"] += 1
            except BundleError as e:
                key = "crash" if "crashed" in str(e) or "did not finish" in str(e) else "error"
                counts[f"accepted_probe_{key}_caught"] += 1
            except Exception:  # noqa: BLE001 - counted: must stay 0
                counts["parent_other_exception"] += 1
    counts["bare_signals"] = {str(k): v for k, v in signals.items()}
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="tflite-runtime")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    res = run(a.bundle, a.n, a.seed, a.backend)
    print(json.dumps(res, indent=2))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
