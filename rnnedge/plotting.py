"""PNG figures through matplotlib's object API (Figure + FigureCanvasAgg): no pyplot, no backend switch, no
global state, so a library call never changes how the caller's own plots behave. matplotlib is optional
(`pip install 'rnnedge[plot]'`); every PNG is written atomically.

    training_curves(history, metric, path, title=...)   the run folder's curves.png
    figure(1, 2, (11, 4.5)) -> (fig, axes); save_png(fig, path)   for other plots (devices/plot.py)
"""

from __future__ import annotations

import io
import os

from rnnedge.runtime.errors import require
from rnnedge.runtime.fileio import atomic_write_bytes
from rnnedge.runtime.vocab import pip_extra

PIP = pip_extra("plot").removeprefix("pip install ")


def figure(rows: int, cols: int, size: tuple[float, float], dpi: int = 100):
    """(Figure, flat list of Axes) on an Agg canvas. MissingDependency if matplotlib is not installed."""
    require("matplotlib", "matplotlib (for plots)", PIP)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [a for row in axes for a in row]


def save_png(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def integer_ticks(ax) -> None:
    """Whole-number x ticks (epochs)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def y_scale(ax, values) -> None:
    """Log y (labelled 0.2, 0.5, 1, 2 in plain numbers) when the values span more than a decade, else linear
    (a log axis over a narrow range would carry one label or none)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    lo, hi = min(values), max(values)
    if not (lo > 0 and hi / lo > 10):
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


LOSS = {"classify": "cross-entropy (nats)", "regress": "MSE (normalised units)"}


def training_curves(
    history: list[dict],
    metric: str,
    path: str | os.PathLike,
    title: str,
    best_epoch: int,
    validation: bool = True,
):
    """Loss, the selection metric and the gradient norm per epoch, the best epoch (the checkpoint) marked on
    each panel. Returns the Figure (already written to `path`).

    history: metrics.json's per-epoch rows (epoch, train_loss, val_loss, val_<metric>, grad_norm).
    validation=False: the "val" columns were measured on the training split (no validation split)."""
    fig, (loss, score, grad) = figure(1, 3, (13, 4.0), dpi=90)
    ep = [h["epoch"] for h in history]
    held = "validation split" if validation else "training split (no validation split)"
    train_loss, held_loss = [h["train_loss"] for h in history], [h["val_loss"] for h in history]
    loss.plot(ep, train_loss, label="training, during the epoch")
    loss.plot(ep, held_loss, label=("validation" if validation else "training split") + ", after the epoch")
    loss.set(title="loss", ylabel=LOSS["classify" if metric == "accuracy" else "regress"])
    y_scale(loss, train_loss + held_loss)
    scale = 100.0 if metric == "accuracy" else 1.0
    values = [scale * h[f"val_{metric}"] for h in history]
    score.plot(ep, values, color="C2")
    if metric == "accuracy":
        score.set(title=f"accuracy on the {held}", ylabel="accuracy (%)")
    else:
        score.set(title=f"RMSE on the {held}", ylabel="RMSE (data units)")
    norms = [h["grad_norm"] for h in history]
    grad.plot(ep, norms, color="C3")
    grad.set(title="gradient norm before clipping", ylabel="L2 norm (mean over batches)")
    y_scale(grad, norms)
    for ax in (loss, score, grad):
        ax.set_xlabel("epoch")
        integer_ticks(ax)
        ax.grid(True, alpha=0.3)
        ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best epoch ({best_epoch})")
    loss.legend(fontsize=8)
    v = values[ep.index(best_epoch)]
    score.plot([best_epoch], [v], "o", color="black", ms=5)
    upper = v > (min(values) + max(values)) / 2  # label on the side of the point that has room
    score.annotate(
        f"best epoch {best_epoch}: {v:.1f} %"
        if metric == "accuracy"
        else f"best epoch {best_epoch}: {v:.4g}",
        (best_epoch, v),
        textcoords="offset points",
        xytext=(-8, -14 if upper else 8),
        ha="right" if best_epoch > (ep[0] + ep[-1]) / 2 else "left",
        fontsize=8,
        bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8},
    )
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)
    return fig
