"""The native bundle: a folder with manifest.json and weights.safetensors (+ model.onnx, model.tflite).

Weights keep PyTorch's names and layouts (`rnn.weight_ih_l0` (G*H, I), gate order LSTM i,f,g,o and GRU r,z,n),
with the input/output normalisation already folded in, so the bundle runs on raw samples. Quantised weights
are stored as int8 `name` plus float32 `name.scale` (one scale per output row). Reading needs numpy and
safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError

FORMAT = "rnnedge-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


# ----------------------------------------------------------------------------
# the model description shared by every exporter and backend


@dataclass(frozen=True)
class StateSpec:
    layer: int
    kind: str  # "h" or "c"
    input: str  # e.g. h_in_0
    output: str  # e.g. h_out_0
    size: int


def state_specs(cell: str, num_layers: int, hidden_size: int) -> list[StateSpec]:
    """Named state tensors, in the order every export lists them: h_0, c_0, h_1, c_1, ..."""
    kinds = ("h", "c") if cell == "lstm" else ("h",)
    return [
        StateSpec(layer, k, f"{k}_in_{layer}", f"{k}_out_{layer}", hidden_size)
        for layer in range(num_layers)
        for k in kinds
    ]


def io_spec(cell: str, input_size: int, hidden_size: int, num_layers: int, output_size: int) -> dict:
    """Input/output/state names and shapes (batch first, None = any batch) for the manifest."""
    states = state_specs(cell, num_layers, hidden_size)
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
# reading


@dataclass
class Bundle:
    path: Path
    manifest: dict

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
    def num_layers(self) -> int:
        return self.model["num_layers"]

    @property
    def output_size(self) -> int:
        return self.model["output_size"]

    @property
    def quant(self) -> str:
        return self.manifest["quant"]["scheme"]

    @property
    def states(self) -> list[StateSpec]:
        return state_specs(self.cell, self.num_layers, self.hidden_size)

    def file(self, name: str) -> Path:
        return self.path / name

    def artifact(self, fmt: str) -> Path:
        """Path of the file of one format ('native', 'onnx', 'tflite'); BundleError if the bundle has none."""
        art = self.manifest.get("artifacts", {}).get(fmt)
        if art is None:
            have = ", ".join(sorted(self.manifest.get("artifacts", {}))) or "none"
            raise BundleError(
                f"{self.path} has no {fmt} artifact (it has: {have}); export one with "
                f"`rnnedge export RUN --format {fmt}`"
            )
        return self.path / art["file"]

    def weights(self) -> dict[str, np.ndarray]:
        """Float32 weights, dequantised: what the native backend computes with."""
        return dequantize(self.raw_weights())

    def raw_weights(self) -> dict[str, np.ndarray]:
        """Tensors exactly as stored (int8 + scales, float16, or float32)."""
        from safetensors.numpy import load_file

        path = self.artifact("native")
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own types for truncated/corrupt files
            raise BundleError(f"cannot read {path}: {e} (re-export the bundle)") from e


def load_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read and check a bundle folder. verify=True checks every file's sha256 against the manifest."""
    path = Path(path)
    if path.is_file() and path.name == MANIFEST:
        path = path.parent
    mpath = path / MANIFEST
    if not path.exists():
        raise BundleError(f"no bundle at {path}")
    if not mpath.is_file():
        raise BundleError(f"{path} is not an rnnedge bundle: no {MANIFEST} in it")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath} is not valid JSON ({e}); the bundle is corrupted, re-export it") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath} is not an rnnedge manifest (format != {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format version {manifest.get('format_version')}, this rnnedge reads "
            f"{FORMAT_VERSION}: re-export it or upgrade rnnedge"
        )
    if manifest.get("model", {}).get("cell") not in CELLS:
        raise BundleError(
            f"{mpath}: unknown cell {manifest.get('model', {}).get('cell')!r}, expected {CELLS}"
        )
    if verify:
        for name, info in manifest.get("files", {}).items():
            f = path / name
            if not f.is_file():
                raise BundleError(f"{path} is incomplete: {name} is missing")
            if f.stat().st_size != info["bytes"] or sha256(f) != info["sha256"]:
                raise BundleError(f"{f} does not match its checksum in the manifest: corrupted or truncated")
    return Bundle(path, manifest)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dequantize(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int8 `w` + `w.scale` (rows,) -> float32 w * scale[:, None]; float16 -> float32."""
    out = {}
    for name, t in tensors.items():
        if name.endswith(".scale"):
            continue
        if t.dtype == np.int8:
            scale = tensors[name + ".scale"].astype(np.float32)
            out[name] = t.astype(np.float32) * scale.reshape((-1,) + (1,) * (t.ndim - 1))
        else:
            out[name] = t.astype(np.float32)
    return out


# ----------------------------------------------------------------------------
# writing (atomic: a bundle appears complete or not at all)


def write_manifest(folder: Path, manifest: dict) -> None:
    """Fill in the sha256 of every file present, then write manifest.json atomically."""
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != MANIFEST:
            files[f.name] = {"sha256": sha256(f), "bytes": f.stat().st_size}
    manifest = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "files": files}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
