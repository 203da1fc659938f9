"""The manifest fields an export job defines (model, task, normalisation, quant, io, source, version): the
base of manifest.json, and what the ONNX and TFLite files embed so that they describe themselves."""

from __future__ import annotations

import datetime

from rnnedge.runtime.bundle import io_spec


def base_manifest(job) -> dict:
    cfg, m = job.cfg, job.model
    from rnnedge import __version__

    return {
        "model": {
            "cell": cfg.cell,
            "input_size": cfg.input_size,
            "hidden_size": cfg.hidden_size,
            "num_layers": cfg.num_layers,
            "output_size": cfg.output_size,
            "head": "linear",
            **({"proj_size": cfg.proj_size} if cfg.proj_size else {}),
        },
        "task": job.task,
        "normalization": {
            "folded_into_weights": True,
            "input_mean": m.in_mean.tolist(),
            "input_std": m.in_std.tolist(),
            "output_mean": m.out_mean.tolist(),
            "output_std": m.out_std.tolist(),
        },
        **getattr(job, "signal", {}),  # audio runs: the frontend and decisions sections
        "quant": {"scheme": job.scheme},
        "io": io_spec(
            cfg.cell, cfg.input_size, cfg.hidden_size, cfg.num_layers, cfg.output_size, cfg.proj_size
        ),
        "artifacts": {},
        "parity": {},
        "source": job.source,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rnnedge_version": __version__,
    }
