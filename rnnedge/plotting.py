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


def log_y(ax) -> None:
    """Log y axis labelled at 1-2-5 steps in plain numbers (0.2, 0.5, 1, 2), not 2x10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(LogLocator(subs=(1.5, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    ax.yaxis.set_major_formatter(plain)
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
    """Loss, the selection metric and the gradient norm per epoch, the best epoch marked on each panel.

    history: metrics.json's per-epoch rows (epoch, train_loss, val_loss, val_<metric>, grad_norm).
    validation=False: the "val" columns were measured on the training split (no validation split)."""
    fig, (loss, score, grad) = figure(1, 3, (13, 4.0), dpi=90)
    ep = [h["epoch"] for h in history]
    held = "validation" if validation else "training split (no validation split)"
    kind = "classify" if metric == "accuracy" else "regress"
    loss.plot(ep, [h["train_loss"] for h in history], label="training (during the epoch)")
    loss.plot(ep, [h["val_loss"] for h in history], label=f"{held}, after the epoch")
    loss.set(title="loss", ylabel=LOSS[kind])
    log_y(loss)
    values = [h[f"val_{metric}"] for h in history]
    if metric == "accuracy":
        score.plot(ep, [100 * v for v in values], color="C2")
        score.set(title=f"{held} accuracy", ylabel="accuracy (%)")
    else:
        score.plot(ep, values, color="C2")
        score.set(title=f"{held} RMSE", ylabel="RMSE (data units)")
    grad.plot(ep, [h["grad_norm"] for h in history], color="C3")
    grad.set(title="gradient norm before clipping", ylabel="L2 norm (mean over batches)")
    log_y(grad)
    for ax in (loss, score, grad):
        ax.set_xlabel("epoch")
        integer_ticks(ax)
        ax.grid(True, alpha=0.3)
        ax.axvline(
            best_epoch, color="grey", ls="--", lw=1, label=f"best epoch ({best_epoch}): the checkpoint"
        )
    loss.legend(fontsize=8, loc="best")
    best = next(h for h in history if h["epoch"] == best_epoch)
    v = best[f"val_{metric}"]
    score.plot([best_epoch], [100 * v if metric == "accuracy" else v], "o", color="black", ms=5)
    score.annotate(
        f"best epoch {best_epoch}: {v:.1%}" if metric == "accuracy" else f"best epoch {best_epoch}: {v:.4g}",
        (best_epoch, 100 * v if metric == "accuracy" else v),
        textcoords="offset points",
        xytext=(-8, 8),
        ha="right",
        fontsize=8,
    )
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)
    return fig
