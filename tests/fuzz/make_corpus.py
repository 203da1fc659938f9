"""(Re)build the checked-in seed corpus: tiny template bundles and seed inputs per loader (a few KB each).

    .venv/bin/python -m tests.fuzz.make_corpus        # needs the export extras (torch, onnx, ai-edge-litert)

Each fuzz input is one selector byte (which template bundle) followed by the file's bytes.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
TEMPLATES = CORPUS / "bundles"
# (name, cell, scheme, formats, task): small enough to keep every file a few KB
SPECS = [
    ("t0", "lstm", "fp32", ("native", "onnx", "tflite"), "regress"),
    ("t1", "gru", "int8-dynamic", ("native", "onnx", "tflite"), "classify"),
    ("t2", "rnn_tanh", "fp16", ("native",), "regress"),
]
INPUT = 3


def build() -> None:
    from tests.conftest import make_bundle

    shutil.rmtree(CORPUS, ignore_errors=True)
    TEMPLATES.mkdir(parents=True)
    tmp = CORPUS / ".build"
    for k, (name, cell, scheme, formats, task) in enumerate(SPECS):
        path, _, _ = make_bundle(
            tmp,
            cell=cell,
            scheme=scheme,
            hidden=4,
            inp=INPUT,
            out=INPUT,
            formats=formats,
            task=task,
            name=name,
        )
        shutil.copytree(path, TEMPLATES / name)
        sel = bytes([k])
        seeds = {
            "manifest": ("manifest.json",),
            "safetensors": ("weights.safetensors",),
            "tflite": ("model.tflite",),
            "onnx": ("model.onnx",),
        }
        for target, files in seeds.items():
            for f in files:
                if (path / f).exists():
                    (CORPUS / target).mkdir(exist_ok=True)
                    (CORPUS / target / f"{name}-{f}").write_bytes(sel + (path / f).read_bytes())
    shutil.rmtree(tmp)
    (CORPUS / "csv").mkdir()
    (CORPUS / "csv" / "rows.csv").write_bytes(b"\x00a,b,c\n1,2,3\n0.5 -1 2e3\n\n4,5,6\n")
    (CORPUS / "csv" / "plain.csv").write_bytes(b"\x001,2,3\n")
    (CORPUS / "npy").mkdir()
    for shape in [(4, INPUT), (2, 3, INPUT)]:
        buf = io.BytesIO()
        np.save(buf, np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
        (CORPUS / "npy" / f"{'x'.join(map(str, shape))}.npy").write_bytes(b"\x00" + buf.getvalue())


if __name__ == "__main__":
    build()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"{CORPUS}: {total / 1024:.1f} KiB")
