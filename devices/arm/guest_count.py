"""Runs INSIDE the emulated aarch64 Python (numpy + rnnedge.runtime only): streams bundles and marks the
counting windows that insn_count.c measures. Started by emulate.py, never imported on the host.

    python guest_count.py JOBS.json    JOBS = [{"bundle", "backend", "windows": [n, ...], "warmup", "seed"}]

A window is opened and closed with lseek(/dev/null, MARK_*) around `for t in range(n): step(xs[t])`. A job
named "loop" times the same loop without the step call, so the host can subtract the loop's own cost.
Prints one JSON line per job: {"index", "status": ok|unavailable|error, "windows_done", "error"?}.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

MARK_OPEN = 0x524E4E4500000001  # must match insn_count.c
MARK_CLOSE = 0x524E4E4500000002


class Marker:
    def __init__(self):
        self.fd = os.open("/dev/null", os.O_RDONLY)
        self.closed = 0  # windows completed by this job

    def window(self, step, xs, n: int):
        os.lseek(self.fd, MARK_OPEN, os.SEEK_SET)
        for t in range(n):
            step(xs[t])
        os.lseek(self.fd, MARK_CLOSE, os.SEEK_SET)
        self.closed += 1


def samples(bundle, n: int, seed: int) -> np.ndarray:
    """(n, I) raw samples with the training data's mean and std, so every gate sees realistic values."""
    norm = bundle.manifest.get("normalization", {})
    mean = np.asarray(norm.get("input_mean", 0.0), np.float32)
    std = np.asarray(norm.get("input_std", 1.0), np.float32)
    z = np.random.default_rng(seed).standard_normal((n, bundle.input_size)).astype(np.float32)
    return (mean + std * z).astype(np.float32)


def run_job(job: dict, mark: Marker) -> None:
    windows, warmup = job["windows"], job.get("warmup", 20)
    if job["backend"] == "loop":
        xs = np.zeros((max(windows), 1), np.float32)
        noop = _noop
        for _ in range(warmup):
            noop(xs[0])
        for n in windows:
            mark.window(noop, xs, n)
        return
    from rnnedge.runtime import load

    if job["backend"].endswith("+push"):  # an audio bundle: stream.push(10 ms of PCM) = front end + step
        return run_push_job(job, mark, load(job["bundle"], backend=job["backend"][:-5], threads=1))
    model = load(job["bundle"], backend=job["backend"], threads=1)
    stream = model.stream()
    xs = samples(model.bundle, max(max(windows), warmup), job.get("seed", 0))
    for t in range(warmup):  # first steps allocate, specialise bytecode and fill caches: not what we count
        stream.step(xs[t])
    for n in windows:
        mark.window(stream.step, xs, n)


def run_push_job(job: dict, mark: Marker, model) -> None:
    """Each counted step pushes one hop of int16 PCM, so it completes exactly one front-end frame."""
    windows, warmup, fe = job["windows"], job.get("warmup", 20), model.frontend
    rng = np.random.default_rng(job.get("seed", 0))
    n = max(max(windows), warmup)
    hops = (rng.standard_normal((n, fe.hop_length)) * 3000).astype(np.int16)
    stream = model.stream()
    stream.push((rng.standard_normal(fe.win_length - fe.hop_length) * 3000).astype(np.int16))
    for t in range(warmup):
        stream.push(hops[t])
    for n in windows:
        mark.window(stream.push, hops, n)


def _noop(x):
    return x


def main(path: str) -> int:
    from rnnedge.runtime.errors import MissingDependency

    jobs = json.loads(open(path).read())
    for i, job in enumerate(jobs):
        mark = Marker()
        res = {"index": i, "status": "ok"}
        try:
            run_job(job, mark)
        except MissingDependency as e:
            res.update(status="unavailable", error=str(e))
        except (
            Exception
        ) as e:  # report and go on with the next job: one broken backend must not hide the rest
            res.update(status="error", error=f"{type(e).__name__}: {e}")
        res["windows_done"] = mark.closed
        os.close(mark.fd)
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
