"""The native bundle: a folder with manifest.json and weights.safetensors (+ model.onnx, model.tflite).

Weights keep PyTorch's names and layouts (`rnn.weight_ih_l0` (G*H, I), gate order LSTM i,f,g,o and GRU r,z,n),
with the input/output normalisation already folded in, so the bundle runs on raw samples. Quantised weights
are stored as int8 `name` plus float32 `name.scale` (one scale per output row). Reading needs numpy and
safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError
from .fileio import atomic_write_bytes, atomic_write_text, current_umask  # noqa: F401 (re-exported)
from .quant import dequantize
from .vocab import BUNDLE_CELLS as CELLS  # noqa: F401 (the manifest schema's enums)
from .vocab import FORMATS, SCHEMES  # noqa: F401

FORMAT = "rnnedge-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"


# ----------------------------------------------------------------------------
# the model description shared by every exporter and backend


@dataclass(frozen=True)
class StateSpec:
    layer: int
    kind: str  # "h" or "c"
    input: str  # e.g. h_in_0
    output: str  # e.g. h_out_0
    size: int


def state_specs(cell: str, num_layers: int, hidden_size: int, proj_size: int = 0) -> list[StateSpec]:
    """Named state tensors, in the order every export lists them: h_0, c_0, h_1, c_1, ... (an LSTM with
    proj_size: h (P,), c (H,))."""
    kinds = ("h", "c") if cell == "lstm" else ("h",)
    size = {"h": proj_size or hidden_size, "c": hidden_size}
    return [
        StateSpec(layer, k, f"{k}_in_{layer}", f"{k}_out_{layer}", size[k])
        for layer in range(num_layers)
        for k in kinds
    ]


def io_spec(
    cell: str, input_size: int, hidden_size: int, num_layers: int, output_size: int, proj_size: int = 0
) -> dict:
    """Input/output/state names and shapes (batch first, None = any batch) for the manifest."""
    states = state_specs(cell, num_layers, hidden_size, proj_size)
    return {
        "inputs": [{"name": "x", "shape": [None, input_size], "dtype": "float32"}]
        + [{"name": s.input, "shape": [None, s.size], "dtype": "float32"} for s in states],
        "outputs": [{"name": "y", "shape": [None, output_size], "dtype": "float32"}]
        + [{"name": s.output, "shape": [None, s.size], "dtype": "float32"} for s in states],
        "state": [
            {"layer": s.layer, "kind": s.kind, "input": s.input, "output": s.output, "shape": [None, s.size]}
            for s in states
        ],
    }


# ----------------------------------------------------------------------------
# limits and the manifest schema

SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
# a plain file name inside the bundle folder: no separators, no leading dot (so neither '..' nor hidden files)
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_SCALE = float(np.finfo(np.float32).max) / 128  # an int8 weight times its scale stays finite
SAFETENSORS_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "I8": (np.int8, 1)}


@dataclass(frozen=True)
class Limits:
    """What a bundle may declare before anything is read or allocated. Every value is checked against the
    manifest first, then against each file's size on disk (fstat, before reading it)."""

    max_input_size: int = 4096
    max_hidden_size: int = 4096
    max_layers: int = 16
    max_output_size: int = 4096
    max_file_bytes: int = 1 << 30  # any one payload (weights, model.onnx, model.tflite)
    max_total_bytes: int = 2 << 30  # all payloads together
    max_manifest_bytes: int = 16 << 20
    max_header_bytes: int = 1 << 20  # safetensors JSON header


DEFAULT_LIMITS = Limits()


def manifest_schema() -> dict:
    """The published JSON Schema of manifest.json (runtime/manifest.schema.json, shipped with the package)."""
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = json.loads(SCHEMA_FILE.read_text())
    return _SCHEMA


_SCHEMA = None


class _Invalid(Exception):
    def __init__(self, where: str, msg: str):
        super().__init__(f"{where or '(root)'}: {msg}")
        self.where, self.msg = where, msg


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _at(where: str, key) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{where}.{key}" if where else key
    return f"{where}[{key[:80]!r}]"


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def validate_schema(value, schema: dict, where: str = "", root: dict | None = None) -> None:
    """A small JSON Schema (2020-12) validator for the keywords manifest.schema.json uses. Raises _Invalid
    naming the field. It walks the data only where the schema describes it, so its work is bounded by the
    schema and the manifest's size; integers are integers (not bools, not 1.0)."""
    root = root or schema
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"unsupported $ref {ref}")
        validate_schema(value, root["$defs"][ref[len("#/$defs/") :]], where, root)
    if "const" in schema and not (value == schema["const"] and type(value) is type(schema["const"])):
        raise _Invalid(where, f"must be {schema['const']!r}, got {_short(value)}")
    if "enum" in schema and not any(value == e and type(value) is type(e) for e in schema["enum"]):
        raise _Invalid(where, f"must be one of {schema['enum']}, got {_short(value)}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            raise _Invalid(where, f"must be {' or '.join(types)}, got {type(value).__name__} {_short(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and not value >= schema["minimum"]:
            raise _Invalid(where, f"must be >= {schema['minimum']}, got {_short(value)}")
        if "maximum" in schema and not value <= schema["maximum"]:
            raise _Invalid(where, f"must be <= {schema['maximum']}, got {_short(value)}")
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise _Invalid(where, f"must be at most {schema['maxLength']} characters, got {len(value)}")
        if "pattern" in schema and not _pattern_match(schema["pattern"], value):
            raise _Invalid(where, f"{_short(value)} does not match {schema['pattern']}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise _Invalid(where, f"must have at most {schema['maxItems']} items, got {len(value)}")
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise _Invalid(where, f"must have at least {schema['minItems']} items, got {len(value)}")
        if "items" in schema:
            for i, v in enumerate(value):
                validate_schema(v, schema["items"], _at(where, i), root)
    if isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            raise _Invalid(where, f"must have at most {schema['maxProperties']} keys, got {len(value)}")
        for key in schema.get("required", ()):
            if key not in value:
                raise _Invalid(_at(where, key), "is required")
        props = schema.get("properties", {})
        for key, v in value.items():
            if "propertyNames" in schema:
                try:
                    validate_schema(key, schema["propertyNames"], where, root)
                except _Invalid as e:
                    raise _Invalid(_at(where, key), f"is not an allowed key ({e.msg})") from None
            if key in props:
                validate_schema(v, props[key], _at(where, key), root)
            elif schema.get("additionalProperties") is False:
                raise _Invalid(_at(where, key), f"is not an allowed key (allowed: {', '.join(props)})")
            elif isinstance(schema.get("additionalProperties"), dict):
                validate_schema(v, schema["additionalProperties"], _at(where, key), root)


def _pattern_match(pattern: str, value: str) -> bool:
    # JSON Schema patterns are ECMA regexes, unanchored; '^...$' means the whole string (Python's '$' would
    # also accept a trailing newline, so anchor with fullmatch instead)
    if pattern.startswith("^") and pattern.endswith("$"):
        return re.fullmatch(pattern[1:-1], value) is not None
    return re.search(pattern, value) is not None


def gates(cell: str) -> int:
    return {"lstm": 4, "gru": 3, "gru_lbr0": 3}.get(cell, 1)


def weights_spec(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    output_size: int,
    scheme: str,
    proj_size: int = 0,
):
    """Every tensor weights.safetensors must hold: name -> (safetensors dtype, shape). An LSTM with
    proj_size P has h of size P (PyTorch's layout): W_hh (4H, P), W_hr (P, H) without bias, head (O, P)."""
    gh, P = gates(cell) * hidden_size, proj_size or hidden_size
    mats = {}
    for k in range(num_layers):
        mats[f"rnn.weight_ih_l{k}"] = (gh, input_size if k == 0 else P)
        mats[f"rnn.weight_hh_l{k}"] = (gh, P)
        if proj_size:
            mats[f"rnn.weight_hr_l{k}"] = (proj_size, hidden_size)
    mats["head.weight"] = (output_size, P)
    vecs = {f"rnn.{b}_l{k}": (gh,) for k in range(num_layers) for b in ("bias_ih", "bias_hh")}
    vecs["head.bias"] = (output_size,)
    if scheme == "fp16":
        return {n: ("F16", s) for n, s in {**mats, **vecs}.items()}
    if scheme == "fp32":
        return {n: ("F32", s) for n, s in {**mats, **vecs}.items()}
    spec = {n: ("I8", s) for n, s in mats.items()}
    spec.update({n + ".scale": ("F32", s[:1]) for n, s in mats.items()})
    spec.update({n: ("F32", s) for n, s in vecs.items()})
    return spec


def check_manifest(manifest, where: str | os.PathLike = MANIFEST, limits: Limits = DEFAULT_LIMITS) -> None:
    """Validate a parsed manifest: the JSON Schema, then the rules that relate fields to each other and to
    the limits. BundleError names the file and the field."""
    try:
        validate_schema(manifest, manifest_schema())
        _check_semantics(manifest, limits)
    except _Invalid as e:
        raise BundleError(f"{where}: field {e}; the manifest is damaged or not from this rnnedge") from None


def _check_semantics(m: dict, limits: Limits) -> None:
    md = m["model"]
    for key, cap in (
        ("input_size", limits.max_input_size),
        ("hidden_size", limits.max_hidden_size),
        ("num_layers", limits.max_layers),
        ("output_size", limits.max_output_size),
    ):
        if md[key] > cap:
            raise _Invalid(f"model.{key}", f"{md[key]} is above this loader's limit {cap} (Limits.max_{key})")
    cell, I, H, L, O = md["cell"], md["input_size"], md["hidden_size"], md["num_layers"], md["output_size"]
    P = md.get("proj_size", 0)
    if P and (cell != "lstm" or P >= H):
        raise _Invalid("model.proj_size", f"{P} needs cell lstm and proj_size < hidden_size ({cell}, {H})")
    spec = weights_spec(cell, I, H, L, O, m["quant"]["scheme"], P)
    declared = sum(SAFETENSORS_DTYPES[d][1] * math.prod(s) for d, s in spec.values())
    if declared > limits.max_file_bytes:
        raise _Invalid(
            "model", f"declares {declared} bytes of weights, above the limit {limits.max_file_bytes}"
        )
    norm = m.get("normalization", {})
    for key, n in (("input_mean", I), ("input_std", I), ("output_mean", O), ("output_std", O)):
        if key in norm:
            v = norm[key]
            if len(v) != n:
                raise _Invalid(f"normalization.{key}", f"has {len(v)} values, the model has {n}")
            if not all(math.isfinite(x) for x in v):
                raise _Invalid(f"normalization.{key}", "has non-finite values")
    labels = m["task"].get("labels")
    if labels is not None and len(labels) != O:
        raise _Invalid("task.labels", f"has {len(labels)} labels for output_size {O}")
    _check_frontend(m, I)
    _check_decisions(m)
    if m["io"] != json.loads(json.dumps(io_spec(cell, I, H, L, O, P))):
        raise _Invalid("io", f"does not match model {cell} {L}x{H} in={I} out={O}")
    files = m["files"]
    total = 0
    for name, info in files.items():
        if info["bytes"] > limits.max_file_bytes:
            raise _Invalid(
                f"files[{name!r}].bytes", f"{info['bytes']} is above the limit {limits.max_file_bytes}"
            )
        total += info["bytes"]
    if total > limits.max_total_bytes:
        raise _Invalid("files", f"declare {total} bytes in all, above the limit {limits.max_total_bytes}")
    seen = {}
    for fmt, art in m["artifacts"].items():
        name = art["file"]
        if name == MANIFEST:
            raise _Invalid(f"artifacts.{fmt}.file", f"cannot be {MANIFEST}")
        if name in seen:
            raise _Invalid(f"artifacts.{fmt}.file", f"{name} is also the {seen[name]} artifact")
        seen[name] = fmt
        if name not in files:
            raise _Invalid(
                f"files[{name!r}]", f"is missing: the {fmt} artifact is not listed, so it cannot be checked"
            )


def _check_frontend(m: dict, input_size: int) -> None:
    from .frontend import FrontendConfig, check_config

    if "frontend" in m:
        problem = check_config(FrontendConfig.from_manifest(m["frontend"]), input_size)
        if problem:
            raise _Invalid("frontend", problem)


def _check_decisions(m: dict) -> None:
    d = m.get("decisions")
    if d is None:
        return
    if m["task"]["kind"] != "classify":
        raise _Invalid("decisions", f"apply to classifiers only, the task is {m['task']['kind']}")
    labels = m["task"].get("labels") or []
    if d.get("background") is not None and d["background"] not in labels:
        raise _Invalid("decisions.background", f"{_short(d['background'])} is not one of task.labels")


# ----------------------------------------------------------------------------
# reading files: plain names inside the folder, regular files, size checked before reading


def check_file_name(name, what: str) -> str:
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
        raise BundleError(
            f"{what}: {_short(name)} is not a plain file name inside the bundle folder (letters, digits, "
            "'._-', no separators, no leading dot)"
        )
    return name


def _open_regular(path: Path, max_bytes: int, expect_bytes: int | None = None) -> tuple[int, int]:
    """Open a bundle file for reading: no symlink, not a device/FIFO (O_NONBLOCK: a FIFO cannot block us),
    at most max_bytes, and expect_bytes if given. Returns (fd, size)."""
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BundleError(f"{path.parent} is incomplete: {path.name} is missing") from None
    except OSError as e:
        if os.path.islink(path):
            raise BundleError(
                f"{path} is a symbolic link: bundle files must be regular files inside the bundle folder"
            ) from None
        raise BundleError(f"cannot open {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(
                f"{path} is not a regular file (a device, FIFO or folder cannot be a bundle file)"
            )
        if st.st_size > max_bytes:
            raise BundleError(f"{path} is {st.st_size} bytes, above the limit of {max_bytes}")
        if expect_bytes is not None and st.st_size != expect_bytes:
            raise BundleError(
                f"{path} does not match its checksum in the manifest: {st.st_size} bytes, the manifest says "
                f"{expect_bytes} (corrupted or truncated)"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def _read_fd(fd: int, size: int, path: Path) -> bytes:
    chunks, left = [], size
    while left > 0:
        b = os.read(fd, min(left, 1 << 24))
        if not b:
            raise BundleError(f"{path} shrank while it was read")
        chunks.append(b)
        left -= len(b)
    if os.read(fd, 1):
        raise BundleError(f"{path} grew while it was read")
    return b"".join(chunks)


def read_file(path: Path, max_bytes: int, expect_bytes: int | None = None) -> bytes:
    fd, size = _open_regular(path, max_bytes, expect_bytes)
    try:
        return _read_fd(fd, size, path)
    finally:
        os.close(fd)


def hash_file(path: Path, max_bytes: int, expect_bytes: int | None = None) -> str:
    fd, size = _open_regular(path, max_bytes, expect_bytes)
    h, left = hashlib.sha256(), size
    try:
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                raise BundleError(f"{path} shrank while it was read")
            h.update(b)
            left -= len(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def safetensors_header(
    data: bytes, path: Path, limits: Limits = DEFAULT_LIMITS, size: int | None = None
) -> dict:
    """Parse and bounds-check a safetensors header: {name: (dtype, shape, (begin, end))}; the data section
    must be exactly the tensors, back to back. data: the file, or only its first 8 + n bytes with size the
    file's length."""
    size = len(data) if size is None else size
    if size < 8 or len(data) < 8:
        raise BundleError(f"cannot read {path}: not a safetensors file ({size} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > min(size - 8, limits.max_header_bytes) or len(data) < 8 + n:
        raise BundleError(f"cannot read {path}: safetensors header length {n} does not fit the file")
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, RecursionError) as e:
        raise BundleError(
            f"cannot read {path}: safetensors header is not valid JSON ({str(e)[:80]})"
        ) from None
    if not isinstance(header, dict):
        raise BundleError(f"cannot read {path}: safetensors header is not a JSON object")
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        ok = (
            isinstance(t, dict)
            and t.get("dtype") in SAFETENSORS_DTYPES
            and isinstance(t.get("shape"), list)
            and len(t["shape"]) <= 4
            and all(type(d) is int and 0 <= d <= 1 << 31 for d in t["shape"])
            and isinstance(t.get("data_offsets"), list)
            and len(t["data_offsets"]) == 2
            and all(type(o) is int and o >= 0 for o in t["data_offsets"])
        )
        if not ok:
            raise BundleError(f"cannot read {path}: tensor {_short(name)} has a malformed safetensors entry")
        out[name] = (t["dtype"], tuple(t["shape"]), tuple(t["data_offsets"]))
    pos, end = 0, size - 8 - n
    for name, (dtype, shape, (b, e)) in sorted(out.items(), key=lambda kv: kv[1][2]):
        if b != pos or e - b != SAFETENSORS_DTYPES[dtype][1] * math.prod(shape):
            raise BundleError(
                f"cannot read {path}: tensor {_short(name)} has data offsets {b}..{e} that do not fit"
            )
        pos = e
    if pos != end:
        raise BundleError(f"cannot read {path}: the data section is {end} bytes, the tensors take {pos}")
    return out


def check_weights(header: dict, model: dict, scheme: str, path: Path) -> None:
    """The weights must be exactly the tensors the manifest's sizes and scheme imply (names, dtypes,
    shapes), so no backend ever builds a model of another shape."""
    spec = weights_spec(
        model["cell"],
        model["input_size"],
        model["hidden_size"],
        model["num_layers"],
        model["output_size"],
        scheme,
        model.get("proj_size", 0),
    )
    missing = sorted(set(spec) - set(header))
    extra = sorted(set(header) - set(spec))
    if missing or extra:
        raise BundleError(
            f"{path}: weights do not match the manifest's model ({model['cell']} {model['num_layers']}x"
            f"{model['hidden_size']}, {scheme}): missing {missing[:4]}, "
            f"unexpected [{', '.join(_short(x) for x in extra[:4])}]"
        )
    for name, (dtype, shape) in spec.items():
        got = header[name][:2]
        if got != (dtype, shape):
            raise BundleError(
                f"{path}: weight {name} is {got[0]} {list(got[1])}, the manifest's model and quant.scheme "
                f"need {dtype} {list(shape)} (model.input_size/hidden_size/num_layers/output_size, "
                f"{gates(model['cell'])} gate(s) for {model['cell']})"
            )


# ----------------------------------------------------------------------------
# the bundle


@dataclass
class Bundle:
    path: Path
    manifest: dict
    verified: bool = False  # load_bundle(verify=True): read() re-checks each payload's sha256
    limits: Limits = DEFAULT_LIMITS
    validated: bool = False  # the manifest passed check_manifest

    @property
    def model(self) -> dict:
        return self.manifest["model"]

    @property
    def cell(self) -> str:
        return self.model["cell"]

    @property
    def input_size(self) -> int:
        return self.model["input_size"]

    @property
    def hidden_size(self) -> int:
        return self.model["hidden_size"]

    @property
    def proj_size(self) -> int:
        """LSTM projection size (h is (P,)), 0 = none."""
        return self.model.get("proj_size", 0)

    @property
    def state_size(self) -> int:
        """The size of h: what the next layer and the head take."""
        return self.proj_size or self.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model["num_layers"]

    @property
    def output_size(self) -> int:
        return self.model["output_size"]

    @property
    def quant(self) -> str:
        return self.manifest["quant"]["scheme"]

    @property
    def frontend(self):
        """The FrontendConfig of the manifest's `frontend` section, or None (raw samples are the steps)."""
        from .frontend import FrontendConfig

        return FrontendConfig.from_manifest(self.manifest.get("frontend"))

    @property
    def states(self) -> list[StateSpec]:
        return state_specs(self.cell, self.num_layers, self.hidden_size, self.proj_size)

    def file(self, name: str) -> Path:
        return self.path / check_file_name(name, f"{self.path / MANIFEST}: file")

    def artifact(self, fmt: str) -> Path:
        """Path of the file of one format ('native', 'onnx', 'tflite'); BundleError if the bundle has none."""
        arts = self.manifest.get("artifacts", {})
        art = arts.get(fmt) if isinstance(arts, dict) else None
        if art is None:
            have = ", ".join(sorted(arts)) if isinstance(arts, dict) and arts else "none"
            raise BundleError(
                f"{self.path} has no {fmt} artifact (it has: {have}); export one with "
                f"`rnnedge export RUN --format {fmt}`"
            )
        name = art.get("file") if isinstance(art, dict) else None
        return self.path / check_file_name(name, f"{self.path / MANIFEST}: field artifacts.{fmt}.file")

    def read(self, fmt: str) -> bytes:
        """The bytes of one format's file: size-checked before reading and, for a verified bundle, checked
        against its sha256 in the manifest (so what a backend parses is what was verified)."""
        path = self.artifact(fmt)
        info = self.manifest.get("files", {}).get(path.name) if self.verified else None
        data = read_file(path, self.limits.max_file_bytes, info["bytes"] if info else None)
        if info and hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise BundleError(f"{path} does not match its checksum in the manifest: corrupted or replaced")
        return data

    def weights(self) -> dict[str, np.ndarray]:
        """Float32 weights, dequantised: what the native backend computes with."""
        return dequantize(self.raw_weights())

    def raw_weights(self) -> dict[str, np.ndarray]:
        """Tensors exactly as stored (int8 + scales, float16, or float32)."""
        from safetensors.numpy import load as load_bytes

        path = self.artifact("native")
        data = self.read("native")
        header = safetensors_header(data, path, self.limits)
        if self.validated:
            check_weights(header, self.model, self.quant, path)
        try:
            tensors = load_bytes(data)
        except Exception as e:  # safetensors raises its own types for truncated/corrupt files
            raise BundleError(f"cannot read {path}: {e} (re-export the bundle)") from e
        for name, t in tensors.items():
            if t.dtype.kind == "f" and not np.isfinite(t).all():
                raise BundleError(f"{path}: weight {name} has non-finite values (NaN/Inf)")
            if name.endswith(".scale") and not (t > 0).all():
                raise BundleError(f"{path}: {name} has scales that are not positive")
            if name.endswith(".scale") and not (t <= MAX_SCALE).all():  # 127 * scale must stay finite
                raise BundleError(f"{path}: {name} has scales that overflow float32 when dequantised")
        return tensors


def load_bundle(path: str | os.PathLike, verify: bool = True, limits: Limits = DEFAULT_LIMITS) -> Bundle:
    """Read and check a bundle folder: the manifest against the schema and `limits`, every artefact listed
    and a plain regular file inside the folder, the weights' names/dtypes/shapes against the model's sizes.
    verify=True also checks every listed file's size and sha256. Every failure is a BundleError."""
    path = Path(path)
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    mpath = path / MANIFEST
    if not path.exists():
        raise BundleError(f"no bundle at {path}")
    if not path.is_dir() or not (mpath.exists() or mpath.is_symlink()):
        raise BundleError(f"{path} is not an rnnedge bundle: no {MANIFEST} in it")
    raw = read_file(mpath, limits.max_manifest_bytes)
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise BundleError(
            f"{mpath} is not valid JSON ({str(e)[:120]}); the bundle is corrupted, re-export it"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath} is not an rnnedge manifest (format != {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{mpath}: field format_version: bundle format version {_short(manifest.get('format_version'))}, "
            f"this rnnedge reads "
            f"{FORMAT_VERSION}: re-export it or upgrade rnnedge"
        )
    check_manifest(manifest, mpath, limits)
    if verify:
        for name, info in manifest["files"].items():
            f = path / name
            if hash_file(f, limits.max_file_bytes, info["bytes"]) != info["sha256"]:
                raise BundleError(f"{f} does not match its checksum in the manifest: corrupted or truncated")
    bundle = Bundle(path, manifest, verified=verify, limits=limits, validated=True)
    wpath = bundle.artifact("native")
    header = _read_safetensors_header(
        wpath, limits, manifest["files"][wpath.name]["bytes"] if verify else None
    )
    check_weights(header, manifest["model"], manifest["quant"]["scheme"], wpath)
    return bundle


def _read_safetensors_header(path: Path, limits: Limits, expect_bytes: int | None) -> dict:
    """The header alone (8 + n bytes), bounds-checked against the file's size, before any tensor is read."""
    fd, size = _open_regular(path, limits.max_file_bytes, expect_bytes)
    try:
        head = os.read(fd, 8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 <= n <= min(size - 8, limits.max_header_bytes):
            raise BundleError(f"{path}: not a safetensors file (header length {n} for {size} bytes)")
        body = os.read(fd, n)
    finally:
        os.close(fd)
    return safetensors_header(head + body, path, limits, size)  # the data section is not read here


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------
# writing (atomic: a bundle appears complete or not at all)


def write_manifest(folder: Path, manifest: dict) -> None:
    """Fill in the sha256 of every file present, then write manifest.json atomically."""
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != MANIFEST and not f.name.startswith("."):  # skip stray temp files
            files[f.name] = {"sha256": sha256(f), "bytes": f.stat().st_size}
    manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "files": files}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
