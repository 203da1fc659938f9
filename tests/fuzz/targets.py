"""Fuzz targets: one function per loader, bytes -> None. Each may raise only rnnedge's own errors
(BundleError / InputError / RnnEdgeError); anything else, a crash, a hang or an unbounded allocation is a
finding. Input = one selector byte (the template bundle in corpus/bundles) + the file's bytes. Selector bit 7
set: the file is NOT re-sealed (its checksum stays the original's), so it must be rejected unless its bytes
are the original's; loading it anyway is a "silently different model" finding.

Used by the hypothesis properties (test_fuzz.py) and the atheris fuzzers (run_atheris.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
TEMPLATES = HERE / "corpus" / "bundles"
RUNS = HERE / "corpus" / "runs"  # a template training run folder (checkpoint target)
NAMES = ("t0", "t1", "t2")


class Workspace:
    """Copies of the template bundles in a private temp folder (tmpfs when available), reused per input."""

    def __init__(self):
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.root = Path(tempfile.mkdtemp(prefix="rnnedge-fuzz-", dir=base))
        self.manifests = {}
        self.dirty: set[Path] = set()  # files an earlier input replaced (restored before the next one)
        for name in NAMES:
            shutil.copytree(TEMPLATES / name, self.root / name)
            self.manifests[name] = json.loads((TEMPLATES / name / "manifest.json").read_text())
        shutil.copytree(RUNS, self.root / "runs")

    def restore(self) -> None:
        for p in self.dirty:
            rel = p.relative_to(self.root)
            shutil.copyfile((RUNS.parent if rel.parts[0] == "runs" else TEMPLATES) / rel, p)
        self.dirty.clear()

    def put(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        self.dirty.add(path)

    def bundle(self, data: bytes, file: str | None) -> tuple[Path, bytes] | None:
        """Reset template data[0] and put data[1:] in `file` (re-sealing its checksum unless bit 7 of
        data[0] is set), or return None if that template has no such file. file=None: data[1:] is the
        manifest itself."""
        if not data:
            return None
        name = NAMES[(data[0] & 0x7F) % len(NAMES)]
        path, payload = self.root / name, data[1:]
        m = self.manifests[name]
        self.restore()
        if file is None:
            self.put(path / "manifest.json", payload)
            return path, payload
        if file not in m["files"]:
            return None
        self.put(path / file, payload)
        if data[0] & 0x80:
            return path, payload
        sealed = {
            **m,
            "files": {
                **m["files"],
                file: {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)},
            },
        }
        self.put(path / "manifest.json", json.dumps(sealed).encode())
        return path, payload

    def changed(self, data: bytes, file: str) -> bool:
        """Whether an unsealed input (bit 7) differs from the template's file: then it must not load."""
        name = NAMES[(data[0] & 0x7F) % len(NAMES)]
        return bool(data[0] & 0x80) and data[1:] != (TEMPLATES / name / file).read_bytes()

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


_ws: Workspace | None = None


def workspace() -> Workspace:
    global _ws
    if _ws is None:
        _ws = Workspace()
    return _ws


def _errors():
    from rnnedge.runtime.errors import RnnEdgeError

    return (RnnEdgeError,)


class SilentlyDifferent(AssertionError):
    """A changed file whose checksum was not re-sealed loaded anyway."""


def _must_reject(ws: Workspace, data: bytes, file: str) -> None:
    if ws.changed(data, file):
        raise SilentlyDifferent(f"a changed {file} loaded although its checksum was not updated")


def _step(model) -> None:
    s = model.stream()
    y = s.step(np.zeros(model.input_size, np.float32))
    assert y.shape == (model.output_size,)
    model.decide(y)
    s.run(np.ones((3, model.input_size), np.float32))


def manifest(data: bytes) -> None:
    import rnnedge.runtime as rt

    got = workspace().bundle(data, None)
    if got is None:
        return
    try:
        _step(rt.load(got[0]))
    except _errors():
        pass


def safetensors(data: bytes) -> None:
    import rnnedge.runtime as rt
    from rnnedge.runtime.backends import open_backend

    ws = workspace()
    got = ws.bundle(data, "weights.safetensors")
    if got is None:
        return
    try:
        b = rt.load_bundle(got[0])
        w = b.weights()
        assert all(np.isfinite(v).all() for v in w.values())
        _step(rt.Model(b, open_backend("native", b, 1), "native"))  # the bundle read once
        _must_reject(ws, data, "weights.safetensors")
    except _errors():
        pass


def tflite(data: bytes) -> None:
    """The structural checker; what it accepts, the official schema bindings (if installed) must parse
    without an error, i.e. every offset the checker let through is inside the file."""
    from rnnedge.runtime.tflite_check import TfliteError, check_tflite

    payload = data[1:]
    expect = None
    if data[:1] == b"\x00":  # t0's signature: x(3), h_in_0, c_in_0 (4) -> y(3), h_out_0, c_out_0
        expect = {
            "inputs": {"x": 3, "h_in_0": 4, "c_in_0": 4},
            "outputs": {"y": 3, "h_out_0": 4, "c_out_0": 4},
        }
    try:
        check_tflite(payload, expect)
    except TfliteError:
        return
    if ORACLE is not None:
        ORACLE.ModelT.InitFromPackedBuf(bytearray(payload), 0)


def onnx(data: bytes) -> None:
    import rnnedge.runtime as rt

    ws = workspace()
    got = ws.bundle(data, "model.onnx")
    if got is None:
        return
    try:
        _step(rt.load(got[0], backend="onnxruntime"))
        _must_reject(ws, data, "model.onnx")
    except _errors():
        pass


_model = None


def _input_model():
    """The input readers' model (template t0, loaded once: the reader is under test, not the bundle)."""
    global _model
    if _model is None:
        import rnnedge.runtime as rt

        _model = rt.load(TEMPLATES / "t0")
    return _model


def csv(data: bytes) -> None:
    """The CLI's text input path (rnnedge run BUNDLE file.csv): rows -> stream.step."""
    from rnnedge import cli

    path = workspace().root / "input.csv"
    path.write_bytes(data[1:])
    s = _input_model().stream()
    try:
        skip = bool(data[:1] and data[0] & 1)
        for _, x in cli.text_rows(str(path), s.model.input_size, skip, warn=lambda msg: None):
            if x is None:
                s.reset()
            else:
                s.step(x)
    except _errors():
        pass


def npy(data: bytes) -> None:
    """The CLI's .npy input path: load_npy -> stream.run."""
    from rnnedge import cli

    path = workspace().root / "input.npy"
    path.write_bytes(data[1:])
    model = _input_model()
    try:
        arr = cli.load_npy(str(path))
        for seq in arr if arr.ndim == 3 else [arr]:
            model.stream().run(seq)
    except _errors():
        pass


def checkpoint(data: bytes) -> None:
    """A training run folder: data[0] % 3 picks the file (checkpoint.json, the best weights, the resume
    state), bit 7 leaves the record's checksum as it was. Loads the best model and restores the resume
    state into a fresh optimizer/schedule, as `rnnedge export` and `train --resume` do."""
    import torch
    from rnnedge.train import checkpoint as ck

    if not data:
        return
    ws = workspace()
    ws.restore()
    run = ws.root / "runs" / "c0"
    record = json.loads((RUNS / "c0" / ck.RECORD).read_text())
    which, payload = ("record", "best", "resume")[(data[0] & 0x7F) % 3], data[1:]
    if which == "record":
        ws.put(run / ck.RECORD, payload)
        original = (RUNS / "c0" / ck.RECORD).read_bytes()
    else:
        entry = record[which]
        ws.put(run / entry["file"], payload)
        original = (RUNS / "c0" / entry["file"]).read_bytes()
        if not data[0] & 0x80:
            entry |= {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
            ws.put(run / ck.RECORD, json.dumps(record).encode())
    try:
        model, _ = ck.load_checkpoint(run)
        with torch.no_grad():
            y, _ = model(torch.zeros(1, 2, model.cfg.input_size))
        assert torch.isfinite(y).all()
        rec = ck.read_record(run)
        if rec.get("resume") is not None:
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
            ck.restore_training_state(run, rec, model, opt, sched, torch.Generator())
        if data[0] & 0x80 and which != "record" and payload != original:
            raise SilentlyDifferent(f"a changed {which} file loaded although its checksum was not updated")
    except _errors():
        pass


try:  # test-only oracle: the official TFLite schema bindings (ai-edge-litert)
    from ai_edge_litert import schema_py_generated as ORACLE
except ImportError:  # pragma: no cover
    ORACLE = None

TARGETS = {
    "manifest": manifest,
    "safetensors": safetensors,
    "tflite": tflite,
    "onnx": onnx,
    "csv": csv,
    "npy": npy,
    "checkpoint": checkpoint,
}
# the runtime's loaders; csv/npy fuzz the CLI's input readers, checkpoint the training run folder
RUNTIME_TARGETS = ("manifest", "safetensors", "tflite", "onnx")
