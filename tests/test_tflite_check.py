"""The structural TFLite check (pure Python) against the official schema bindings, and isolated loading."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys

import numpy as np
import pytest
import rnnedge.runtime as rt
from rnnedge.runtime import isolate
from rnnedge.runtime.tflite_check import OPS, TYPES, UNIONS, TfliteError, check_tflite

from .conftest import make_bundle

S = pytest.importorskip("ai_edge_litert.schema_py_generated")
flatbuffers = pytest.importorskip("flatbuffers")


@pytest.fixture(scope="module")
def tfl(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfl")
    out = {}
    for cell, scheme in [
        ("lstm", "fp32"),
        ("gru", "int8-dynamic"),
        ("lstm", "int8-static"),
        ("rnn_relu", "fp16"),
    ]:
        out[cell, scheme] = make_bundle(
            root, cell=cell, layers=2, scheme=scheme, hidden=8, formats=("tflite",)
        )[0]
    return out


def pack(model) -> bytes:
    b = flatbuffers.Builder(1 << 12)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def unpack(data: bytes):
    return S.ModelT.InitFromPackedBuf(bytearray(data), 0)


def test_enums_match_the_official_schema():
    ops = {getattr(S.BuiltinOperator, v[0]): k for k, v in OPS.items()}
    assert all(k == v for k, v in ops.items())
    for name, opt, _, _ in OPS.values():
        want = {"FULLY_CONNECTED": "FullyConnectedOptions", "ADD": "AddOptions", "SUB": "SubOptions"}
        want |= {"MUL": "MulOptions", "SPLIT": "SplitOptions"}
        assert opt == (getattr(S.BuiltinOptions, want[name]) if name in want else 0), name
    assert {k: v for k, v in UNIONS.items()} == {getattr(S.BuiltinOptions, v): v for v in UNIONS.values()}
    for code, (name, _) in TYPES.items():
        assert getattr(S.TensorType, name) == code


def test_every_export_passes_and_parses_like_the_official_bindings(tfl):
    for path in tfl.values():
        data = (path / "model.tflite").read_bytes()
        ours = check_tflite(data)
        ref = unpack(data)
        assert len(ours["buffers"]) == len(ref.buffers)
        assert len(ours["operator_codes"]) == len(ref.operatorCodes)
        (sg,) = ours["subgraphs"]
        (rsg,) = ref.subgraphs
        assert len(sg["tensors"]) == len(rsg.tensors)
        for t, rt_ in zip(sg["tensors"], rsg.tensors):
            assert t.get("shape", []) == list(rt_.shape) and t.get("buffer", 0) == rt_.buffer
            assert t.get("type", 0) == rt_.type and t["name"] == rt_.name.decode()
        for o, ro in zip(sg["operators"], rsg.operators):
            assert o.get("inputs", []) == list(ro.inputs) and o.get("outputs", []) == list(ro.outputs)
            assert o.get("opcode_index", 0) == ro.opcodeIndex
        for b, rb in zip(ours["buffers"], ref.buffers):
            n = 0 if rb.data is None else len(rb.data)
            assert b.get("data", (0, 0))[1] == n


def _edit(data: bytes, fn) -> bytes:
    m = unpack(data)
    fn(m)
    return pack(m)


EDITS = {
    "tensor buffer index": (lambda m: setattr(m.subgraphs[0].tensors[3], "buffer", 10**6), "buffers"),
    "operator input index": (lambda m: m.subgraphs[0].operators[0].inputs.__setitem__(0, 10**6), "inputs"),
    "operator output index": (lambda m: m.subgraphs[0].operators[0].outputs.__setitem__(0, -1), "outputs"),
    "opcode index": (lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 99), "opcode_index"),
    "subgraph input": (lambda m: m.subgraphs[0].inputs.__setitem__(0, 9999), "inputs"),
    "no subgraph": (lambda m: setattr(m, "subgraphs", []), "subgraphs"),
    "signature tensor": (lambda m: setattr(m.signatureDefs[0].inputs[0], "tensorIndex", 9999), "signature"),
    "signature subgraph": (lambda m: setattr(m.signatureDefs[0], "subgraphIndex", 3), "subgraph_index"),
    "metadata buffer": (lambda m: setattr(m.metadata[0], "buffer", 9999), "metadata"),
    "buffer offset outside": (lambda m: _external(m, 1 << 40, 16), "outside the file"),
    "constant data size": (lambda m: _grow_shape(m), "constant data"),
    "negative shape": (lambda m: m.subgraphs[0].tensors[0].shape.__setitem__(1, -5), "shape"),
    "huge shape": (
        lambda m: setattr(m.subgraphs[0].tensors[0], "shape", np.array([1 << 20] * 4, np.int32)),
        "elements",
    ),
    "tensor type": (lambda m: setattr(m.subgraphs[0].tensors[0], "type", 13), "tensor type"),
    "custom op": (lambda m: setattr(m.operatorCodes[0], "customCode", "EVIL"), "custom"),
    "unknown builtin": (lambda m: _builtin(m, 97), "not one of"),
    "version": (lambda m: setattr(m, "version", 2), "version"),
    "options type": (lambda m: _options_type(m), "union type"),
}


def _external(m, offset, size):
    b = m.buffers[1]
    b.data, b.offset, b.size = None, offset, size


def _grow_shape(m):
    t = next(t for t in m.subgraphs[0].tensors if m.buffers[t.buffer].data is not None)
    t.shape = np.array(list(t.shape[:-1]) + [t.shape[-1] + 1], np.int32)


def _builtin(m, code):
    m.operatorCodes[0].builtinCode = code
    m.operatorCodes[0].deprecatedBuiltinCode = code


def _options_type(m):
    op = next(
        o for o in m.subgraphs[0].operators if o.builtinOptionsType == S.BuiltinOptions.FullyConnectedOptions
    )
    op.builtinOptionsType = S.BuiltinOptions.AddOptions
    op.builtinOptions = S.AddOptionsT()


@pytest.mark.parametrize("edit", EDITS)
def test_each_bad_reference_is_rejected(tfl, edit):
    fn, match = EDITS[edit]
    data = _edit((tfl["lstm", "fp32"] / "model.tflite").read_bytes(), fn)
    with pytest.raises(TfliteError, match=match):
        check_tflite(data, rt.backends.litert.expected_signature(rt.load_bundle(tfl["lstm", "fp32"])))


def test_signature_must_match_the_manifest(tfl):
    b = rt.load_bundle(tfl["lstm", "fp32"])
    want = rt.backends.litert.expected_signature(b)
    data = (b.path / "model.tflite").read_bytes()
    check_tflite(data, want)
    with pytest.raises(TfliteError, match="manifest says"):
        check_tflite(data, {**want, "inputs": {**want["inputs"], "x": 6}})
    with pytest.raises(TfliteError, match="inputs are"):
        check_tflite(data, {**want, "inputs": {"x": 5}})


def test_every_truncation_is_rejected(tfl):
    data = (tfl["gru", "int8-dynamic"] / "model.tflite").read_bytes()
    for n in list(range(0, 64)) + list(range(64, len(data), 7)):
        with pytest.raises(TfliteError):
            check_tflite(data[:n])


def test_structural_corruptions_are_rejected(tfl):
    data = bytearray((tfl["lstm", "fp32"] / "model.tflite").read_bytes())
    root = int.from_bytes(data[:4], "little")
    for pos, value in [(0, 0xFFFFFFF0), (0, 3), (root, 0x7FFFFFFF), (root, 0x80000000), (4, 0)]:
        d = bytearray(data)
        d[pos : pos + 4] = value.to_bytes(4, "little")
        with pytest.raises(TfliteError):
            check_tflite(bytes(d))


def reseal(path, name="model.tflite"):
    m = json.loads((path / "manifest.json").read_text())
    data = (path / name).read_bytes()
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (path / "manifest.json").write_text(json.dumps(m))


def test_mutations_never_escape_as_anything_but_bundle_error(tfl, tmp_path):
    """Seeded byte mutations: the checker raises TfliteError or accepts; what it accepts, load_untrusted
    opens on tflite-runtime in a child first, so even a crash there is a BundleError here."""
    pytest.importorskip("tflite_runtime.interpreter")
    from tests.fuzz.mutate_tflite import mutate

    src = tfl["gru", "int8-dynamic"]
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    orig = (src / "model.tflite").read_bytes()
    want = rt.backends.litert.expected_signature(rt.load_bundle(src))
    rng = np.random.default_rng(1234)
    rejected = accepted = 0
    for _ in range(300):
        data = mutate(orig, rng)
        try:
            check_tflite(data, want)
        except TfliteError:
            rejected += 1
            continue
        accepted += 1
        if accepted > 8:  # a child process each: keep the suite fast
            continue
        (dst / "model.tflite").write_bytes(data)
        reseal(dst)
        try:
            rt.load_untrusted(dst, "tflite-runtime", timeout=60).stream().step(np.zeros(5, np.float32))
        except rt.BundleError:
            pass
    assert rejected > 150, (rejected, accepted)


def test_probe_turns_a_crash_into_a_bundle_error(tfl, tmp_path, monkeypatch):
    """A child that dies by SIGSEGV (a stand-in interpreter that crashes for real) is a BundleError."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nkill -SEGV $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(rt.BundleError, match="crashed \\(SIGSEGV\\)"):
        rt.probe_bundle(tfl["lstm", "fp32"], "tflite-runtime")
    fake.write_text("#!/bin/sh\nsleep 30\n")
    with pytest.raises(rt.BundleError, match="did not finish"):
        rt.probe_bundle(tfl["lstm", "fp32"], "tflite-runtime", timeout=1)


@pytest.mark.parametrize("backend", ["tflite-runtime", "litert", "native"])
def test_load_untrusted_matches_load(tfl, backend):
    pytest.importorskip("tflite_runtime.interpreter")
    path = tfl["lstm", "int8-static"]
    x = np.random.default_rng(0).normal(0, 1, (20, 5)).astype(np.float32)
    a = rt.load_untrusted(path, backend).stream().run(x)
    b = rt.load(path, backend=backend).stream().run(x)
    assert np.array_equal(a, b)


def test_load_untrusted_reports_a_bad_bundle_from_the_child(tfl, tmp_path):
    dst = tmp_path / "bad"
    shutil.copytree(tfl["lstm", "fp32"], dst)
    (dst / "model.tflite").write_bytes(b"\0" * 64)
    reseal(dst)
    with pytest.raises(rt.BundleError, match="probe process.*TFL3"):
        rt.load_untrusted(dst, "tflite-runtime")


def test_a_swap_between_probe_and_load_is_caught(tfl, tmp_path, monkeypatch):
    dst = tmp_path / "s"
    shutil.copytree(tfl["lstm", "fp32"], dst)
    real = isolate.probe_bundle

    def probe_then_swap(*a, **k):
        r = real(*a, **k)
        m = json.loads((dst / "manifest.json").read_text())
        m["task"]["readout"] = "last"
        (dst / "manifest.json").write_text(json.dumps(m))
        return r

    monkeypatch.setattr(isolate, "probe_bundle", probe_then_swap)
    with pytest.raises(rt.BundleError, match="changed between"):
        rt.load_untrusted(dst, "native")
    assert os.path.exists(dst)
