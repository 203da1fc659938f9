"""Training for streaming: truncated BPTT over long concatenated streams with carried (detached) state, and
the evaluation that streams test data through the runtime exactly as deployed.

A window-trained model (trainer.train_epoch) always starts each sequence from a zero state; a deployed model
runs one endless stream and is never reset (the device does not know where a recording ends). Stream
training builds, each epoch, `batch_size` long streams from the shuffled training sequences laid end to end
and trains on them K = --tbptt steps at a time, carrying the state across windows (detached: gradients stop
at the window edge) and across sequence boundaries. Per-step targets:

    classify   the current segment's label on the last `tail` fraction of its steps (and its last step),
               each segment weighing 1 in total, as trainer.window_loss does per sequence
    regress /  the per-step targets of the segment (normalised MSE)
    forecast

`stream_split` lays a split end to end the same way (seeded), `evaluate_stream` runs such a stream through a
runtime Model without reset and scores each segment's decision at its last step (classify) or the per-step
error (regress / forecast), bucketed by position in the stream and within the segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import Split

DEFAULT_WINDOW = 50  # --tbptt when --stream-train is given without it


@dataclass
class Stream:
    """Sequences laid end to end. x (T, I) raw; y (T,) int64 labels or (T, O) targets; weight (T,) loss
    weight; starts / ends (n,) each segment's first and last step; labels (n,) (classify)."""

    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    labels: np.ndarray | None


def concat(split: Split, order, task: str, tail: float) -> Stream:
    """The split's sequences in `order`, end to end, with per-step targets and weights."""
    xs, ys, ws, starts, ends = [], [], [], [], []
    t = 0
    for i in order:
        n = int(split.lengths[i])
        xs.append(split.X[i, :n])
        w = np.zeros(n, np.float32)
        if task == "classify":
            k = min(max(1, int(math.floor(tail * n))), n)  # the last k steps carry the label
            w[n - k :] = 1.0 / k
            ys.append(np.full(n, split.y[i], np.int64))
        else:
            w[:] = 1.0
            ys.append(split.y[i, :n])
        ws.append(w)
        starts.append(t)
        ends.append(t + n - 1)
        t += n
    labels = np.asarray(split.y[list(order)], np.int64) if task == "classify" else None
    return Stream(
        np.concatenate(xs).astype(np.float32),
        np.concatenate(ys),
        np.concatenate(ws),
        np.array(starts),
        np.array(ends),
        labels,
    )


def stream_split(split: Split, task: str, seed: int = 0, tail: float = 0.2) -> Stream:
    """One long stream of the whole split in a seeded random order (the evaluation stream)."""
    order = np.random.default_rng(seed).permutation(len(split))
    return concat(split, order, task, tail)


def batch_streams(split: Split, task: str, n: int, gen: torch.Generator, tail: float):
    """`n` parallel streams of the shuffled split -> x (n, T, I), y (n, T[, O]), w (n, T); shorter streams are
    padded at the end with weight 0 (their state runs on over zeros there, which no loss sees)."""
    perm = torch.randperm(len(split), generator=gen).numpy()
    n = max(1, min(n, len(split)))
    parts = [concat(split, perm[k::n], task, tail) for k in range(n)]
    T = max(len(p.x) for p in parts)

    def padded(a, fill=0):
        out = np.full((T,) + a.shape[1:], fill, a.dtype)
        out[: len(a)] = a
        return out

    x = np.stack([padded(p.x) for p in parts])
    y = np.stack([padded(p.y) for p in parts])
    w = np.stack([padded(p.weight) for p in parts])
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w), len(split)


def stream_epoch(model, opt, split: Split, task: str, cfg, gen: torch.Generator) -> tuple[float, float]:
    """One pass over the training data as long streams, truncated BPTT with the state carried on.
    Returns (mean loss per sequence, mean gradient norm before clipping), like trainer.train_epoch."""
    from .trainer import detach

    model.train()
    x, y, w, n_seq = batch_streams(split, task, cfg.batch_size, gen, cfg.tail)
    K = cfg.tbptt if cfg.tbptt > 0 else DEFAULT_WINDOW
    n_norm = float(n_seq) if task == "classify" else float(w.sum())
    state, total, norms = None, 0.0, []
    for s in range(0, x.shape[1], K):
        e = min(s + K, x.shape[1])
        out, state = model(x[:, s:e], state)  # (B, K, O)
        state = detach(state)  # gradients stop at the window edge; the state carries on, never reset
        ww = w[:, s:e]
        if float(ww.sum()) == 0:
            continue
        if task == "classify":
            ce = nn.functional.cross_entropy(out.transpose(1, 2), y[:, s:e], reduction="none")  # (B, K)
            loss = (ce * ww).sum() / n_norm
        else:
            err = (((out - y[:, s:e]) / model.out_std) ** 2).mean(-1)  # (B, K)
            loss = (err * ww).sum() / n_norm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip if cfg.clip > 0 else math.inf)
        norms.append(float(norm))
        opt.step()
        total += loss.item()
    per_seq = total * (1.0 if task == "classify" else n_norm / max(1, n_seq))
    return per_seq, float(np.mean(norms) if norms else 0.0)


# ----------------------------------------------------------------------------
# evaluation as deployed


def run_stream(model, stream: Stream, reset: bool = False) -> np.ndarray:
    """A runtime Model (rnnedge.runtime.load) over the stream, one step at a time -> y (T, O). reset=True
    resets the state at every segment start (the per-sequence evaluation), else never."""
    st = model.stream()
    ys = np.zeros((len(stream.x), model.output_size), np.float32)
    starts = set(stream.starts.tolist()) if reset else set()
    for t, x in enumerate(stream.x):
        if t in starts:
            st.reset()
        ys[t] = st.step(x)
    return ys


def torch_stream(model, stream: Stream, reset: bool = False) -> np.ndarray:
    """The same through the PyTorch model (whole segments at once; the state carried between them)."""
    ys, state = [], None
    with torch.no_grad():
        for s, e in zip(stream.starts, stream.ends):
            y, state = model(torch.from_numpy(stream.x[s : e + 1])[None], None if reset else state)
            ys.append(y[0].numpy())
    return np.concatenate(ys)


def score_stream(ys: np.ndarray, stream: Stream, task: str, buckets: int = 4) -> dict:
    """classify: accuracy of each segment's decision at its last step, overall and by quarter of the stream;
    per-step accuracy by position within the segment. regress / forecast: RMSE likewise."""
    n = len(stream.starts)
    quarter = np.minimum((np.arange(n) * buckets) // max(n, 1), buckets - 1)
    if task == "classify":
        hit = np.array([np.argmax(ys[e]) == lab for e, lab in zip(stream.ends, stream.labels)], float)
        step_hit = (ys.argmax(1) == stream.y).astype(float)
        by_pos = _by_position(step_hit, stream, buckets)
        return {
            "accuracy": float(hit.mean()),
            "accuracy_by_quarter": [float(hit[quarter == q].mean()) for q in range(buckets)],
            "step_accuracy_by_position": by_pos,
        }
    err = ((ys - stream.y) ** 2).mean(-1)  # (T,)
    seg_err = np.array([err[s : e + 1].mean() for s, e in zip(stream.starts, stream.ends)])
    return {
        "rmse": float(np.sqrt(err.mean())),
        "rmse_by_quarter": [float(np.sqrt(seg_err[quarter == q].mean())) for q in range(buckets)],
        "rmse_by_position": [float(np.sqrt(v)) for v in _by_position(err, stream, buckets)],
    }


def _by_position(v: np.ndarray, stream: Stream, buckets: int) -> list[float]:
    """Mean of per-step v by the step's position within its segment (first quarter of the segment, ...)."""
    pos = np.zeros(len(v))
    for s, e in zip(stream.starts, stream.ends):
        pos[s : e + 1] = np.arange(e - s + 1) / max(e - s + 1, 1)
    b = np.minimum((pos * buckets).astype(int), buckets - 1)
    return [float(v[b == q].mean()) for q in range(buckets)]
