"""PNG of the per-backend latency CDF from `rnnedge bench` results (matplotlib, optional; no pyplot)."""

from __future__ import annotations

import numpy as np

from rnnedge.plotting import figure, save_png


def plot_cdf(res: dict, path: str) -> None:
    """Empirical CDF of per-step latency per backend (log x), p99 marked, deadline line when paced."""
    # left: the CDF; right: the same data as exceedance (1 - CDF, log y) so the tail from p99 to the max,
    # which decides deadlines, is as visible as the median
    fig, (ax, tail) = figure(1, 2, (11, 4.5), dpi=120)
    for name, r in res["backends"].items():
        if not r.get("samples_ns"):
            continue
        us = np.sort(np.asarray(r["samples_ns"], np.float64)) / 1e3
        frac = np.arange(1, len(us) + 1) / len(us)
        (line,) = ax.step(us, frac, where="post", label=f"{name} (p50 {r['latency']['p50_us']:.1f} us)")
        p99 = r["latency"]["p99_us"]
        ax.plot([p99], [0.99], "o", color=line.get_color(), ms=4)
        tail.step(us[:-1], 1.0 - frac[:-1], where="post", color=line.get_color(), label=name)
    lines = []
    rate = res["plan"].get("rate_hz")
    if rate:
        lines.append((1e6 / rate, dict(color="red", ls="--"), f"deadline {1e6 / rate:,.0f} us ({rate:g} Hz)"))
    budget = res.get("gate", {}).get("budget", {}).get("p99_us")
    if budget:
        lines.append(
            (budget, dict(color="black", ls=":"), f"{res['gate']['profile']} p99 budget {budget:.4g} us")
        )
    for x, style, label in lines:
        ax.axvline(x, lw=1, label=label, **style)
        tail.axvline(x, lw=1, **style)
    b = res["bundle"]
    n = res["plan"].get("streams", 1)
    for a in (ax, tail):
        a.set_xscale("log")
        a.set_xlabel("latency per step, us (log)" if n == 1 else f"latency per tick of {n} streams, us (log)")
        a.grid(True, which="both", alpha=0.3)
    ax.set_ylim(0, 1.005)
    ax.set_ylabel("fraction of steps" if n == 1 else "fraction of ticks")
    ax.legend(loc="lower right", fontsize=8)
    tail.set_yscale("log")
    tail.set_ylabel("fraction of steps slower (1 - CDF)")
    tail.axhline(0.01, color="grey", lw=0.8)
    tail.axhline(0.001, color="grey", lw=0.8, ls="--")
    tail.text(tail.get_xlim()[0], 0.01, " p99", va="bottom", fontsize=7, color="grey")
    tail.text(tail.get_xlim()[0], 0.001, " p99.9", va="bottom", fontsize=7, color="grey")
    fig.suptitle(
        f"{b['cell']} {b['num_layers']}x{b['hidden_size']} {b['quant']} on {res['machine']['cpu']} "
        "(dots: p99)"
    )
    fig.tight_layout()
    save_png(fig, path)
