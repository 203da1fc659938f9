"""Shared fixtures: random-init models with non-trivial normalisation, exported through the real exporter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rnnedge.export.exporter import ExportJob, export
from rnnedge.runtime.vocab import CELLS  # noqa: F401 (the tests' cells: every one rnnedge knows)
from rnnedge.train.model import ModelConfig, RecurrentModel


def random_model(cell="lstm", layers=1, hidden=16, inp=5, out=3, seed=0, proj=0) -> RecurrentModel:
    torch.manual_seed(seed)
    m = RecurrentModel(ModelConfig(cell, inp, hidden, layers, out, proj_size=proj)).eval()
    rng = np.random.default_rng(seed)
    m.set_normalization(
        rng.normal(0, 2, inp), rng.uniform(0.5, 3, inp), rng.normal(0, 1, out), rng.uniform(0.5, 2, out)
    )
    return m


def random_seqs(n=4, T=30, inp=5, seed=1, scale=2.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, scale, (T, inp))).astype(np.float32) for _ in range(n)]


def make_bundle(
    tmp_path,
    cell="lstm",
    layers=1,
    scheme="fp32",
    hidden=16,
    inp=5,
    out=3,
    formats=("native",),
    task="regress",
    seed=0,
    name=None,
    proj=0,
):
    m = random_model(cell, layers, hidden, inp, out, seed, proj)
    seqs = random_seqs(inp=inp)
    task_d = {"kind": task, "labels": None, "readout": "every_step"}
    targets = None
    if task == "classify":
        task_d = {"kind": "classify", "labels": [f"c{i}" for i in range(out)], "readout": "last"}
        targets = [i % out for i in range(len(seqs))]
    job = ExportJob(m.cfg, m, scheme, task_d, seqs, targets, calib_seqs=random_seqs(n=6, seed=3, inp=inp))
    path = export(job, list(formats), tmp_path / (name or f"{cell}-{layers}-{scheme}"), log=lambda *a: None)
    return path, m, job


@pytest.fixture
def bundle_factory(tmp_path):
    return lambda **kw: make_bundle(tmp_path, **kw)
