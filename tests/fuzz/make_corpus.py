"""(Re)build the checked-in seed corpus: tiny template bundles and seed inputs per loader (a few KB each).

    .venv/bin/python -m tests.fuzz.make_corpus        # needs the export extras (torch, onnx, ai-edge-litert)
    .venv/bin/python -m tests.fuzz.make_corpus --runs # only corpus/runs + corpus/checkpoint

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


def build_runs() -> None:
    """corpus/runs/c0: a tiny training run folder (LSTM 1x4, an Adam step taken, cosine schedule) written by
    the real checkpoint code, unfinished so it has a resume state; seeds: its three files."""
    import torch
    from rnnedge.train import checkpoint as ck
    from rnnedge.train.model import ModelConfig, RecurrentModel
    from rnnedge.train.trainer import TrainConfig

    runs = CORPUS / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    shutil.rmtree(CORPUS / "checkpoint", ignore_errors=True)
    run = runs / "c0"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig("lstm", INPUT, 4, 1, INPUT))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    model(torch.ones(1, 2, INPUT))[0].sum().backward()
    opt.step()
    sched.step()
    gen = torch.Generator().manual_seed(0)
    tensors, scalars = ck.training_state(model, opt, sched, gen)
    config = {
        "model": model.cfg.to_dict(),
        "train": {**TrainConfig(data="fuzz.npz", hidden_size=4, epochs=4).__dict__},
        "data": {"name": "fuzz", "spec": "fuzz.npz", "description": "", "sizes": [1, 0, 1]},
        "task": {"kind": "forecast", "labels": None, "readout": "every_step"},
    }
    state = {"epoch": 1, "best": 1.0, "best_epoch": 1, "seconds": 0.1}
    record = {
        "config": config,
        "finished": False,
        "best": ck.write_payload(run, "model", model.state_dict()) | {"epoch": 1},
        "resume": ck.write_payload(run, "resume", tensors) | {"state": state | scalars},
        "results": {},
        "history": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_rmse": 1.0}],
    }
    ck.commit(run, record)
    (CORPUS / "checkpoint").mkdir()
    for sel, f in [(0, ck.RECORD), (1, record["best"]["file"]), (2, record["resume"]["file"])]:
        (CORPUS / "checkpoint" / f"c0-{sel}").write_bytes(bytes([sel]) + (run / f).read_bytes())


if __name__ == "__main__":
    import sys

    if "--runs" not in sys.argv:  # --runs: only the training-run template (leaves the bundles as they are)
        build()
    build_runs()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"{CORPUS}: {total / 1024:.1f} KiB")
