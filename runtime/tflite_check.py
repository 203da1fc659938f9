"""A structural check of .tflite files before any interpreter sees them (pure Python, no flatbuffers package).

tflite-runtime 2.14 trusts the flatbuffer it is given: a mutated file makes it read out of bounds and die
with SIGSEGV (88 of 150 mutations: ARCHITECTURE.md, "Known traps"). `check_tflite(data)` does what the
flatbuffers verifier does for the TFLite schema, over the bytes:

- the root table, every table's vtable, every vector, string and union table lie inside the file, aligned,
  with bounded depth and a bounded number of tables;
- every field is one this schema knows (a field rnnedge never writes must be absent: an interpreter would
  follow an offset nobody checked);
- then the model's own references: operator codes and builtin operators (rnnedge's own op set), buffers
  (inline data or offset/size inside the file), each tensor's type, shape, buffer index and constant data
  size, quantisation arrays, each operator's opcode, input/output tensor indices and arity, subgraph
  inputs/outputs, signatures and metadata.

It raises TfliteError (a BundleError) naming what is wrong. A file that passes can still crash an interpreter
through a bug of its own; `rnnedge.runtime.isolate` opens untrusted bundles in a child process for that.
"""

from __future__ import annotations

import math
import struct

from .errors import BundleError


class TfliteError(BundleError):
    """A .tflite file that is not a well-formed TFLite model of the kind rnnedge writes."""


MAX_DEPTH = 16
MAX_TABLES = 1_000_000
MAX_SUBGRAPHS = 16
MAX_TENSORS = 100_000
MAX_ELEMENTS = 1 << 28

# builtin operators rnnedge's exporter emits (export/tflite_graph.py), with their options union type, and
# their arity (inputs min..max, outputs min..max; None = any)
OPS = {
    0: ("ADD", 11, (2, 2), (1, 1)),
    41: ("SUB", 28, (2, 2), (1, 1)),
    18: ("MUL", 21, (2, 2), (1, 1)),
    9: ("FULLY_CONNECTED", 8, (2, 3), (1, 1)),
    14: ("LOGISTIC", 0, (1, 1), (1, 1)),
    28: ("TANH", 0, (1, 1), (1, 1)),
    19: ("RELU", 0, (1, 1), (1, 1)),
    49: ("SPLIT", 35, (2, 2), (1, 64)),
    114: ("QUANTIZE", 0, (1, 1), (1, 1)),
    6: ("DEQUANTIZE", 0, (1, 1), (1, 1)),
}
# TensorType -> element size (bytes); the types rnnedge writes
TYPES = {
    0: ("FLOAT32", 4),
    1: ("FLOAT16", 2),
    2: ("INT32", 4),
    4: ("INT64", 8),
    7: ("INT16", 2),
    9: ("INT8", 1),
}

# table schemas: field index -> (name, kind); kinds: scalar struct codes, "str", "vec:<code>", "tab:<T>",
# "vtab:<T>" (vector of tables), "union:<type field>"
SCHEMA = {
    "Model": {
        0: ("version", "I"),
        1: ("operator_codes", "vtab:OperatorCode"),
        2: ("subgraphs", "vtab:SubGraph"),
        3: ("description", "str"),
        4: ("buffers", "vtab:Buffer"),
        5: ("metadata_buffer", "vec:i"),
        6: ("metadata", "vtab:Metadata"),
        7: ("signature_defs", "vtab:SignatureDef"),
    },
    "OperatorCode": {
        0: ("deprecated_builtin_code", "b"),
        1: ("custom_code", "str"),
        2: ("version", "i"),
        3: ("builtin_code", "i"),
    },
    "SubGraph": {
        0: ("tensors", "vtab:Tensor"),
        1: ("inputs", "vec:i"),
        2: ("outputs", "vec:i"),
        3: ("operators", "vtab:Operator"),
        4: ("name", "str"),
        5: ("debug_metadata_index", "i"),
    },
    "Tensor": {
        0: ("shape", "vec:i"),
        1: ("type", "b"),
        2: ("buffer", "I"),
        3: ("name", "str"),
        4: ("quantization", "tab:QuantizationParameters"),
        5: ("is_variable", "B"),
        7: ("shape_signature", "vec:i"),
        8: ("has_rank", "B"),
    },
    "QuantizationParameters": {
        0: ("min", "vec:f"),
        1: ("max", "vec:f"),
        2: ("scale", "vec:f"),
        3: ("zero_point", "vec:q"),
        4: ("details_type", "B"),
        6: ("quantized_dimension", "i"),
    },
    "Operator": {
        0: ("opcode_index", "I"),
        1: ("inputs", "vec:i"),
        2: ("outputs", "vec:i"),
        3: ("builtin_options_type", "B"),
        4: ("builtin_options", "union:builtin_options_type"),
        6: ("custom_options_format", "b"),
        8: ("intermediates", "vec:i"),
        13: ("debug_metadata_index", "i"),
    },
    "Buffer": {0: ("data", "vec:B"), 1: ("offset", "Q"), 2: ("size", "Q")},
    "Metadata": {0: ("name", "str"), 1: ("buffer", "I")},
    "SignatureDef": {
        0: ("inputs", "vtab:TensorMap"),
        1: ("outputs", "vtab:TensorMap"),
        2: ("signature_key", "str"),
        4: ("subgraph_index", "I"),
    },
    "TensorMap": {0: ("name", "str"), 1: ("tensor_index", "I")},
    # builtin options of rnnedge's ops (union members)
    "FullyConnectedOptions": {
        0: ("fused_activation_function", "b"),
        1: ("weights_format", "b"),
        2: ("keep_num_dims", "B"),
        3: ("asymmetric_quantize_inputs", "B"),
        4: ("quantized_bias_type", "b"),
    },
    "AddOptions": {0: ("fused_activation_function", "b"), 1: ("pot_scale_int16", "B")},
    "SubOptions": {0: ("fused_activation_function", "b"), 1: ("pot_scale_int16", "B")},
    "MulOptions": {0: ("fused_activation_function", "b")},
    "SplitOptions": {0: ("num_splits", "i")},
}
UNIONS = {
    8: "FullyConnectedOptions",
    11: "AddOptions",
    28: "SubOptions",
    21: "MulOptions",
    35: "SplitOptions",
}
SIZES = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "f": 4, "q": 8, "Q": 8}


class _Reader:
    def __init__(self, data: bytes):
        self.buf = memoryview(data)
        self.n = len(data)
        self.tables = 0

    def fail(self, msg: str):
        raise TfliteError(f"model.tflite is malformed: {msg}")

    def scalar(self, code: str, pos: int, what: str):
        size = SIZES[code]
        if pos < 0 or pos + size > self.n:
            self.fail(f"{what} at byte {pos} lies outside the file ({self.n} bytes)")
        return struct.unpack_from("<" + code, self.buf, pos)[0]

    def offset(self, pos: int, what: str) -> int:
        """Follow a uoffset at pos (relative, forward)."""
        if pos % 4:
            self.fail(f"{what}: offset at byte {pos} is not 4-byte aligned")
        target = pos + self.scalar("I", pos, what)
        if target >= self.n:
            self.fail(f"{what} points to byte {target}, beyond the file ({self.n} bytes)")
        return target

    def vector(self, pos: int, elem: int, what: str) -> tuple[int, int]:
        """(start of elements, count) of the vector at pos, bounds-checked."""
        if pos % 4:
            self.fail(f"{what}: vector at byte {pos} is not 4-byte aligned")
        count = self.scalar("I", pos, what + " length")
        if pos + 4 + count * elem > self.n:
            self.fail(f"{what}: {count} elements of {elem} bytes at byte {pos} run past the end of the file")
        return pos + 4, count

    def string(self, pos: int, what: str) -> str:
        start, count = self.vector(pos, 1, what)
        if start + count >= self.n or self.buf[start + count] != 0:
            self.fail(f"{what}: string at byte {pos} is not NUL-terminated inside the file")
        return bytes(self.buf[start : start + count]).decode("utf-8", "replace")

    def table(self, pos: int, name: str, what: str, depth: int) -> dict:
        """Verify one table and everything it references; return its fields as Python values (vectors of
        scalars as lists, unions as (type, dict))."""
        self.tables += 1
        if self.tables > MAX_TABLES:
            self.fail(f"more than {MAX_TABLES} tables")
        if depth > MAX_DEPTH:
            self.fail(f"{what}: tables nested deeper than {MAX_DEPTH}")
        if pos % 4:
            self.fail(f"{what}: table at byte {pos} is not 4-byte aligned")
        vt = pos - self.scalar("i", pos, what + " vtable offset")
        if vt % 2 or vt < 0:
            self.fail(f"{what}: vtable at byte {vt} is misaligned or before the file")
        vt_size = self.scalar("H", vt, what + " vtable size")
        obj_size = self.scalar("H", vt + 2, what + " object size")
        if vt_size < 4 or vt_size % 2 or vt + vt_size > self.n:
            self.fail(f"{what}: vtable at byte {vt} has a bad size {vt_size}")
        if obj_size < 4 or pos + obj_size > self.n:
            self.fail(f"{what}: table at byte {pos} of {obj_size} bytes runs past the end of the file")
        schema = SCHEMA[name]
        out = {}
        for idx in range((vt_size - 4) // 2):
            vo = self.scalar("H", vt + 4 + 2 * idx, what + " vtable")
            if vo == 0:
                continue
            if idx not in schema:
                self.fail(f"{what}: {name} has field #{idx}, which rnnedge never writes")
            fname, kind = schema[idx]
            fwhat = f"{what}.{fname}"
            size = SIZES.get(kind, 4)
            if vo < 4 or vo + size > obj_size:
                self.fail(f"{fwhat}: field at offset {vo} lies outside its table ({obj_size} bytes)")
            fpos = pos + vo
            if kind in SIZES:
                out[fname] = self.scalar(kind, fpos, fwhat)
                continue
            target = self.offset(fpos, fwhat)
            if kind == "str":
                out[fname] = self.string(target, fwhat)
            elif kind.startswith("vec:"):
                code = kind[4:]
                start, count = self.vector(target, SIZES[code], fwhat)
                if code == "B":
                    out[fname] = (start, count)  # raw bytes: where they are, not a copy
                else:
                    if code in "qQ" and start % 8:
                        self.fail(f"{fwhat}: 64-bit elements at byte {start} are not 8-byte aligned")
                    out[fname] = list(struct.unpack_from(f"<{count}{code}", self.buf, start))
            elif kind.startswith("tab:"):
                out[fname] = self.table(target, kind[4:], fwhat, depth + 1)
            elif kind.startswith("vtab:"):
                start, count = self.vector(target, 4, fwhat)
                out[fname] = [
                    self.table(
                        self.offset(start + 4 * k, f"{fwhat}[{k}]"), kind[5:], f"{fwhat}[{k}]", depth + 1
                    )
                    for k in range(count)
                ]
            elif kind.startswith("union:"):
                utype = out.get(kind[6:], 0)
                if utype not in UNIONS:
                    self.fail(f"{fwhat}: options of union type {utype}, which rnnedge never writes")
                out[fname] = (utype, self.table(target, UNIONS[utype], fwhat, depth + 1))
        return out


def check_tflite(data: bytes, expect: dict | None = None) -> dict:
    """Verify a .tflite file; returns the parsed model (dicts) for further checks.

    expect: optional {"signature": "serving_default", "inputs": {name: size}, "outputs": {name: size}}: the
    signature must have exactly these float32 (1, size) tensors.
    """
    r = _Reader(data)
    if r.n < 8 or bytes(r.buf[4:8]) != b"TFL3":
        r.fail("no TFL3 file identifier (not a TFLite flatbuffer)")
    if r.n >= 1 << 31:
        r.fail("larger than 2 GiB")
    model = r.table(r.offset(0, "root"), "Model", "model", 0)
    _check_model(r, model, expect)
    return model


def _check_model(r: _Reader, m: dict, expect: dict | None) -> None:
    if m.get("version") != 3:
        r.fail(f"schema version {m.get('version')}, expected 3")
    codes = m.get("operator_codes", [])
    ops = []
    for k, oc in enumerate(codes):
        code = max(oc.get("deprecated_builtin_code", 0), oc.get("builtin_code", 0))
        if "custom_code" in oc or code not in OPS:
            r.fail(
                f"operator_codes[{k}] is builtin {code}{' (custom)' if 'custom_code' in oc else ''}, not "
                "one of "
                f"rnnedge's ops ({', '.join(v[0] for v in OPS.values())})"
            )
        if not 1 <= oc.get("version", 1) <= 20:
            r.fail(f"operator_codes[{k}] has version {oc.get('version')}")
        ops.append(code)
    buffers = m.get("buffers", [])
    sizes = []
    for k, b in enumerate(buffers):
        start, count = b.get("data", (0, 0))
        off, size = b.get("offset", 0), b.get("size", 0)
        if off or size:
            if count or off <= 1 or off + size > r.n:
                r.fail(f"buffers[{k}] has offset {off} / size {size} outside the file ({r.n} bytes)")
            count = size
        sizes.append(count)
    subgraphs = m.get("subgraphs", [])
    if not 1 <= len(subgraphs) <= MAX_SUBGRAPHS:
        r.fail(f"{len(subgraphs)} subgraphs (rnnedge writes 1, at most {MAX_SUBGRAPHS} are accepted)")
    for s, sg in enumerate(subgraphs):
        _check_subgraph(r, sg, f"subgraphs[{s}]", ops, sizes)
    for k, idx in enumerate(m.get("metadata_buffer", [])):
        if not 0 <= idx < len(buffers):
            r.fail(f"metadata_buffer[{k}] = {idx}, but there are {len(buffers)} buffers")
    for k, md in enumerate(m.get("metadata", [])):
        if not 0 <= md.get("buffer", 0) < len(buffers):
            r.fail(f"metadata[{k}].buffer = {md.get('buffer', 0)}, but there are {len(buffers)} buffers")
    sigs = m.get("signature_defs", [])
    if len(sigs) > MAX_SUBGRAPHS:
        r.fail(f"{len(sigs)} signatures")
    for k, sig in enumerate(sigs):
        si = sig.get("subgraph_index", 0)
        if not 0 <= si < len(subgraphs):
            r.fail(f"signature_defs[{k}].subgraph_index = {si}, but there are {len(subgraphs)} subgraphs")
        nt = len(subgraphs[si].get("tensors", []))
        for side in ("inputs", "outputs"):
            for j, tm in enumerate(sig.get(side, [])):
                if "name" not in tm or not 0 <= tm.get("tensor_index", 0) < nt:
                    r.fail(
                        f"signature_defs[{k}].{side}[{j}] names tensor {tm.get('tensor_index', 0)} of {nt}"
                    )
    if expect is not None:
        _check_signature(r, m, expect)


def _check_subgraph(r: _Reader, sg: dict, what: str, ops: list[int], sizes: list[int]) -> None:
    tensors = sg.get("tensors", [])
    nt = len(tensors)
    if nt > MAX_TENSORS:
        r.fail(f"{what} has {nt} tensors")
    const = set()
    for k, t in enumerate(tensors):
        tw = f"{what}.tensors[{k}]"
        if t.get("type", 0) not in TYPES:
            r.fail(f"{tw} has tensor type {t.get('type')}, not one rnnedge writes")
        shape = t.get("shape", [])
        if len(shape) > 8 or any(d < 0 for d in shape):
            r.fail(f"{tw} has shape {shape[:9]}")
        count = math.prod(shape)
        if count > MAX_ELEMENTS:
            r.fail(f"{tw} has {count} elements")
        sig = t.get("shape_signature")
        if sig is not None and (len(sig) != len(shape) or any(d < -1 for d in sig)):
            r.fail(f"{tw} has shape_signature {sig[:9]} for shape {shape[:9]}")
        b = t.get("buffer", 0)
        if not 0 <= b < len(sizes):
            r.fail(f"{tw}.buffer = {b}, but there are {len(sizes)} buffers")
        if sizes[b]:
            want = count * TYPES[t.get("type", 0)][1]
            if sizes[b] != want:
                r.fail(f"{tw} {shape} needs {want} bytes of constant data, buffers[{b}] has {sizes[b]}")
            const.add(k)
        q = t.get("quantization")
        if q is not None:
            _check_quant(r, q, shape, tw)
    for side in ("inputs", "outputs"):
        for j, i in enumerate(sg.get(side, [])):
            if not 0 <= i < nt:
                r.fail(f"{what}.{side}[{j}] = {i}, but there are {nt} tensors")
            if i in const:
                r.fail(f"{what}.{side}[{j}] is a constant tensor")
    written = set()
    for k, op in enumerate(sg.get("operators", [])):
        ow = f"{what}.operators[{k}]"
        oi = op.get("opcode_index", 0)
        if not 0 <= oi < len(ops):
            r.fail(f"{ow}.opcode_index = {oi}, but there are {len(ops)} operator codes")
        name, opt_type, (imin, imax), (omin, omax) = OPS[ops[oi]]
        ins, outs = op.get("inputs", []), op.get("outputs", [])
        if not (imin <= len(ins) <= imax and omin <= len(outs) <= omax):
            r.fail(f"{ow} ({name}) has {len(ins)} inputs / {len(outs)} outputs")
        for j, i in enumerate(ins):
            if not -1 <= i < nt or (i == -1 and j < imin):
                r.fail(f"{ow}.inputs[{j}] = {i}, but there are {nt} tensors")
        for j, i in enumerate(outs + op.get("intermediates", [])):
            if not 0 <= i < nt:
                r.fail(f"{ow}.outputs[{j}] = {i}, but there are {nt} tensors")
            if i in const or i in written:
                r.fail(f"{ow}.outputs[{j}] = {i} is a constant or another operator's output")
            written.add(i)
        t = op.get("builtin_options_type", 0)
        if t not in (0, opt_type):
            r.fail(f"{ow} ({name}) has options of union type {t}, expected {opt_type}")
        if "builtin_options" in op:
            opts = op["builtin_options"][1]
            act = opts.get("fused_activation_function", 0)
            if not 0 <= act <= 5:
                r.fail(f"{ow} has fused activation {act}")
            if name == "SPLIT" and opts.get("num_splits", len(outs)) != len(outs):
                r.fail(f"{ow} SPLIT into {opts.get('num_splits')} with {len(outs)} outputs")


def _check_quant(r: _Reader, q: dict, shape: list[int], what: str) -> None:
    scale, zp = q.get("scale", []), q.get("zero_point", [])
    if q.get("details_type", 0) != 0:
        r.fail(f"{what}.quantization has custom details")
    if zp and len(zp) != len(scale):
        r.fail(f"{what}.quantization has {len(scale)} scales and {len(zp)} zero points")
    if not all(math.isfinite(s) and s > 0 for s in scale):
        r.fail(f"{what}.quantization has a scale that is not a positive finite number")
    if len(scale) > 1:
        qd = q.get("quantized_dimension", 0)
        if not 0 <= qd < len(shape) or shape[qd] != len(scale):
            r.fail(f"{what}.quantization has {len(scale)} scales along dimension {qd} of shape {shape}")
    for key in ("min", "max"):
        if not all(math.isfinite(v) for v in q.get(key, [])):
            r.fail(f"{what}.quantization.{key} is not finite")


def _check_signature(r: _Reader, m: dict, expect: dict) -> None:
    key = expect.get("signature", "serving_default")
    sig = next((s for s in m.get("signature_defs", []) if s.get("signature_key") == key), None)
    if sig is None:
        r.fail(f"no '{key}' signature")
    tensors = m["subgraphs"][sig.get("subgraph_index", 0)].get("tensors", [])
    for side in ("inputs", "outputs"):
        got = {tm["name"]: tm.get("tensor_index", 0) for tm in sig.get(side, [])}
        want = expect.get(side, {})
        if set(got) != set(want):
            raise TfliteError(
                f"model.tflite signature '{key}' {side} are {sorted(got)}, the manifest says {sorted(want)}"
            )
        for name, size in want.items():
            t = tensors[got[name]]
            if t.get("type", 0) != 0 or t.get("shape", []) != [1, size]:
                raise TfliteError(
                    f"model.tflite {side[:-1]} {name} is {TYPES[t.get('type', 0)][0]} {t.get('shape', [])}, "
                    f"the manifest says FLOAT32 [1, {size}]"
                )
