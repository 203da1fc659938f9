"""The text `rnnedge bench` prints: plain tables, the full report of a bench() result, the emulation lines.

Pure formatting of the results dict (what --json writes); nothing here measures.
"""

from __future__ import annotations

import math

from . import stats, sysinfo


def _f(v, nd=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:,.{nd}f}" if abs(v) < 1e5 else f"{v:,.0f}"


def table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Plain text table: the first `left` columns left-aligned, the rest right-aligned."""
    w = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).ljust(w[i]) if i < left else str(c).rjust(w[i]) for i, c in enumerate(r))  # noqa: E731
    return "\n".join([fmt(header), "  ".join("-" * x for x in w), *map(fmt, rows)])


def format_report(res: dict) -> str:
    b, plan = res["bundle"], res["plan"]
    lines = [sysinfo.format_machine(res["machine"])]
    lines.append(
        f"bundle:  {b['path']} ({b['cell']} {b['num_layers']}x{b['hidden_size']}, in {b['input_size']}, "
        f"out {b['output_size']}, {b['quant']}; {b['macs_per_step'] / 1e3:.1f} k MAC/step, "
        f"class {b['size_class']})"
    )
    mode = f"paced at {plan['rate_hz']:g} Hz" if plan["rate_hz"] else "back to back"
    lines.append(
        f"plan:    {plan['steps']} steps x {plan['streams']} stream(s), {mode}, warmup {plan['warmup']}, "
        f"{plan['rounds']} interleaved rounds, {plan['threads']} thread(s), seed {plan['seed']} "
        f"(inputs {plan['inputs_sha256']}); timer overhead {plan['timer_overhead_ns']} ns"
    )
    if plan.get("blas_threads"):
        blas = ", ".join(f"{k} {v}" for k, v in plan["blas_threads"].items())
        lines[-1] += f"; numpy BLAS threads: {blas}"
    per = "tick of all streams" if plan["streams"] > 1 else "stream.step(x)"
    lines += ["", f"latency per {per}, us"]
    rows, notes = [], []
    for name, r in res["backends"].items():
        if "latency" not in r:
            rows.append([name, r["status"]] + [""] * 10)
            notes.append(f"  {name}: {r['detail']}")
            continue
        s, rat = r["latency"], r.get("ratios", {}).get("p50_us", {})
        par = r.get("parity")
        rows.append(
            [name, "ok" if par is None or par.get("ok") else "PARITY FAILED"]
            + [_f(s[stats.pkey(q)]) for q in stats.PERCENTILES]
            + [_f(s["max_us"]), _f(s["mean_us"]), _f(s["std_us"]), _f(s["steps_per_s"], 0)]
            + [_f(rat.get("vs_fastest"), 2), _f(rat.get("vs_native"), 2)]
        )
    hdr = [
        "backend",
        "status",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "mean",
        "std",
        "steps/s",
        "x fastest",
        "x native",
    ]
    lines.append(table(hdr, rows, left=2))
    lines += notes
    if plan["steps"] < 10_000:
        above = (
            f"only {plan['steps'] // 1000} step(s) lie above it" if plan["steps"] >= 1000 else "it is the max"
        )
        lines.append(
            f"  p99.9 of {plan['steps']} steps: {above}; use --steps 10000 or more for a stable p99.9"
        )

    deadlines = {n: r["deadline"] for n, r in res["backends"].items() if "deadline" in r}
    if deadlines:
        lines += ["", f"deadlines at {plan['rate_hz']:g} Hz (period {1e6 / plan['rate_hz']:,.0f} us)"]
        rows = [
            [n, d["ticks"], d["misses"], f"{d['miss_rate']:.3%}", _f(d["worst_lateness_us"])]
            + [_f(d["release_jitter_p99_us"]), _f(d["release_jitter_max_us"])]
            for n, d in deadlines.items()
        ]
        hdr = ["backend", "ticks", "missed", "miss rate", "worst late us", "start jitter p99", "max"]
        lines.append(table(hdr, rows))

    colds = {n: r["cold_start"] for n, r in res["backends"].items() if "cold_start" in r}
    if colds:
        lines += ["", "cold start (fresh process, median run) and memory"]
        rows = []
        for n, c in colds.items():
            if "error" in c:
                rows.append([n, "error: " + c["error"]] + [""] * 6)
                continue
            rows.append(
                [n, _f(c["total_ms"]), _f(c["python_ms"]), _f(c["import_ms"]), _f(c["load_ms"])]
                + [_f(c["first_step_ms"], 2), _f(c["resident_mb"]), _f(c["peak_rss_mb"])]
            )
        hdr = ["backend", "total ms", "python", "import", "load", "1st step", "resident MB", "peak RSS MB"]
        lines.append(table(hdr, rows))
        lines.append("  resident = RSS after load + first step - RSS after `import numpy`")

    if "gate" in res:
        g = res["gate"]
        bud = g["budget"]
        lim = (
            f"p99 <= {bud['p99_us']:.4g} us ({bud['p99_from']})"
            if bud["p99_us"] is not None
            else bud["p99_from"]
        )
        lines += ["", f"device {g['profile']} ({g['basis']} budget, class {bud['size_class']}): {lim}"]
        if bud["rate_hz"]:
            lines[-1] += f", misses <= {bud['max_miss_rate']:.2%}"
        if not g.get("machine_matches", True):
            lines.append(f"  (measured on {res['machine']['machine']}, not on the profile's CPU)")
        for n, v in g["backends"].items():
            lines.append(f"  {n}: " + ("PASS" if v["ok"] else "FAIL: " + "; ".join(v["failures"])))
        lines.append(f"gate: {'PASS' if g['ok'] else 'FAIL'}")

    if "emulation" in res:
        lines += [""] + format_emulation(res["emulation"])
    return "\n".join(lines)


def format_emulation(e: dict) -> list[str]:
    if not e["available"]:
        return [f"emulated {e['cpu']}: not available ({e['detail']})"]
    prof = e.get("profile")
    lines = [f"emulated {e['cpu']} ({e['steps']} steps): instructions per stream.step(x)"]
    for b, r in e["backends"].items():
        n = r.get("instructions_per_step", r.get("per_step"))
        if r.get("status", "ok") != "ok" or not isinstance(n, (int, float)):
            lines.append(f"  {b}: {r.get('status', 'error')}: {r.get('error') or r.get('detail') or r}")
            continue
        line = f"  {b}: {n:,.0f}"
        if prof and prof.get("ipc_assumed") and prof["cpu"].get("clock_mhz"):
            us = n / (prof["ipc_assumed"] * prof["cpu"]["clock_mhz"])
            line += (
                f"  (~{us:,.0f} us on {prof['name']} at an assumed IPC of {prof['ipc_assumed']:g}: a guess)"
            )
        lines.append(line)
    return lines
