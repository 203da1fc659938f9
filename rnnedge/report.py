"""`rnnedge report RUN_OR_BUNDLE`: what the model and its bundles score on the test split, as Markdown + PNG.

Everything is measured when the report is made: the float model (the baseline) and every bundle found (a run
folder's bundle-* and OUT/<scheme> bundles, or the one bundle given) streamed through each backend it was
verified on, one sample at a time, exactly as deployed. Classification: accuracy per scheme x backend and
confusion matrices. Forecasting: RMSE on the unseen steps beside the naive and seasonal-naive baselines, and
the error over time. Parity: each bundle's outputs against the float model, and the error against the
quantised reference recorded at export. Training curves from the run's metrics.json.

    rnnedge report runs/bm                      # runs/bm/report/report.md + *.png
    rnnedge report bundles/bm/int8 --out rep/   # one bundle (its run is found from the manifest)
"""

from __future__ import annotations

import datetime
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnedge.runtime.errors import RnnEdgeError

FLOAT = "float (PyTorch)"


class ReportError(RnnEdgeError):
    pass


@dataclass
class Result:
    """One (scheme, backend) on the test split. pred: classify (N,) decisions, else (N, T, O) outputs."""

    scheme: str
    backend: str
    pred: np.ndarray
    outputs: list[np.ndarray]  # per test sequence (T_i, O): for the parity figure
    parity: dict = field(default_factory=dict)  # the manifest's parity record for this backend


# ----------------------------------------------------------------------------
# finding the run and its bundles


def resolve(target: Path) -> tuple[Path, list[Path]]:
    """RUN -> (run, its bundles); BUNDLE -> (its source run, [bundle])."""
    from rnnedge.train.checkpoint import has_run

    target = Path(target)
    if has_run(target):
        found = sorted(
            {p.parent for pat in ("*/manifest.json", "*/*/manifest.json") for p in target.glob(pat)}
        )
        # hidden folders are exports in progress (.OUT.tmp-PID / .OUT.old-PID); .rejected ones failed parity
        return target, [p for p in found if not p.name.startswith(".") and not p.name.endswith(".rejected")]
    if (target / "manifest.json").is_file():
        manifest = json.loads((target / "manifest.json").read_text())
        run = Path(manifest.get("source", {}).get("run", ""))
        if not has_run(run):
            raise ReportError(
                f"{target} was exported from run {run or '?'}, which is not there any more: "
                "report on the run folder instead, or re-export"
            )
        return run, [target]
    raise ReportError(f"{target} is neither a run folder (checkpoint.json) nor a bundle (manifest.json)")


def bundle_backends(manifest: dict) -> list[str]:
    """The backends the export verified this bundle on (its parity records)."""
    return list(manifest.get("parity", {})) or ["native"]


# ----------------------------------------------------------------------------
# measuring


def float_outputs(model, split) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        y, _ = model(torch.from_numpy(split.X))  # (N, T, O)
    return [y[i, :n].numpy() for i, n in enumerate(split.lengths)]


def stream_outputs(bundle: Path, backend: str, split) -> list[np.ndarray]:
    from rnnedge.runtime import load

    s = load(bundle, backend=backend).stream()
    return [s.run(x) for x in split.sequences()]  # run() resets: each sequence from a zero state


def as_prediction(outputs: list[np.ndarray], split, task: str) -> np.ndarray:
    if task == "classify":
        return np.array([int(np.argmax(o[-1])) for o in outputs])
    pred = np.zeros_like(split.y)
    for i, o in enumerate(outputs):
        pred[i, : len(o)] = o
    return pred


def score(pred: np.ndarray, split, task: str) -> float:
    """Accuracy (classify) or RMSE over the scored steps (forecast / regress)."""
    if task == "classify":
        return float(np.mean(pred == split.y))
    from rnnedge.train.baselines import rmse

    return rmse(pred, split)


def measure(run: Path, bundles: list[Path], log=print) -> dict:
    from rnnedge.runtime.errors import MissingDependency
    from rnnedge.train.checkpoint import load_checkpoint
    from rnnedge.train.data import load_dataset

    model, meta = load_checkpoint(run)
    task = meta["task"]["kind"]
    ds = load_dataset(meta["data"]["spec"], task, seed=meta["train"].get("seed", 0))
    test = ds.test
    outs = float_outputs(model.eval(), test)
    results = [Result("float", FLOAT, as_prediction(outs, test, task), outs)]
    skipped = []
    from rnnedge.export.quantize import SCHEMES

    order = {b: json.loads((b / "manifest.json").read_text())["quant"]["scheme"] for b in bundles}
    for b in sorted(bundles, key=lambda b: (SCHEMES.index(order[b]) if order[b] in SCHEMES else 99, str(b))):
        manifest = json.loads((b / "manifest.json").read_text())
        scheme = manifest["quant"]["scheme"]
        for backend in bundle_backends(manifest):
            try:
                outs = stream_outputs(b, backend, test)
            except MissingDependency as e:
                skipped.append(f"{scheme} on {backend}: {e}")
                continue
            log(f"  measured {scheme} on {backend}")
            pred = as_prediction(outs, test, task)
            results.append(Result(scheme, backend, pred, outs, manifest["parity"].get(backend, {})))
    base = None
    if task == "forecast":
        from rnnedge.train.baselines import forecast_baselines, naive, seasonal_naive

        base = forecast_baselines(ds)
        base["naive_pred"] = naive(test)
        base["seasonal_pred"] = seasonal_naive(test, base["season"])
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    return {
        "run": run,
        "meta": meta,
        "ds": ds,
        "task": task,
        "results": results,
        "skipped": skipped,
        "baselines": base,
        "history": metrics.get("history", []),
        "metrics": metrics,
    }


# ----------------------------------------------------------------------------
# figures (rnnedge.plotting: Figure + FigureCanvasAgg, no pyplot, atomic PNGs)


def new_figure(w: float, h: float):
    from rnnedge.plotting import figure

    fig, _ = figure(1, 1, (w, h), dpi=90)
    fig.clear()  # the panels are laid out by each plot
    return fig


def save(fig, path: Path) -> str:
    from rnnedge.plotting import save_png

    fig.tight_layout()
    save_png(fig, path)  # atomic: a reader never sees half a PNG
    return path.name


def plot_curves(rep: dict, path: Path) -> str | None:
    """The run's training curves, drawn as `rnnedge train` draws them (rnnedge.plotting)."""
    from rnnedge.plotting import training_curves

    m, history = rep["metrics"], rep["history"]
    if not history:
        return None
    title = f"{rep['run'].name}: training ({m.get('epochs_run', len(history))} epochs)"
    best = m.get("best_epoch", history[-1]["epoch"])
    validation = rep["meta"]["data"]["sizes"][1] > 0
    training_curves(history, m.get("metric", "accuracy"), path, title, best, validation)
    return path.name


def native_results(results: list[Result]) -> list[Result]:
    """The float baseline and each scheme once (its native backend if measured, else the first)."""
    seen, out = set(), []
    for r in sorted(results, key=lambda r: r.backend != "native"):
        if r.scheme not in seen:
            seen.add(r.scheme)
            out.append(r)
    return sorted(out, key=lambda r: [x.scheme for x in results].index(r.scheme))


def plot_confusion(results: list[Result], y: np.ndarray, labels: list[str], path: Path) -> str:
    shown = native_results(results)
    k = len(labels)
    fig = new_figure(3.3 * len(shown), 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(shown)))
    for ax, r in zip(axes, shown):
        cm = np.zeros((k, k), int)
        np.add.at(cm, (y, r.pred), 1)
        ax.imshow(cm, cmap="Blues")
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    color = "white" if cm[i, j] > cm.max() / 2 else "black"  # readable on dark cells
                    ax.text(j, i, cm[i, j], ha="center", va="center", color=color, fontsize=7 if k > 6 else 9)
        ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
        title = r.scheme if r.scheme == "float" else f"{r.scheme} ({r.backend})"
        ax.set(title=f"{title}: {np.mean(r.pred == y):.1%}", xlabel="predicted", ylabel="true")
    return save(fig, path)


def plot_error_over_time(rep: dict, path: Path) -> str:
    """One scored step per sequence (airline): error per sequence in order; else mean |error| per step."""
    test, base = rep["ds"].test, rep["baselines"]
    mask = test.scored()  # (N, T)
    per_sequence = bool((mask.sum(1) <= 1).all())
    fig = new_figure(10, 3.6)
    ax = fig.subplots()
    series = [(r.scheme if r.scheme == "float" else r.scheme, r.pred) for r in native_results(rep["results"])]
    if base:
        series += [
            ("naive", base["naive_pred"]),
            (f"seasonal-naive ({base['season']})", base["seasonal_pred"]),
        ]
    for i, (name, pred) in enumerate(series):
        err = np.abs(pred - test.y).mean(-1)  # (N, T)
        style = "--" if "naive" in name else "-"
        if per_sequence:
            ax.plot(np.arange(len(test)), (err * mask).sum(1), style, label=name, color=f"C{i}")
        else:
            counts = np.maximum(mask.sum(0), 1)
            ax.plot(np.arange(err.shape[1]), (err * mask).sum(0) / counts, style, label=name, color=f"C{i}")
    ax.set(
        title="absolute forecast error over the unseen test steps",
        xlabel="test step (one unseen step per window, in time order)"
        if per_sequence
        else "step in sequence",
        ylabel="|error| (raw units)" + ("" if per_sequence else ", mean over sequences"),
    )
    ax.legend(fontsize=8, ncol=2)
    return save(fig, path)


def plot_parity(results: list[Result], path: Path) -> str:
    """Left: every output of every bundle against the float model. Right: recorded error vs the reference."""
    fig = new_figure(11, 4)
    ax = fig.subplots(1, 2)
    ref = np.concatenate(results[0].outputs).ravel()
    for i, r in enumerate(native_results(results)[1:]):
        ax[0].scatter(ref, np.concatenate(r.outputs).ravel(), s=2, alpha=0.4, label=r.scheme, color=f"C{i}")
    lo, hi = float(ref.min()), float(ref.max())
    ax[0].plot([lo, hi], [lo, hi], "k-", lw=0.6)
    ax[0].set(title="bundle outputs vs float model (test split, every step)", xlabel="float", ylabel="bundle")
    ax[0].legend(fontsize=8, markerscale=4)
    bars = [r for r in results[1:] if r.parity]
    names = [f"{r.scheme}\n{r.backend}" for r in bars]
    vals = [max(r.parity.get("relative_error", 0.0), 1e-9) for r in bars]
    ax[1].bar(range(len(bars)), vals, color=["C2" if r.parity.get("ok") else "C3" for r in bars])
    for k, r in enumerate(bars):
        if not r.parity.get("relative_error"):
            ax[1].text(k, 1.5e-9, "0", ha="center", va="bottom", fontsize=7)  # exact: no bar to draw
    ax[1].axhline(0.05, color="k", ls="--", lw=0.8, label="5 % (activation-quantised tolerance)")
    ax[1].set_xticks(range(len(bars)), names, fontsize=6, rotation=60, ha="right")
    ax[1].set(title="max |y - quantised reference| / output range (export)", yscale="log")
    ax[1].legend(fontsize=8, loc="upper left")
    return save(fig, path)


# ----------------------------------------------------------------------------
# Markdown


def pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def score_table(rep: dict) -> list[str]:
    """Rows: schemes; columns: backends; cells: the test score (float = the baseline)."""
    task, results = rep["task"], rep["results"]
    test = rep["ds"].test
    backends = list(dict.fromkeys(r.backend for r in results[1:]))
    fmt = pct if task == "classify" else (lambda v: f"{v:.4g}")
    what = "test accuracy" if task == "classify" else "test RMSE on unseen steps (raw units)"
    f = score(results[0].pred, test, task)
    lines = [f"{what}; float baseline {fmt(f)}", "", "| scheme | " + " | ".join(backends) + " | vs float |"]
    lines.append("|---|" + "---|" * (len(backends) + 1))
    for scheme in dict.fromkeys(r.scheme for r in results[1:]):
        cells, deltas = [], []
        for b in backends:
            r = next((r for r in results if r.scheme == scheme and r.backend == b), None)
            if r is None:
                cells.append("-")
                continue
            v = score(r.pred, test, task)
            deltas.append(v - f)
            cells.append(fmt(v))
        # the worst backend: lowest accuracy, or highest error
        worst = min(deltas) if task == "classify" else max(deltas)
        delta = f"{100 * worst:+.1f} pt (worst)" if task == "classify" else f"{worst:+.3g} RMSE (worst)"
        lines.append(f"| {scheme} | " + " | ".join(cells) + f" | {delta} |")
    return lines


def baseline_lines(rep: dict) -> list[str]:
    b = rep["baselines"]
    if not b:
        return []
    f = score(rep["results"][0].pred, rep["ds"].test, rep["task"])
    beats = lambda v: "beats it" if f < v else "LOSES"  # noqa: E731
    return [
        "",
        f"Baselines on the same {b['scored_steps']} unseen steps: naive last-value RMSE {b['naive']:.4g} "
        f"(float model {beats(b['naive'])}), seasonal-naive (season {b['season']}, {b['season_from']}) "
        f"{b['seasonal_naive']:.4g} (float model {beats(b['seasonal_naive'])}).",
    ]


def md_cell(text: str) -> str:
    return text.replace("|", "\\|")  # a literal | inside a Markdown table cell


def parity_table(results: list[Result]) -> list[str]:
    lines = [
        "| scheme | backend | ok | max abs error | / output range | tolerance |",
        "|---|---|---|---|---|---|",
    ]
    for r in results[1:]:
        p = r.parity
        if p:
            lines.append(
                f"| {r.scheme} | {r.backend} | {'yes' if p['ok'] else 'NO'} | {p['max_abs_error']:.2e} | "
                f"{p.get('relative_error', float('nan')):.2e} | {md_cell(p.get('tolerance', ''))} |"
            )
    return lines


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name


def write_markdown(rep: dict, figs: dict, out: Path) -> Path:
    meta, m = rep["meta"], rep["metrics"]
    cfg = meta["train"]
    lines = [
        f"# rnnedge report: {rep['run'].name}",
        "",
        f"Run `{rep['run']}`: {cfg['cell']} {cfg['num_layers']}x{cfg['hidden_size']} "
        f"on {meta['data']['name']} "
        f"({rep['task']}), seed {cfg['seed']}; {m.get('epochs_run', '?')} epochs"
        + (" (the epoch cap)" if m.get("hit_epoch_cap") else "")
        + f", best epoch {m.get('best_epoch', '?')}. "
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}: every "
        "bundle streamed over the test split one sample at a time on each backend it was verified on.",
        "",
        "## Task score per scheme x backend",
        "",
        *score_table(rep),
        *baseline_lines(rep),
    ]
    if rep["skipped"]:
        lines += ["", "Not measured (not installed here): " + "; ".join(rep["skipped"])]
    for title, key in (
        ("Confusion matrices", "confusion"),
        ("Error over time", "error"),
        ("Parity", "parity"),
        ("Training curves", "curves"),
    ):
        if figs.get(key):
            lines += ["", f"## {title}", "", f"![{title}]({figs[key]})"]
            if key == "parity":
                lines += ["", *parity_table(rep["results"])]
    path = out / "report.md"
    from rnnedge.runtime.bundle import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def build_report(target: Path, out: Path | None = None, log=print) -> Path:
    run, bundles = resolve(target)
    out = Path(out) if out else Path(target) / "report"
    out.mkdir(parents=True, exist_ok=True)
    log(f"report on {run} with {len(bundles)} bundle(s) -> {out}")
    rep = measure(run, bundles, log)
    figs = {"curves": plot_curves(rep, out / "curves.png")}
    if rep["task"] == "classify":
        figs["confusion"] = plot_confusion(
            rep["results"], rep["ds"].test.y, rep["ds"].labels, out / "confusion.png"
        )
    else:
        figs["error"] = plot_error_over_time(rep, out / "error_over_time.png")
    if len(rep["results"]) > 1:
        figs["parity"] = plot_parity(rep["results"], out / "parity.png")
    return write_markdown(rep, figs, out)


def add_report(sub):
    p = sub.add_parser(
        "report",
        help="test accuracy per scheme x backend, confusion / error figures, parity, curves (Markdown + PNG)",
        description=__doc__.split("\n\n")[1],
        epilog="examples:\n  rnnedge report runs/bm\n  rnnedge report bundles/bm/int8 --out rep/",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("target", type=Path, metavar="RUN_OR_BUNDLE", help="a run folder or a bundle folder")
    p.add_argument("--out", "-o", type=Path, help="report folder (default: RUN_OR_BUNDLE/report)")
    p.set_defaults(func=cmd_report)


def cmd_report(a) -> int:
    path = build_report(a.target, a.out)
    print(f"wrote {path}")
    return 0
