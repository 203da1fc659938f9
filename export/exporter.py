"""Export a trained model to a bundle folder: write each format, then verify it against the quantised
reference.

The bundle is built in a temporary folder beside the output and moved into place only when every parity check
passes. A bundle that fails its checks is kept at OUT.rejected/ (with its manifest saying why) and
ExportError is raised: nothing is lost and nothing broken is installed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rnnedge.runtime import load as load_runtime
from rnnedge.runtime.bundle import write_manifest
from rnnedge.runtime.errors import ExportError, MissingDependency
from rnnedge.train.model import ModelConfig, RecurrentModel

from . import formats as registry
from . import quantize
from .format import ExportFormat
from .install import install, recover_stale, temp_folder
from .manifest import base_manifest
from .reference import fold_normalization, reference_model, run_reference
from .verify import check_parity, compare

FORMATS = registry.FORMATS  # name -> ExportFormat (export/formats.py)
__all__ = ["ExportError", "ExportJob", "export", "job_from_run", "base_manifest", "FORMATS"]


@dataclass
class ExportJob:
    """Everything an exporter needs. Sequences are raw (un-normalised) (T, I) float32 arrays."""

    cfg: ModelConfig
    model: RecurrentModel  # the trained float model (normalisation inside)
    scheme: str
    task: dict  # {"kind": classify|regress|forecast, "labels": [...] or None, "readout": last|every_step}
    eval_seqs: list[np.ndarray]  # held-out sequences for parity and accuracy
    eval_targets: list | None = None  # class indices (classify) for accuracy
    calib_seqs: list[np.ndarray] = field(default_factory=list)  # training sequences for static calibration
    options: dict = field(default_factory=dict)  # format options by key, e.g. {"tflite_target": "litert"}
    source: dict = field(default_factory=dict)  # where the model came from (run folder, dataset)
    signal: dict = field(default_factory=dict)  # the manifest's frontend / decisions sections (audio runs)
    # the user's ORIGINAL model (bring-your-own routes, export/import_torch.py, export/import_onnx.py):
    # raw (T, I) -> (T, O) every step, or (O,) last step only; the native bundle is checked against it
    original: Callable[[np.ndarray], np.ndarray] | None = None

    def __post_init__(self):
        quantize.check_scheme(self.scheme)
        sd = self.model.state_dict()
        bad = [k for k, v in sd.items() if v.is_floating_point() and not v.isfinite().all()]
        if bad:  # a diverged training run: nothing finite to export
            names = ", ".join(bad[:4])
            raise ExportError(f"the model has non-finite (NaN/Inf) values in {names}: retrain it")
        registry.check_options(self.options)
        self.folded = fold_normalization(self.model)

    def format_options(self, fmt: ExportFormat):
        """fmt's options dataclass from self.options (read each time: callers may change the dict)."""
        return fmt.parse(self.options)


def job_from_run(
    run_dir, scheme: str, data: str | None = None, options: dict | None = None, max_eval: int | None = None
) -> ExportJob:
    """Build an ExportJob from a training run folder: its best checkpoint, its dataset's test split for parity
    and accuracy, its training split for calibration. `data` overrides the dataset (e.g. a moved .npz
    file)."""
    from rnnedge.train.checkpoint import load_checkpoint
    from rnnedge.train.data import load_dataset
    from rnnedge.train.trainer import calibration_sequences

    model, meta = load_checkpoint(run_dir)
    spec = data or meta["data"]["spec"]
    ds = load_dataset(
        spec, meta["task"]["kind"], seed=meta["train"].get("seed", 0), audio=meta["train"].get("audio")
    )
    if ds.input_size != model.cfg.input_size:
        raise ExportError(
            f"{spec} has {ds.input_size} input channels but the model takes {model.cfg.input_size}"
        )
    test = ds.test.subset(slice(0, max_eval)) if max_eval else ds.test
    return ExportJob(
        cfg=model.cfg,
        model=model,
        scheme=scheme,
        task=meta["task"],
        eval_seqs=test.sequences(),
        eval_targets=list(test.y) if ds.task == "classify" else None,
        calib_seqs=calibration_sequences(ds.train, ds.task, meta["train"].get("scale_augment", 0.0)),
        options=options or {},
        signal={k: meta[k] for k in ("frontend", "decisions") if meta.get(k) is not None},
        source={
            "run": str(Path(run_dir).resolve()),
            "data": spec,
            "dataset": meta["data"].get("description", ""),
        },
    )


def export(
    job: ExportJob, formats: list[str], out: str | os.PathLike, force: bool = False, log=print
) -> Path:
    """Write, verify and install a bundle at `out`. Returns its path; raises ExportError if parity fails."""
    out = Path(out)
    fmts = [registry.get(name) for name in dict.fromkeys(["native", *formats])]
    recover_stale(out, log)  # a killed earlier run may have left OUT half-installed: repair it first
    if out.exists() and not force:
        raise ExportError(f"{out} already exists: choose another --out or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(out, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = base_manifest(job)
        for fmt in fmts:
            log(f"  writing {fmt.name} ({job.scheme})")
            manifest["artifacts"][fmt.name] = fmt.write(job, tmp)
        write_manifest(tmp, manifest)
        manifest["evaluation"] = evaluate_reference(job)
        failed = []
        for fmt in fmts:
            ref = fmt.reference(job) or default_reference(job)
            for backend in fmt.verified_on(job):
                res = verify_backend(tmp, backend, ref, job, relative_bound(fmt, job, backend))
                manifest["parity"][backend] = res
                log(f"  parity {backend:15s} {summarize(res)}")
                if not res["ok"]:
                    failed.append(backend)
                warn_accuracy_drop(backend, res, manifest["evaluation"], log)
        if job.original is not None:
            res = manifest["parity"]["original"] = verify_original(tmp, job)
            log(f"  parity {'original':15s} {summarize(res)} (native bundle vs the model as given)")
            if not res["ok"] and res["gating"]:
                failed.append("original")
            elif not res["ok"]:
                log(f"  WARNING: {job.scheme} is outside {res['tolerance']} of the original model")
        write_manifest(tmp, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if failed:
        rejected = out.parent / f"{out.name}.rejected"
        shutil.rmtree(rejected, ignore_errors=True)
        os.replace(tmp, rejected)
        hints = [h for h in (failure_hint(fmts, job, b, manifest["parity"][b]) for b in failed) if h]
        raise ExportError(
            f"parity check failed on {', '.join(failed)}: "
            + "; ".join(f"{b}: {summarize(manifest['parity'][b])}" for b in failed)
            + "".join(f". {h}" for h in hints)
            + f". Nothing installed at {out}; the rejected bundle is at {rejected}"
        )
    install(tmp, out)
    return out


def verify_backend(folder: Path, backend: str, reference, job: ExportJob, bound: float | None = None) -> dict:
    try:
        model = load_runtime(folder, backend=backend)
    except MissingDependency as e:
        raise ExportError(f"cannot verify the export on {backend}: {e}") from e
    exact = job.scheme in quantize.WEIGHT_ONLY
    kw = {} if bound is None else {"max_rel_error": bound}
    return check_parity(model, reference, job.eval_seqs, job.task["kind"], exact, job.eval_targets, **kw)


def relative_bound(fmt, job: ExportJob, backend: str) -> float | None:
    """A format's own error bound for an interpreter (relative to the output range); None = the default."""
    return fmt.relative_bound(job, backend) if fmt.relative_bound else None


def failure_hint(fmts: list, job: ExportJob, backend: str, res: dict) -> str | None:
    """What to do about a failed backend, if its format knows (e.g. tflite-runtime's int8-static rounding)."""
    for fmt in fmts:
        if fmt.failure_hint and backend in fmt.verified_on(job):
            return fmt.failure_hint(job, backend, res)
    return None


def verify_original(folder: Path, job: ExportJob) -> dict:
    """The native bundle against the user's original model. fp32 must match it like the reference
    (gating); other schemes differ from it by their own rounding, so the result is recorded and warned
    about (their gate is the quantised reference)."""
    from .verify import ATOL, MAX_REL_ERROR, RTOL

    stream = load_runtime(folder, backend="native").stream()
    max_err = max_excess = 0.0
    lo, hi, agree = np.inf, -np.inf, 0
    for seq in job.eval_seqs:
        ref = np.asarray(job.original(seq), np.float32)
        out = stream.run(seq)
        out = out if ref.ndim == 2 else out[-1]  # a many-to-one original returns its last step only
        err = np.abs(out - ref)
        max_err = max(max_err, float(err.max()))
        max_excess = max(max_excess, float((err - (ATOL + RTOL * np.abs(ref))).max()))
        lo, hi = min(lo, float(ref.min())), max(hi, float(ref.max()))
        agree += int(
            np.argmax(out.reshape(-1, out.shape[-1])[-1]) == np.argmax(ref.reshape(-1, ref.shape[-1])[-1])
        )
    n = len(job.eval_seqs)
    res = {"sequences": n, "max_abs_error": max_err, "relative_error": max_err / max(hi - lo, 1e-6)}
    if job.task["kind"] == "classify":
        res["agreement"] = agree / n
    res["gating"] = job.scheme == "fp32"
    if res["gating"]:
        res["tolerance"], res["ok"] = f"|y-original| <= {ATOL:g} + {RTOL:g}*|original|", max_excess <= 0.0
    else:
        res["tolerance"] = f"max |y-original| <= {MAX_REL_ERROR:.0%} of the output range"
        res["ok"] = bool(res["relative_error"] <= MAX_REL_ERROR)
    return res


def warn_accuracy_drop(backend: str, res: dict, evaluation: dict, log, points: float = 0.02) -> None:
    """Parity says the backend computes the scheme; this says whether the scheme itself costs accuracy."""
    if "accuracy" in res and "float_accuracy" in evaluation:
        drop = evaluation["float_accuracy"] - res["accuracy"]
        if drop > points:
            log(
                f"  WARNING: {backend} loses {drop:.1%} test accuracy against the float model: consider a "
                "milder scheme (e.g. int8-dynamic, or --tflite-activations int16 for int8-static)"
            )


def default_reference(job: ExportJob):
    ref = reference_model(job.cfg, job.folded, job.scheme)
    return lambda seq: run_reference(ref, seq)


def evaluate_reference(job: ExportJob) -> dict:
    """Accuracy (classify) or error of the float model and of the scheme's reference on the held-out data."""
    float_model = job.model.eval()
    ref = reference_model(job.cfg, job.folded, job.scheme)
    pairs = ((run_reference(ref, s), run_reference(float_model, s)) for s in job.eval_seqs)
    classify = job.task["kind"] == "classify" and job.eval_targets is not None
    res = compare(pairs, classify, job.eval_targets if classify else None)
    if classify:
        return {"sequences": res["sequences"], "float_accuracy": res["reference_accuracy"],
                "reference_accuracy": res["accuracy"]}  # fmt: skip
    return {"sequences": res["sequences"], "reference_vs_float_max_abs": res["max_abs_error"]}


def summarize(res: dict) -> str:
    parts = ["ok" if res["ok"] else "FAILED", f"max|err|={res['max_abs_error']:.2e}"]
    if "agreement" in res:
        parts.append(f"agree={res['agreement']:.1%}")
    if "accuracy" in res:
        parts.append(f"acc={res['accuracy']:.1%}")
    if not res.get("stream_equals_run", True):
        parts.append("stream != run")
    return " ".join(parts)
