"""Training: Adam, full or truncated BPTT with carried state, gradient-norm clipping, early stopping.

A run folder (train/checkpoint.py) holds one commit record, checkpoint.json, naming every file by sha256:
the best checkpoint (model-<sha>.safetensors), the resume state of the last finished epoch (resume-<sha>),
and when the run has finished metrics.json (per-epoch history and the final test score) and curves.png
(loss, metric, gradient norm). Each epoch ends with one atomic commit, so a killed run resumes
(`resume()`) from its last finished epoch and ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from rnnedge.export.install import install
from rnnedge.runtime.errors import TrainError
from torch import nn

from rnnedge.progress import Progress

from .checkpoint import (
    RECORD,
    RunLock,
    commit,
    has_run,
    load_checkpoint,
    read_record,
    restore_training_state,
    result_entry,
    staging_folder,
    training_state,
    write_payload,
    write_result,
)
from .data import BUILTIN, Dataset, Split, load_dataset
from .model import ModelConfig, RecurrentModel


@dataclass
class TrainConfig:
    data: str = "basic_motions"  # built-in name or path to a .npz file
    task: str | None = None  # classify | regress | forecast (default: from the data)
    cell: str = "lstm"
    hidden_size: int = 32
    num_layers: int = 1
    dropout: float = 0.0
    epochs: int = 100
    batch_size: int = 8
    lr: float = 5e-3
    tbptt: int = 0  # truncated BPTT window in steps (0 = full BPTT)
    clip: float = 1.0  # max gradient norm (0 = no clipping)
    # epochs without validation improvement before stopping; only with a validation split: without one the
    # full cosine schedule runs (stopping on training loss ended runs inside a recoverable loss spike, at
    # 87.5 % instead of 97.5 %, seed 0 on a Zen 3 box)
    patience: int = 25
    # 0 = no validation split: train on every training sequence for `epochs` (the checkpoint is chosen by
    # training loss). BasicMotions has 40 training sequences; a 20 % split is 8, and early stopping on 8
    # sequences picked epochs by noise (75-97.5 % test accuracy across seeds and CPUs, BENCHMARKS.md).
    val_fraction: float = 0.0
    seed: int = 0
    threads: int = 2
    schedule: str = "cosine"  # learning rate over `epochs`: constant | cosine (down to lr/100)
    weight_decay: float = 0.0  # decoupled (AdamW) weight decay; 0 = plain Adam
    # classify: the label is also trained on the last `tail` fraction of each sequence's steps (the readout
    # stays the last step); more gradient signal per sequence, and a decision that is stable near the end
    tail: float = 0.2
    audio: dict | None = None  # a WAV-folder dataset: AudioConfig fields (train/audio.py); None = defaults
    # forecast: each training sequence (inputs and targets alike) is scaled by exp(u), u ~ U(-a, a), every
    # epoch, so the model sees levels beyond the training period's: a trending series (airline) leaves that
    # range in the test period. Airline, unseen months: RMSE 21.2 with 0.3 (seasonal-naive 42.0). 0 = off
    scale_augment: float = 0.3
    # train on long streams of the training sequences end to end, the state carried across windows of
    # `tbptt` steps and across sequences, never reset (train/stream_train.py)
    stream: bool = False
    nproc: int = 1  # data-parallel processes (train/distributed.py); results as one process


# ----------------------------------------------------------------------------
# data preparation


def split_validation(train: Split, task: str, fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded split of the training data; stratified by class for classification."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(train.y == c) for c in np.unique(train.y)]
        if task == "classify"
        else [np.arange(len(train))]
    )
    val = []
    for g in groups:
        g = rng.permutation(g)
        val.extend(g[: max(1, int(round(len(g) * fraction)))] if fraction > 0 else [])
    val = np.sort(np.array(val, np.int64))
    fit = np.setdiff1d(np.arange(len(train)), val)
    if len(fit) == 0:
        raise TrainError("not enough training sequences to hold out a validation split; lower --val-fraction")
    return train.subset(fit), train.subset(val)


def valid_steps(X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T, C) padded -> (sum lengths, C): only the real samples."""
    return np.concatenate([x[:n] for x, n in zip(X, lengths)])


def normalization(fit: Split, task: str) -> tuple:
    """Per-channel mean/std of the training split's real steps (inputs, and regression targets)."""
    xs = valid_steps(fit.X, fit.lengths)
    in_mean, in_std = xs.mean(0), np.maximum(xs.std(0), 1e-6)
    if task == "classify":
        return in_mean, in_std, None, None
    ys = valid_steps(fit.y, fit.lengths)
    return in_mean, in_std, ys.mean(0), np.maximum(ys.std(0), 1e-6)


# ----------------------------------------------------------------------------
# loss over one window of steps (the whole sequence for full BPTT)


def window_loss(model, task, xb, yb, lb, state, s, e, n_norm, tail=0.0):
    """Forward steps [s, e) from `state`; returns (loss or None, next state). xb (B, T, I), lb (B,).

    Classification reads the label at each sequence's last step; with `tail` > 0 the loss also covers the
    last `tail` fraction of its steps (each sequence's labelled steps weigh 1 in total)."""
    y, state = model(xb[:, s:e], state)  # (B, K, O)
    if task == "classify":
        last = lb - 1
        if tail > 0:
            first = last - torch.floor(tail * lb.float()).long().clamp(min=0)  # labelled steps (first, last]
            first = torch.minimum(first, last - 1)
            t = torch.arange(s, e)[None, :]
            w = ((t > first[:, None]) & (t <= last[:, None])).float() / (last - first)[:, None].float()
            if w.sum() == 0:
                return None, state
            target = yb[:, None].expand(-1, e - s)
            ce = nn.functional.cross_entropy(y.transpose(1, 2), target, reduction="none")  # (B, K)
            return (ce * w).sum() / n_norm, state
        sel = (last >= s) & (last < e)  # sequences that end inside this window
        if not sel.any():
            return None, state
        logits = y[sel, last[sel] - s]  # (n, O)
        return nn.functional.cross_entropy(logits, yb[sel], reduction="sum") / n_norm, state
    mask = (torch.arange(s, e)[None, :] < lb[:, None]).float()  # (B, K)
    err = (((y - yb[:, s:e]) / model.out_std) ** 2).mean(-1)  # (B, K), in normalised units
    if mask.sum() == 0:
        return None, state
    return (err * mask).sum() / n_norm, state


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def train_epoch(
    model, opt, split: Split, task: str, cfg: TrainConfig, gen: torch.Generator, dist=None
) -> tuple[float, float]:
    """One pass over the data; returns (mean loss per sequence, mean gradient norm before clipping).
    dist (distributed.DistContext): this rank trains its shard of every global batch, see distributed.py."""
    model.train()
    perm = torch.randperm(len(split), generator=gen).numpy()
    total, norms = 0.0, []
    for b in range(0, len(perm), cfg.batch_size):
        idx = perm[b : b + cfg.batch_size]
        n_norm = len(idx) if task == "classify" else float(split.lengths[idx].sum())  # the global batch's
        T = int(split.lengths[idx].max())
        u = None
        if task == "forecast" and cfg.scale_augment > 0:  # drawn for the global batch (ranks stay in step)
            u = (torch.rand(len(idx), 1, 1, generator=gen) * 2 - 1) * cfg.scale_augment
        pos = np.arange(len(idx))
        if dist is not None:  # this rank's shard; an empty shard runs a stand-in sequence and scores nothing
            pos, own = (dist.shard(pos), True) if len(dist.shard(pos)) else (pos[:1], False)
        idx = idx[pos]
        lb = torch.from_numpy(split.lengths[idx])
        xb = torch.from_numpy(split.X[idx, :T])
        yb = torch.from_numpy(split.y[idx] if task == "classify" else split.y[idx, :T])
        if u is not None:
            xb, yb = xb * torch.exp(u[pos]), yb * torch.exp(u[pos])  # (B, T, C): one level per sequence
        K = cfg.tbptt if cfg.tbptt > 0 else T
        state = None
        for s in range(0, T, K):
            loss, state = window_loss(model, task, xb, yb, lb, state, s, min(s + K, T), n_norm, cfg.tail)
            state = detach(state)  # truncated BPTT: gradients stop at the window edge, the state carries on
            if dist is not None:
                loss = None if loss is None or not own else loss
                if not dist.any(loss is not None):
                    continue
                # every rank joins DDP's gradient all-reduce; the average of N * (shard loss / global norm)
                # is the one-process gradient
                zero = sum(p.sum() for p in model.parameters()) * 0
                scaled = dist.world * (loss if loss is not None else zero)
            elif loss is None:
                continue
            opt.zero_grad(set_to_none=True)
            (loss if dist is None else scaled).backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip if cfg.clip > 0 else math.inf)
            norms.append(float(norm))
            opt.step()
            if loss is not None:
                total += loss.item() * (n_norm if task == "classify" else 1.0)
    if dist is not None:
        total = dist.sum(total)
    return total / (len(split) if task == "classify" else max(1, len(perm) // cfg.batch_size)), float(
        np.mean(norms) if norms else 0.0
    )


@torch.no_grad()
def calibration_sequences(split: Split, task: str, scale_augment: float) -> list[np.ndarray]:
    """What an int8-static export calibrates its activation ranges on: the training sequences, and for a
    forecast run trained with scale augmentation also each one at the two extreme levels training drew
    (x exp(+-a)). The model was trained to work there, and a trending series leaves the training period's
    range (airline: unseen months reach 622 passengers, training 467): grids clipped at the training maximum
    cap every forecast at it (a8w8 RMSE 44.7 vs float 21.2, worse than seasonal-naive's 42.0)."""
    seqs = split.sequences()
    if task != "forecast" or scale_augment <= 0:
        return seqs
    return seqs + [s * np.float32(math.exp(u)) for u in (scale_augment, -scale_augment) for s in seqs]


def evaluate(model, split: Split, task: str) -> dict:
    """Whole-sequence evaluation: loss and accuracy (classify) or RMSE in raw units (regress/forecast)."""
    model.eval()
    y, _ = model(torch.from_numpy(split.X))  # (N, T, O)
    lb = torch.from_numpy(split.lengths)
    if task == "classify":
        logits = y[torch.arange(len(split)), lb - 1]  # (N, O)
        target = torch.from_numpy(split.y)
        return {
            "loss": float(nn.functional.cross_entropy(logits, target)),
            "accuracy": float((logits.argmax(1) == target).float().mean()),
        }
    mask = torch.from_numpy(split.scored()).float()[..., None]  # (N, T, 1): unseen targets only
    yt = torch.from_numpy(split.y)
    n = mask.sum() * y.shape[2]
    mse_norm = float(((((y - yt) / model.out_std) ** 2) * mask).sum() / n)
    return {"loss": mse_norm, "rmse": float(torch.sqrt((((y - yt) ** 2) * mask).sum() / n))}


def make_schedule(opt, cfg: TrainConfig):
    """Per-epoch learning-rate schedule (None = constant)."""
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "cosine":
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR
        return cosine(opt, T_max=max(1, cfg.epochs), eta_min=cfg.lr * 0.01)
    raise TrainError(f"unknown schedule {cfg.schedule!r}: choose constant or cosine")


# ----------------------------------------------------------------------------
# the run


def train(
    cfg: TrainConfig, out: str | Path, force: bool = False, progress: bool = True, log=print, dist=None
):
    """Train, keep the best checkpoint in `out`, and return (model, metrics). dist: one rank of a
    data-parallel job (distributed.py); only rank 0 touches `out`, the others return (model, None).

    A new run trains in `out`. With force over an existing run, the new one trains beside it (in
    `.OUT.next`) and replaces it in one atomic exchange only when it has finished: a failed or killed new run
    leaves the previous run untouched (and `resume` continues the new one)."""
    out = Path(out)
    if dist is not None and not dist.lead:
        return _fit(cfg, out, None, progress, log, dist)
    if has_run(out) and not force:
        raise TrainError(f"{out} already holds a run: choose another --out or pass --force to overwrite it")
    work = staging_folder(out) if has_run(out) else out
    work.mkdir(parents=True, exist_ok=True)
    with RunLock(work):
        if work != out:
            if (work / RECORD).exists():
                log(f"discarding the unfinished run in {work} (train --resume {out} would have continued it)")
            for p in work.iterdir():
                if p.name != ".lock":
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            log(f"training in {work}; the run at {out} stays in place until this one has finished")
        result = _fit(cfg, work, None, progress, log, dist)
    if work != out and not result[1]["interrupted"]:
        install(work, out)
    elif work != out:
        log(f"the previous run stays at {out}; `rnnedge train --resume {out}` continues the new one")
    return result


def resume(out: str | Path, progress: bool = True, log=print):
    """Continue a killed or interrupted run from the end of its last finished epoch (model, optimizer, LR
    schedule and RNG states), so it ends exactly where an uninterrupted run would.

    Returns (model, metrics)."""
    out = Path(out)
    staged = staging_folder(out)
    work = staged if (staged / RECORD).exists() else out
    if not work.is_dir():
        raise TrainError(f"no run at {out} to resume")
    with RunLock(work):
        record = read_record(work)
        if record["finished"]:
            done = record["best"]["epoch"]
            raise TrainError(f"{work} has finished already (best epoch {done}): nothing to resume")
        if record.get("resume") is None:
            raise TrainError(f"{work / RECORD} has no resume state: train it again")
        known = {f.name for f in fields(TrainConfig)}
        try:
            cfg = TrainConfig(**{k: v for k, v in record["config"]["train"].items() if k in known})
        except TypeError as e:
            raise TrainError(f"{work / RECORD}: config.train is not a training config: {e}") from None
        log(f"resuming {work} after epoch {record['resume']['state']['epoch']}")
        result = _fit(cfg, work, record, progress, log)
    if work != out and not result[1]["interrupted"]:
        install(work, out)
    return result


def _fit(cfg: TrainConfig, out: Path, record: dict | None, progress: bool, log, dist=None):
    """The training run in folder `out` (locked by the caller), from scratch or from `record`'s resume state.
    Every epoch ends with one commit (checkpoint.json) naming the best weights and the resume state."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, cfg.threads))
    ds = load_dataset(cfg.data, cfg.task, seed=cfg.seed, audio=cfg.audio)
    task = ds.task
    fit, val = split_validation(ds.train, task, cfg.val_fraction, cfg.seed)
    in_mean, in_std, out_mean, out_std = normalization(fit, task)
    mcfg = ModelConfig(cfg.cell, ds.input_size, cfg.hidden_size, cfg.num_layers, ds.output_size, cfg.dropout)
    model = RecurrentModel(mcfg)
    model.set_normalization(in_mean, in_std, out_mean, out_std)
    opt = (
        torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.weight_decay > 0
        else torch.optim.Adam(model.parameters(), lr=cfg.lr)
    )
    sched = make_schedule(opt, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    lead = dist is None or dist.lead
    net, extra = (model, {}) if dist is None else (dist.wrap(model), {"dist": dist})
    run_epoch = train_epoch
    if cfg.stream:
        from .stream_train import stream_epoch as run_epoch
    config = {"model": mcfg.to_dict(), **run_meta(cfg, ds, len(fit), len(val))}
    metric = "accuracy" if task == "classify" else "rmse"
    log(
        f"training {cfg.cell} {cfg.num_layers}x{cfg.hidden_size} on {ds.name} ({task}): "
        f"{len(fit)} train / {len(val)} val / {len(ds.test)} test sequences"
    )
    history, best, best_epoch, start, best_entry, elapsed = [], math.inf, -1, 0, None, 0.0
    resume_entry, interrupted = None, False
    if record is not None:
        if record["config"]["model"] != config["model"]:
            raise TrainError(f"{out / RECORD}: the data no longer gives the model this run was training")
        s = restore_training_state(out, record, model, opt, sched, gen)
        history, best_entry, resume_entry = record["history"][: s["epoch"]], record["best"], record["resume"]
        best, best_epoch, start, elapsed = s["best"], s["best_epoch"], s["epoch"], s.get("seconds", 0.0)
    t0 = time.time() - elapsed
    bar = Progress(cfg.epochs, "epochs", unit="ep", enabled=progress)
    if start:
        bar.update(start, note=f"resumed after epoch {start}")
    try:
        for epoch in range(start, cfg.epochs):
            if len(val) and epoch > 0 and epoch - best_epoch >= cfg.patience:
                break  # early stopping: `patience` epochs without validation improvement
            loss, gnorm = run_epoch(net, opt, fit, task, cfg, gen, **extra)
            if sched is not None:
                sched.step()
            v = evaluate(model, val if len(val) else fit, task) if lead else None
            if dist is not None:
                v = dist.from_lead(v)  # rank 0 decides checkpoints and early stopping for every rank
            history.append(epoch_entry(epoch, loss, v, metric, gnorm, t0))
            if v["loss"] < best:
                best, best_epoch = v["loss"], epoch + 1
                best_entry = {"epoch": best_epoch}
                if lead:
                    best_entry = write_payload(out, "model", model.state_dict()) | {"epoch": best_epoch}
            if lead:
                tensors, scalars = training_state(model, opt, sched, gen)
                state = {
                    "epoch": epoch + 1,
                    "best": best,
                    "best_epoch": best_epoch,
                    "seconds": time.time() - t0,
                }
                resume_entry = write_payload(out, "resume", tensors) | {"state": state | scalars}
                commit(out, _record(config, history, best_entry, resume_entry))
            bar.update(1, loss=f"{loss:.3f}", val_loss=f"{v['loss']:.3f}", **{metric: f"{v[metric]:.3f}"})
    except KeyboardInterrupt:
        interrupted = True
        if best_entry is None:
            bar.close()
            raise  # nothing to keep: the caller sees the interrupt (CLI exit 130)
        log(
            f"interrupted: the best checkpoint so far (epoch {best_epoch}) is in {out}; "
            f"continue with `rnnedge train --resume {out}`"
        )
    bar.close()
    if best_entry is None:
        raise TrainError("training stopped before the first epoch finished; nothing was saved")
    if not lead:
        return model, None
    model, _ = load_checkpoint(out)
    test = evaluate(model, ds.test, task)
    if ds.frontend is not None:  # audio: choose the streaming decisions on the held-out examples
        config["decisions"] = audio_decisions(model, ds)
        log(f"decisions: {config['decisions']}")
    if cfg.stream:
        test["stream"] = stream_test(model, ds.test, task, cfg)
    if task == "forecast":
        from .baselines import forecast_baselines

        test["baselines"] = forecast_baselines(ds)
    # every epoch ran without an early stop: with a validation split, more epochs might still help
    hit_cap = not interrupted and len(history) == cfg.epochs
    metrics = {
        "task": task,
        "metric": metric,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "epoch_cap": cfg.epochs,
        "hit_epoch_cap": hit_cap,
        "interrupted": interrupted,
        "seconds": round(time.time() - t0, 2),
        "test": test,
        "history": history,
    }
    text = json.dumps(metrics, indent=2) + "\n"
    results = {"metrics.json": write_result(out, "metrics.json", text.encode())}
    score = f"{test[metric]:.1%}" if metric == "accuracy" else f"{test[metric]:.4g}"
    title = (
        f"{out.name}: {cfg.cell} {cfg.num_layers}x{cfg.hidden_size} on {ds.name} ({task}), "
        f"best epoch {best_epoch} of {len(history)}, test {metric} {score}"
    )
    if plot_curves(history, metric, out / "curves.png", title, best_epoch, len(val) > 0, log):
        results["curves.png"] = result_entry(out, "curves.png")
    # the run's final commit; an interrupted run keeps its resume state (its metrics are those of the best
    # checkpoint so far, replaced when `--resume` finishes it)
    commit(
        out,
        _record(config, history, best_entry, resume_entry if interrupted else None, results, not interrupted),
    )
    if hit_cap:
        log(cap_message(cfg, best_epoch))
    log(f"best epoch {best_epoch}, {describe_test(test, metric)} ({metrics['seconds']:.1f} s) -> {out}")
    return model, metrics


def audio_decisions(model, ds: Dataset) -> dict:
    from rnnedge.runtime.frontend import FrontendConfig

    from .audio import choose_decisions

    @torch.no_grad()
    def logits(feats):
        return model(torch.from_numpy(feats)[None])[0][0].numpy()

    step = FrontendConfig.from_manifest(ds.frontend).step_seconds
    return choose_decisions(logits, ds.test, ds.labels, step)


def stream_test(model, split: Split, task: str, cfg: TrainConfig) -> dict:
    """The test split as one stream without resets (how a deployed model sees it), in PyTorch."""
    from .stream_train import score_stream, stream_split, torch_stream

    stream = stream_split(split, task, cfg.seed, cfg.tail)
    return score_stream(torch_stream(model, stream), stream, task)


def epoch_entry(epoch: int, loss: float, v: dict, metric: str, gnorm: float, t0: float) -> dict:
    """One row of the run's history (metrics.json, curves.png): the same for every way of training."""
    return {
        "epoch": epoch + 1,
        "train_loss": loss,
        "val_loss": v["loss"],
        f"val_{metric}": v[metric],
        "grad_norm": gnorm,
        "seconds": round(time.time() - t0, 2),
    }


def _record(config, history, best, resume, results=None, finished=False) -> dict:
    return {
        "config": config,
        "finished": finished,
        "best": best,
        "resume": resume,
        "results": results or {},
        "history": history,
    }


def cap_message(cfg: TrainConfig, best_epoch: int) -> str:
    if cfg.val_fraction > 0:
        return (
            f"stopped at the epoch cap ({cfg.epochs}) before early stopping (best epoch {best_epoch}): "
            "raise --epochs if validation was still improving"
        )
    return f"ran the full schedule: the epoch cap ({cfg.epochs}, --epochs) without a validation split"


def describe_test(test: dict, metric: str) -> str:
    if "baselines" in test:
        from .baselines import describe

        return describe(test["rmse"], test["baselines"])
    return f"test {metric} {test[metric]:.4f}"


def run_meta(cfg: TrainConfig, ds: Dataset, n_fit: int, n_val: int) -> dict:
    data = cfg.data if cfg.data in BUILTIN else str(Path(cfg.data).resolve())
    extra = {"frontend": ds.frontend, "audio": ds.audio} if ds.frontend is not None else {}
    return {
        **extra,
        "train": {**asdict(cfg), "data": data},
        "data": {
            "name": ds.name,
            "spec": data,
            "description": ds.description,
            "sizes": [n_fit, n_val, len(ds.test)],
        },
        "task": {
            "kind": ds.task,
            "labels": ds.labels,
            "readout": "last" if ds.task == "classify" else "every_step",
        },
    }


def plot_curves(history: list[dict], metric: str, path: Path, title: str, best_epoch: int, validation: bool,
                log=print) -> bool:  # fmt: skip
    """Write curves.png (atomically); False without matplotlib."""
    from rnnedge.runtime.errors import MissingDependency

    from rnnedge.plotting import training_curves

    try:
        training_curves(history, metric, path, title, best_epoch, validation)
    except MissingDependency as e:
        log(f"no {path.name}: {e}")
        return False
    return True
