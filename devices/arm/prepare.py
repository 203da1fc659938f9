"""x86 side of the ARM check: export bundles and record what x86 computes with them (needs torch).

    python -m rnnedge.devices.arm.prepare OUT [--set parity count] [--force]

OUT/parity/<cell>-<scheme>/    small bundles (I=6, H=24, O=4) of every cell and scheme, in every format whose
                               exporter exists (native always; onnx, tflite once export/onnx_export.py and
                               export/tflite_export.py are there), each beside <name>.npz holding
                               x (S, T, I) and, per backend the x86 export verified (and numpy beside native):
                               y_<backend> (x86 output) and ref_<backend> (the quantised PyTorch reference
                               that backend is held to)
OUT/count/<cell>-h<H>-<scheme>/ LSTM and GRU, I=40, H=64/128/256, O=12: for instructions per step

Models are untrained (seeded random weights, non-trivial normalisation): parity does not need accuracy.
A fingerprint of the sources and library versions lets a second run with nothing changed return at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from rnnedge.runtime.fileio import atomic_write_text

PARITY_MODELS = [("lstm", 2), ("gru", 1), ("rnn_tanh", 1), ("rnn_relu", 1)]  # (cell, layers)
PARITY_SCHEMES = ("fp32", "int8", "int8-dynamic", "int8-static")
PARITY_SHAPE = (6, 24, 4)  # input, hidden, output
COUNT_MODELS = [(cell, h) for cell in ("lstm", "gru") for h in (64, 128, 256)]
COUNT_SCHEMES = ("fp32", "int8-dynamic")
COUNT_SHAPE = (40, 12)  # input, output
SEQS, T = 3, 60


def available_formats() -> list[str]:
    """native plus every optional format whose writer and verifying interpreters are installed."""
    from rnnedge.export import formats

    return formats.available()


def make_job(cell: str, layers: int, sizes: tuple[int, int, int], scheme: str, seed: int):
    """An ExportJob for a seeded untrained model with non-trivial normalisation, plus its eval sequences."""
    import torch
    from rnnedge.export.exporter import ExportJob
    from rnnedge.train.model import ModelConfig, RecurrentModel

    I, H, O = sizes
    cfg = ModelConfig(cell=cell, input_size=I, hidden_size=H, num_layers=layers, output_size=O)
    torch.manual_seed(seed)
    model = RecurrentModel(cfg)
    with torch.no_grad():  # PyTorch's init keeps gates near 0.5; larger weights exercise saturation too
        for p in model.rnn.parameters():
            p.mul_(2.0 if cell != "rnn_relu" else 1.0)
    rng = np.random.default_rng(seed)
    in_mean, in_std = rng.normal(0, 2, I), rng.uniform(0.5, 3, I)
    model.set_normalization(in_mean, in_std, rng.normal(0, 1, O), rng.uniform(0.5, 2, O))
    model.eval()
    seqs = [(in_mean + in_std * rng.standard_normal((T, I))).astype(np.float32) for _ in range(SEQS)]
    calib = [(in_mean + in_std * rng.standard_normal((T, I))).astype(np.float32) for _ in range(8)]
    task = {"kind": "regress", "labels": None, "readout": "every_step"}
    job = ExportJob(
        cfg, model, scheme, task, seqs, calib_seqs=calib, source={"made_by": "devices/arm/prepare.py"}
    )
    return job, seqs


def export_bundle(job, out: Path, formats: list[str], log) -> tuple[list[str], dict]:
    """Export all formats; if that fails, keep those that pass alone. Returns (formats, failures)."""
    from rnnedge.export.exporter import export
    from rnnedge.runtime.errors import RnnEdgeError

    quiet = lambda *a, **k: None  # noqa: E731
    try:
        export(job, formats, out, force=True, log=quiet)
        return formats, {}
    except (RnnEdgeError, NotImplementedError) as e:  # a refusal or an x86 parity failure; bugs propagate
        if formats == ["native"]:
            raise
        first = e
    failed, good = {}, ["native"]
    for fmt in formats[1:]:
        try:
            export(job, ["native", fmt], out, force=True, log=quiet)
            good.append(fmt)
        except (RnnEdgeError, NotImplementedError) as e:
            failed[fmt] = f"{type(e).__name__}: {e}"
    log(f"    {out.name}: exporting all of {formats} failed ({first}); kept {good}")
    export(job, good, out, force=True, log=quiet)
    return good, failed


def recorded_backends(manifest: dict) -> list[str]:
    """The backends the x86 export verified, plus numpy beside native (the same native format: the numpy
    path is the compiled kernel's readable reference, and the ARM run checks both)."""
    verified = sorted(manifest["parity"])
    return sorted(verified + ["numpy"]) if "native" in verified else verified


def record_outputs(job, bundle: Path, seqs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """x, and per verified backend the x86 outputs y_<b> and its export reference ref_<b>."""
    from rnnedge.export import formats
    from rnnedge.export.exporter import default_reference
    from rnnedge.runtime import load

    manifest = json.loads((bundle / "manifest.json").read_text())
    arrays = {"x": np.stack(seqs)}
    record = recorded_backends(manifest)
    for fmt in manifest["artifacts"]:
        f = formats.get(fmt)
        ref = f.reference(job) or default_reference(job)
        for backend in f.verified_on(job) + (["numpy"] if fmt == "native" else []):
            if backend not in record:
                continue
            stream = load(bundle, backend=backend).stream()
            arrays[f"y_{backend}"] = np.stack([stream.run(s) for s in seqs])
            arrays[f"ref_{backend}"] = np.stack([np.asarray(ref(s), np.float32) for s in seqs])
    return arrays


def fingerprint(sets: list[str]) -> str:
    """Sources that shape a bundle or its outputs, and the versions of the libraries that run them."""
    repo = Path(__file__).resolve().parents[2]
    h = hashlib.sha256(repr(sets).encode())
    files = [f for folder in ("runtime", "export", "train") for f in sorted((repo / folder).rglob("*.py"))]
    for f in files + [Path(__file__).resolve()]:
        h.update(f.relative_to(repo).as_posix().encode() + f.read_bytes())
    for pkg in ("torch", "numpy", "onnx", "onnxruntime", "ai-edge-litert", "tflite-runtime", "safetensors"):
        try:
            h.update(f"{pkg}=={metadata.version(pkg)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{pkg} missing".encode())
    return h.hexdigest()


def plan(sets: list[str]) -> list[tuple[str, str, str, int, tuple, str]]:
    """(set, name, cell, layers, (I, H, O), scheme) for every bundle to make."""
    out = []
    if "parity" in sets:
        for cell, layers in PARITY_MODELS:
            for scheme in PARITY_SCHEMES:
                out.append(("parity", f"{cell}-{scheme}", cell, layers, PARITY_SHAPE, scheme))
    if "count" in sets:
        I, O = COUNT_SHAPE
        for cell, h in COUNT_MODELS:
            for scheme in COUNT_SCHEMES:
                out.append(("count", f"{cell}-h{h}-{scheme}", cell, 1, (I, h, O), scheme))
    return out


def prepare(out: Path, sets: list[str], force: bool = False, log=print) -> dict:
    """Make every bundle of `sets` under out/ (skipped when the fingerprint matches). Returns the index."""
    out = Path(out)
    stamp = out / "index.json"
    fp = fingerprint(sets)
    if not force and stamp.is_file():
        index = json.loads(stamp.read_text())
        if index.get("fingerprint") == fp:
            log(f"bundles in {out} are up to date ({len(index['bundles'])} bundles)")
            return index
    shutil.rmtree(out, ignore_errors=True)
    formats = available_formats()
    log(f"exporting to {out} with formats {formats}")
    index = {"fingerprint": fp, "formats": formats, "bundles": {}}
    for k, (group, name, cell, layers, sizes, scheme) in enumerate(plan(sets)):
        job, seqs = make_job(cell, layers, sizes, scheme, seed=k)
        path = out / group / name
        got, failed = export_bundle(job, path, formats, log)
        manifest = json.loads((path / "manifest.json").read_text())
        info = {
            "set": group,
            "formats": got,
            "backends": recorded_backends(manifest),
            "failed_formats": failed,
        }
        if group == "parity":
            np.savez(out / group / f"{name}.npz", **record_outputs(job, path, seqs))
        index["bundles"][f"{group}/{name}"] = info
        log(
            f"  {group}/{name}: {', '.join(info['backends'])}"
            + (f" (failed: {', '.join(failed)})" if failed else "")
        )
    atomic_write_text(stamp, json.dumps(index, indent=1) + "\n")  # written last: a half-made folder is redone
    return index


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rnnedge.devices.arm.prepare", description=__doc__.split("\n")[0]
    )
    p.add_argument("out", type=Path)
    p.add_argument("--set", nargs="+", default=["parity", "count"], choices=["parity", "count"])
    p.add_argument("--force", action="store_true", help="re-export even if nothing changed")
    a = p.parse_args(argv)
    prepare(a.out, a.set, a.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
