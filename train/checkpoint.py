"""Run folders and checkpoints: every file is named by one commit record, written last and atomically.

A run folder:

    checkpoint.json              the commit: config, history, and for each file below its name, sha256 and
                                 size; replaced atomically after the files it names are complete
    model-<sha12>.safetensors    the best weights (state dict, normalisation buffers included)
    resume-<sha12>.safetensors   the end of the last finished epoch: model, optimizer and RNG states
    metrics.json, curves.png     written when the run finishes, named by its final commit

Weight files are named by their content, so a new checkpoint never overwrites the one the current record
names: a run killed at any moment has a record that names complete, checksummed files (files no record
names are deleted at the next commit). Everything read back is checked (sizes before reading, sha256,
tensor names and shapes against the config, finite values) and any failure is a CheckpointError. Never
pickle.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from rnnedge.runtime.errors import BundleError, CheckpointError
from rnnedge.runtime.fileio import atomic_write_bytes, atomic_write_text
from safetensors.torch import load as load_tensors
from safetensors.torch import save

from .model import CELLS, ModelConfig, RecurrentModel

RECORD = "checkpoint.json"
FORMAT, VERSION = "rnnedge-run", 1
# content-addressed payloads; the record may name nothing else (no paths, no other files)
PAYLOAD = re.compile(r"(model|resume)-[0-9a-f]{12}\.safetensors")
RESULTS = ("metrics.json", "curves.png")
MAX_RECORD_BYTES = 64 << 20
MAX_SIZE = 4096  # input/hidden/output sizes a checkpoint may declare
MAX_FILE_BYTES = 1 << 30  # any one payload (the bundle reader's default limit)


# ----------------------------------------------------------------------------
# writing


def write_payload(run_dir: Path, kind: str, tensors: dict[str, torch.Tensor]) -> dict:
    """Write `kind-<sha12>.safetensors` (atomically) and return its record entry {file, sha256, bytes}."""
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    digest = hashlib.sha256(data).hexdigest()
    name = f"{kind}-{digest[:12]}.safetensors"
    atomic_write_bytes(run_dir / name, data)
    return {"file": name, "sha256": digest, "bytes": len(data)}


def write_result(run_dir: Path, name: str, data: bytes) -> dict:
    atomic_write_bytes(run_dir / name, data)
    return {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def result_entry(run_dir: Path, name: str) -> dict:
    """The record entry of a result another module wrote (curves.png)."""
    data = (run_dir / name).read_bytes()
    return {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def commit(run_dir: Path, record: dict) -> None:
    """Replace checkpoint.json atomically, then delete payloads and results the new record does not name
    (a previous checkpoint's, or a killed run's orphans)."""
    record = {"format": FORMAT, "version": VERSION, **record}
    atomic_write_text(run_dir / RECORD, json.dumps(record, indent=1) + "\n")
    named = {e["file"] for e in _entries(record)}
    for p in run_dir.iterdir():
        if (PAYLOAD.fullmatch(p.name) or p.name in RESULTS) and p.name not in named:
            p.unlink(missing_ok=True)


def _entries(record: dict) -> list[dict]:
    out = [record[k] for k in ("best", "resume") if record.get(k)]
    return out + list((record.get("results") or {}).values())


# ----------------------------------------------------------------------------
# reading: everything checked before use


def has_run(run_dir: Path) -> bool:
    """Whether run_dir holds a run (this format, or an older one without a record)."""
    return (run_dir / RECORD).exists() or (run_dir / "config.json").exists()


def read_record(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / RECORD
    if not path.exists():
        old = (run_dir / "config.json").exists()
        raise CheckpointError(
            f"{run_dir} is not a training run folder (no {RECORD})"
            + ("; it is from an older rnnedge without checksums: train it again" if old else "")
        )
    from rnnedge.runtime.bundle import read_file  # the bounded reader (loaded only when a run is read)

    try:
        record = json.loads(read_file(path, MAX_RECORD_BYTES))
    except BundleError as e:
        raise CheckpointError(str(e)) from None
    except (ValueError, RecursionError) as e:
        msg = f"{path} is not valid JSON ({str(e)[:80]}): the run folder is damaged"
        raise CheckpointError(msg) from None
    _check_record(record, path)
    return record


def _check_record(r, path: Path) -> None:
    def bad(field: str, msg: str):
        raise CheckpointError(f"{path}: {field} {msg} (the run folder is damaged or not from rnnedge)")

    if not isinstance(r, dict) or r.get("format") != FORMAT:
        bad("format", f"must be {FORMAT!r}")
    if r.get("version") != VERSION:
        bad("version", f"must be {VERSION} (this rnnedge reads version {VERSION})")
    cfg = r.get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        bad("config.model", "is missing")
    for key in ("train", "data", "task"):
        if not isinstance(cfg.get(key), dict):
            bad(f"config.{key}", "must be an object")
    _check_model(cfg["model"], bad)
    if not isinstance(r.get("history"), list) or not all(isinstance(h, dict) for h in r["history"]):
        bad("history", "must be a list of objects")
    if not isinstance(r.get("finished"), bool):
        bad("finished", "must be true or false")
    for key in ("best", "resume"):
        if r.get(key) is not None or key == "best":
            _check_entry(r.get(key), key, PAYLOAD, bad)
    if r.get("resume") is not None:
        s = r["resume"].get("state")
        if not isinstance(s, dict):
            bad("resume.state", "must be an object")
        for k in ("epoch", "best_epoch"):
            if type(s.get(k)) is not int or not 0 <= s[k] <= 10**9:
                bad(f"resume.state.{k}", "must be a non-negative integer")
    results = r.get("results") or {}
    if not isinstance(results, dict) or any(k not in RESULTS for k in results):
        bad("results", f"may only name {', '.join(RESULTS)}")
    for k, e in results.items():
        _check_entry(e, f"results.{k}", re.compile(re.escape(k)), bad)


def _check_model(m: dict, bad) -> None:
    if m.get("cell") not in CELLS:
        bad("config.model.cell", f"must be one of {', '.join(CELLS)}")
    for k in ("input_size", "hidden_size", "output_size"):
        if type(m.get(k)) is not int or not 1 <= m[k] <= MAX_SIZE:
            bad(f"config.model.{k}", f"must be an integer 1..{MAX_SIZE}")
    if type(m.get("num_layers")) is not int or not 1 <= m["num_layers"] <= 3:
        bad("config.model.num_layers", "must be an integer 1..3")
    d = m.get("dropout", 0.0)
    if type(d) not in (int, float) or not 0 <= d < 1:
        bad("config.model.dropout", "must be a number in [0, 1)")
    P = m.get("proj_size", 0)
    if type(P) is not int or not (P == 0 or (m["cell"] == "lstm" and 1 <= P < m["hidden_size"])):
        bad("config.model.proj_size", "must be 0, or 1..hidden_size-1 for an LSTM")
    if set(m) - {"cell", "input_size", "hidden_size", "num_layers", "output_size", "dropout", "proj_size"}:
        bad("config.model", "has unknown keys")


def _check_entry(e, field: str, name: re.Pattern, bad) -> None:
    if not isinstance(e, dict):
        bad(field, "is missing")
    if not isinstance(e.get("file"), str) or not name.fullmatch(e["file"]):
        bad(f"{field}.file", "is not a file name this format writes")
    if not isinstance(e.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", e["sha256"]):
        bad(f"{field}.sha256", "must be 64 hex digits")
    if type(e.get("bytes")) is not int or not 0 <= e["bytes"] <= MAX_FILE_BYTES:
        bad(f"{field}.bytes", f"must be an integer 0..{MAX_FILE_BYTES}")


def read_payload(run_dir: Path, entry: dict, expect: dict[str, tuple] | None = None) -> dict:
    """The tensors of a record entry: size checked before reading, sha256, then (expect: {name: shape})
    exactly these names and shapes, float32, all finite."""
    from rnnedge.runtime.bundle import read_file, safetensors_header

    path = run_dir / entry["file"]
    try:
        data = read_file(path, MAX_FILE_BYTES, entry["bytes"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckpointError(
                f"{path} does not match its sha256 in {RECORD}: the checkpoint is corrupted"
            )
        header = safetensors_header(data, path)
    except BundleError as e:
        raise CheckpointError(f"{e} (checkpoint in {run_dir})") from None
    if expect is not None:
        got = {k: tuple(v[1]) for k, v in header.items()}
        if got != expect:
            diff = sorted(set(got.items()) ^ set(expect.items()))[:3]
            raise CheckpointError(
                f"{path}: tensors do not match the model in {RECORD} (first differences: {diff})"
            )
    tensors = load_tensors(data)
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: tensor {k} has non-finite values (NaN/Inf)")
    return tensors


def model_shapes(cfg: ModelConfig) -> dict[str, tuple]:
    """Names and shapes of a model's state dict, computed without allocating it."""
    g, S = {"lstm": 4, "gru": 3}.get(cfg.cell, 1) * cfg.hidden_size, cfg.state_size
    shapes = {}
    for k in range(cfg.num_layers):
        i = cfg.input_size if k == 0 else S
        shapes |= {
            f"rnn.weight_ih_l{k}": (g, i),
            f"rnn.weight_hh_l{k}": (g, S),
            f"rnn.bias_ih_l{k}": (g,),
            f"rnn.bias_hh_l{k}": (g,),
        }
        if cfg.proj_size:
            shapes[f"rnn.weight_hr_l{k}"] = (cfg.proj_size, cfg.hidden_size)
    shapes |= {"head.weight": (cfg.output_size, S), "head.bias": (cfg.output_size,)}
    shapes |= {"in_mean": (cfg.input_size,), "in_std": (cfg.input_size,)}
    return shapes | {"out_mean": (cfg.output_size,), "out_std": (cfg.output_size,)}


def load_checkpoint(run_dir: str | Path) -> tuple[RecurrentModel, dict]:
    """The best checkpoint of a run folder (finished or not): (model in eval mode, config dict)."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    cfg = ModelConfig(**record["config"]["model"])
    sd = read_payload(run_dir, record["best"], model_shapes(cfg))
    if not all(bool((sd[k] > 0).all()) for k in ("in_std", "out_std")):
        raise CheckpointError(f"{run_dir / record['best']['file']}: normalisation std must be > 0")
    model = RecurrentModel(cfg)
    model.load_state_dict(sd)
    return model.eval(), record["config"]


# ----------------------------------------------------------------------------
# the resume state: everything the next epoch depends on


def training_state(model, opt, sched, gen: torch.Generator) -> tuple[dict, dict]:
    """-> (tensors, JSON scalars): model, optimizer and RNG states at the end of an epoch."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        tensors |= {f"opt.{i}.{k}": v for k, v in st.items()}
    # RNG states are bytes, stored as float32 (exact for 0..255; the safetensors reader takes F32/F16/I8)
    tensors["rng.torch"] = torch.get_rng_state().to(torch.float32)
    tensors["rng.gen"] = gen.get_state().to(torch.float32)
    scalars = {
        "param_groups": sd["param_groups"],
        "schedule": sched.state_dict() if sched is not None else None,
    }
    return tensors, scalars


def restore_training_state(run_dir: Path, record: dict, model, opt, sched, gen: torch.Generator) -> dict:
    """Load the resume entry of `record` into freshly built model/opt/sched/gen; returns resume.state."""
    entry = record["resume"]
    shapes = {f"model.{k}": v for k, v in model_shapes(model.cfg).items()}
    params = [p for g in opt.param_groups for p in g["params"]]
    rng = {"rng.torch": tuple(torch.get_rng_state().shape), "rng.gen": tuple(gen.get_state().shape)}
    t = read_payload(run_dir, entry)
    got = {k: tuple(v.shape) for k, v in t.items()}
    opt_keys = {k for k in got if k.startswith("opt.")}
    expect = shapes | rng
    for k in opt_keys:  # opt.<param index>.<step|exp_avg|exp_avg_sq|...>
        _, i, name = k.split(".", 2)
        if not i.isdigit() or int(i) >= len(params):
            raise CheckpointError(f"{run_dir / entry['file']}: unknown optimizer tensor {k}")
        expect[k] = () if name == "step" else tuple(params[int(i)].shape)
    if got != expect:
        diff = sorted(set(got.items()) ^ set(expect.items()))[:3]
        raise CheckpointError(f"{run_dir / entry['file']}: the resume state does not match the model: {diff}")
    s = entry["state"]
    try:
        model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
        state = {}
        for k in opt_keys:
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = t[k]
        opt.load_state_dict({"state": state, "param_groups": s["param_groups"]})
        if sched is not None:
            sched.load_state_dict(s["schedule"])
        rngs = [t[k] for k in ("rng.torch", "rng.gen")]
        if any(bool(((r < 0) | (r > 255) | (r != r.round())).any()) for r in rngs):
            raise ValueError("RNG states must be bytes 0..255")
        torch.set_rng_state(rngs[0].to(torch.uint8))
        gen.set_state(rngs[1].to(torch.uint8))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run_dir / RECORD}: cannot restore the training state: {e}") from None
    return s


# ----------------------------------------------------------------------------
# the run folder: where a run trains, who owns it


def staging_folder(out: Path) -> Path:
    """Where `train --force` trains while the previous run stays at `out` (installed when it finishes)."""
    return out.parent / f".{out.name}.next"


class RunLock:
    """An exclusive lock on a run folder for the length of a training run (released by the kernel if the
    process dies, so a killed run never leaves a stale lock)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self):
        import fcntl
        import os

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise CheckpointError(f"another rnnedge train is writing {self.path.parent}") from None
        return self

    def __exit__(self, *exc):
        import os

        os.close(self.fd)
