"""Run folders and checkpoints: one atomic commit per epoch, runs killed with a real SIGKILL resume to the
same result as an uninterrupted run, --force never loses the previous run, damaged checkpoints are refused."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from rnnedge.runtime.errors import RnnEdgeError
from rnnedge.train.checkpoint import CheckpointError, load_checkpoint, read_record, staging_folder
from rnnedge.train.trainer import TrainConfig, TrainError, resume, train
from safetensors.torch import load as load_tensors
from safetensors.torch import save

QUIET = dict(progress=False, log=lambda *a: None)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny forecasting set (24 noisy 2-channel waves of 24 steps): a run takes about a second."""
    rng = np.random.default_rng(0)
    t = np.arange(24)[None, :, None] * 0.3 + rng.uniform(0, 6, (24, 1, 1))
    X = np.concatenate([np.sin(t), np.cos(1.3 * t)], -1) + 0.05 * rng.standard_normal((24, 24, 2))
    path = tmp_path_factory.mktemp("data") / "waves.npz"
    np.savez(path, X=X.astype(np.float32))
    return path


def config(data: Path, **kw) -> TrainConfig:
    # dropout between 2 layers: the resumed run must also restore torch's global RNG
    base = dict(data=str(data), cell="lstm", hidden_size=8, num_layers=2, dropout=0.2, epochs=8, batch_size=4)
    return TrainConfig(**{**base, "threads": 1, **kw})


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run every killed-and-resumed run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    model, metrics = train(config(data), out, **QUIET)
    return out, model, metrics


def same_run(run: Path, reference) -> float:
    """Asserts the run ended where the reference did; returns the max |weight difference| (measured)."""
    ref_dir, ref_model, ref_metrics = reference
    model, _ = load_checkpoint(run)
    diff = max(
        float((a - b).abs().max())
        for a, b in zip(model.state_dict().values(), ref_model.state_dict().values())
    )
    metrics = json.loads((run / "metrics.json").read_text())
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(metrics["history"]) == strip(ref_metrics["history"])
    assert metrics["test"] == ref_metrics["test"] and metrics["best_epoch"] == ref_metrics["best_epoch"]
    assert diff == 0.0, f"resumed weights differ from the uninterrupted run by {diff}"
    return diff


# A child that trains and kills itself (SIGKILL, no cleanup of any kind) at one point of the run.
KILL_AT = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    from rnnedge.train import checkpoint, trainer

    cfg, out, point, n, force = json.loads(sys.argv[1]), *sys.argv[2:4], int(sys.argv[4]), sys.argv[5]
    calls = [0]
    def at_call(fn, before=True):
        def wrapped(*a, **k):
            calls[0] += 1
            if before and calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            r = fn(*a, **k)
            if not before and calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return r
        return wrapped
    if point == "before-commit":    # the epoch's payloads are written, its record is not
        trainer.commit = at_call(trainer.commit)
    elif point == "after-commit":   # the record is replaced, the previous payloads not yet deleted
        checkpoint.atomic_write_text = at_call(checkpoint.atomic_write_text, before=False)
    elif point == "mid-epoch":      # inside an epoch, between optimizer steps
        torch.nn.utils.clip_grad_norm_ = at_call(torch.nn.utils.clip_grad_norm_)
    elif point == "final":          # metrics.json written, the final commit not
        trainer.write_result = at_call(trainer.write_result, before=False)
    trainer.train(trainer.TrainConfig(**cfg), out, force=force == "1", progress=False)
    """
)


def killed_run(cfg: TrainConfig, out: Path, point: str, n: int, force=False) -> None:
    r = subprocess.run(
        [sys.executable, "-c", KILL_AT, json.dumps(asdict(cfg)), str(out), point, str(n), str(int(force))],
        capture_output=True,
        timeout=300,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()[-2000:]


@pytest.mark.parametrize(
    "point, n", [("before-commit", 3), ("after-commit", 5), ("mid-epoch", 20), ("final", 1)]
)
def test_sigkilled_run_resumes_to_the_uninterrupted_result(data, reference, tmp_path, point, n):
    out = tmp_path / "run"
    killed_run(config(data), out, point, n)
    record = read_record(out)  # the record of a killed run is always complete and consistent
    assert not record["finished"]
    load_checkpoint(out)  # its best checkpoint so far is usable (export works on it) before resuming
    resume(out, **QUIET)
    same_run(out, reference)
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert names == {"checkpoint.json", read_record(out)["best"]["file"], "metrics.json", "curves.png"}


def test_resume_from_the_cli_after_a_kill_at_a_random_moment(data, reference, tmp_path):
    """A real training process, killed from outside at whatever point it has reached, then resumed by
    `rnnedge train --resume RUN` (a subprocess)."""
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "rnnedge"]
    args = ["train", "--data", str(data), "--cell", "lstm", "--hidden", "8", "--layers", "2"]
    args += ["--dropout", "0.2", "--epochs", "8", "--batch-size", "4", "--threads", "1", "--out", str(out)]
    p = subprocess.Popen([*cli, *args, "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "checkpoint.json").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # somewhere in a later epoch (or a commit)
    p.send_signal(signal.SIGKILL)
    p.wait()
    if read_record(out)["finished"]:
        pytest.skip("the run finished before the kill (a very fast machine)")
    r = subprocess.run([*cli, "train", "--resume", str(out), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    same_run(out, reference)
    r = subprocess.run([*cli, "train", "--resume", str(out)], capture_output=True, text=True)
    assert r.returncode == 1 and "nothing to resume" in r.stderr and "Traceback" not in r.stderr


def identity(run: Path) -> tuple:
    return tuple(sorted((p.name, p.read_bytes()) for p in run.iterdir() if p.is_file() and p.name != ".lock"))


def test_force_keeps_the_previous_run_until_the_new_one_finishes(data, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    before = identity(out)
    killed_run(config(data, seed=1), out, "after-commit", 4, force=True)  # the new run dies in epoch 4
    assert identity(out) == before  # the previous run is untouched, loadable, its metrics its own
    load_checkpoint(out)
    staged = staging_folder(out)
    assert read_record(staged)["resume"]["state"]["epoch"] == 4
    with pytest.raises(TrainError, match="--force"):
        train(config(data), out, **QUIET)
    resume(out, **QUIET)  # continues the new run beside it, then installs it in one exchange
    assert not staged.exists()
    ref_seed1 = tmp_path / "seed1"
    model1, metrics1 = train(config(data, seed=1), ref_seed1, **QUIET)
    same_run(out, (ref_seed1, model1, metrics1))
    record = read_record(out)
    metrics = (out / "metrics.json").read_bytes()  # the results beside the weights are the new run's
    assert hashlib.sha256(metrics).hexdigest() == record["results"]["metrics.json"]["sha256"]
    assert json.loads(metrics)["history"] != reference[2]["history"]


def test_force_that_fails_leaves_the_previous_run(data, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    before = identity(out)
    with pytest.raises(RnnEdgeError):
        train(config(tmp_path / "missing.npz"), out, force=True, **QUIET)
    assert identity(out) == before
    train(config(data, seed=1, epochs=2), out, force=True, **QUIET)  # a finished one replaces it
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    assert not staging_folder(out).exists()


# ----------------------------------------------------------------------------
# damaged checkpoints


def reseal(run: Path, tensors: dict) -> None:
    """Replace the best weights with `tensors` and rewrite the record to match (a consistent forgery)."""
    record = json.loads((run / "checkpoint.json").read_text())
    data = save(tensors)
    (run / record["best"]["file"]).write_bytes(data)
    record["best"] |= {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (run / "checkpoint.json").write_text(json.dumps(record))


def edit_record(run: Path, fn) -> None:
    record = json.loads((run / "checkpoint.json").read_text())
    fn(record)
    (run / "checkpoint.json").write_text(json.dumps(record))


def weights_of(run: Path) -> dict:
    return load_tensors((run / read_record(run)["best"]["file"]).read_bytes())


def _nan(run):
    w = weights_of(run)
    w["head.bias"][0] = float("nan")
    reseal(run, w)


def _wrong_shape(run):
    w = weights_of(run)
    w["head.weight"] = torch.zeros(3, 8)
    reseal(run, w)


def _extra_tensor(run):
    reseal(run, {**weights_of(run), "rnn.weight_ih_l9": torch.zeros(1)})


def _zero_std(run):
    w = weights_of(run)
    w["in_std"][0] = 0.0
    reseal(run, w)


def _flip(run):
    p = run / read_record(run)["best"]["file"]
    b = bytearray(p.read_bytes())
    b[-5] ^= 0x10
    p.write_bytes(bytes(b))


DAMAGE = {
    "flipped weight byte": (_flip, "sha256"),
    "truncated weights": (lambda r: (r / read_record(r)["best"]["file"]).write_bytes(b"\0" * 9), "bytes"),
    "weights deleted": (lambda r: (r / read_record(r)["best"]["file"]).unlink(), "missing"),
    "NaN weight, re-sealed": (_nan, "non-finite"),
    "wrong shape, re-sealed": (_wrong_shape, "do not match"),
    "extra tensor, re-sealed": (_extra_tensor, "do not match"),
    "zero std, re-sealed": (_zero_std, "std"),
    "record not JSON": (lambda r: (r / "checkpoint.json").write_bytes(b'{"format": "rn'), "not valid JSON"),
    "record deleted": (lambda r: (r / "checkpoint.json").unlink(), "not a training run"),
    "path outside": (lambda r: edit_record(r, lambda m: m["best"].update(file="../x.safetensors")), "file"),
    "hidden 1e9": (
        lambda r: edit_record(r, lambda m: m["config"]["model"].update(hidden_size=10**9)),
        "hidden",
    ),
    "layers as text": (
        lambda r: edit_record(r, lambda m: m["config"]["model"].update(num_layers="2")),
        "layers",
    ),
    "no best": (lambda r: edit_record(r, lambda m: m.pop("best")), "best"),
    "version 2": (lambda r: edit_record(r, lambda m: m.update(version=2)), "version"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoints_are_refused_with_a_clear_error(reference, tmp_path, case):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    damage, words = DAMAGE[case]
    damage(run)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(run)


def test_damaged_resume_state_is_refused(data, tmp_path):
    out = tmp_path / "run"
    killed_run(config(data), out, "after-commit", 3)
    record = read_record(out)
    p = out / record["resume"]["file"]
    t = load_tensors(p.read_bytes())
    t["opt.0.exp_avg"] = torch.zeros(1)  # a consistent forgery with the wrong optimizer shapes
    data_ = save(t)
    p.write_bytes(data_)
    edit_record(out, lambda m: m["resume"].update(sha256=hashlib.sha256(data_).hexdigest(), bytes=len(data_)))
    with pytest.raises(CheckpointError, match="resume state does not match"):
        resume(out, **QUIET)


def test_old_run_folders_are_named_as_such(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="older rnnedge"):
        load_checkpoint(tmp_path)


def test_cli_reports_a_damaged_run_in_one_line(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    _flip(run)
    r = subprocess.run(
        [sys.executable, "-m", "rnnedge", "export", str(run), "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "sha256" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
