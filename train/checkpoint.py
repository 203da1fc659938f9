"""Checkpoints: model.safetensors (state dict, normalisation buffers included) + config.json. Never pickle."""

from __future__ import annotations

import json
from pathlib import Path

from rnnedge.runtime.errors import CheckpointError
from rnnedge.runtime.fileio import atomic_write_bytes, atomic_write_text
from safetensors.torch import load_file, save

from .model import ModelConfig, RecurrentModel

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_checkpoint(run_dir: Path, model: RecurrentModel, meta: dict) -> None:
    """meta: {"train": TrainConfig dict, "data": {...}, "task": {...}, ...}; model config is added here."""
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(run_dir / WEIGHTS, save(sd))
    atomic_write_text(run_dir / CONFIG, json.dumps({"model": model.cfg.to_dict(), **meta}, indent=2) + "\n")


def load_checkpoint(run_dir: str | Path) -> tuple[RecurrentModel, dict]:
    run_dir = Path(run_dir)
    cpath, wpath = run_dir / CONFIG, run_dir / WEIGHTS
    if not cpath.is_file() or not wpath.is_file():
        raise CheckpointError(f"{run_dir} is not a training run folder (needs {CONFIG} and {WEIGHTS})")
    try:
        meta = json.loads(cpath.read_text())
        model = RecurrentModel(ModelConfig(**meta["model"]))
        model.load_state_dict(load_file(str(wpath)))
    except Exception as e:
        raise CheckpointError(f"cannot load the checkpoint in {run_dir}: {e}") from e
    return model.eval(), meta
