"""Device profiles: what a target board is, what to run on it, and the latency budget a model must meet there.

Profiles are small JSON files in devices/profiles/ (name = file stem), or any JSON file path with the same
fields. A budget is a p99 per-step ceiling for the model's size class, tightened by the sample rate:

    budget_p99 = min(p99_us[size class], p99_fraction_of_period * 1e6 / rate_hz)

and, when stepping at a rate, at most max_miss_rate of ticks may finish after their deadline. The size class
comes from the multiply-adds per streamed step (recurrent layers + head), see size_class().
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rnnedge.runtime.errors import RnnEdgeError
from rnnedge.runtime.vocab import QEMU_CPU

from .torch_baseline import BACKENDS

FOLDER = Path(__file__).parent / "profiles"
ISA = ("neon", "dotprod", "fp16")
# (name, max multiply-adds per step): LSTM in 40 / out 12 is 27 k, 88 k, 306 k MAC at H = 64, 128, 256
SIZE_CLASSES = (("tiny", 32_000), ("small", 128_000), ("medium", 512_000), ("large", math.inf))


class ProfileError(RnnEdgeError):
    pass


def known() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.json"))


def load_profile(name_or_path: str | os.PathLike) -> dict:
    """A profile by name ('pi4') or by path to a JSON file; validated. ProfileError lists the known names."""
    s = str(name_or_path)
    path = Path(s) if (s.endswith(".json") or os.sep in s) else FOLDER / f"{s}.json"
    if not path.is_file():
        raise ProfileError(
            f"unknown device profile {s!r}: choose one of {', '.join(known())} "
            "or give the path of a profile .json"
        )
    try:
        prof = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProfileError(f"device profile {path} is not valid JSON: {e}") from e
    validate(prof, str(path))
    emu = prof.get("emulation")
    if isinstance(emu, dict) and prof["name"] in QEMU_CPU:  # the boards' CPUs are defined once, in vocab
        emu.setdefault("qemu_cpu", QEMU_CPU[prof["name"]])
    return prof


def validate(p: dict, where: str = "profile") -> None:
    """Raise ProfileError naming every missing or wrongly typed field."""
    errs = []

    def need(obj, key, types, path):
        if not isinstance(obj, dict) or key not in obj:
            errs.append(f"missing {path}{key}")
            return None
        v = obj[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in _tuple(types)):  # True is an int
            errs.append(f"{path}{key} must be {_names(types)}, got {type(v).__name__}")
            return None
        return v

    need(p, "name", str, "")
    need(p, "description", str, "")
    cpu = need(p, "cpu", dict, "")
    if cpu is not None:
        need(cpu, "model", str, "cpu.")
        need(cpu, "arch", str, "cpu.")
        cores = need(cpu, "cores", int, "cpu.")
        if cores is not None and cores < 1:
            errs.append("cpu.cores must be >= 1")
        isa = need(cpu, "isa", dict, "cpu.")
        if isa is not None:
            for f in ISA:
                need(isa, f, bool, "cpu.isa.")
    ram = need(p, "ram_mb", list, "")
    if ram is not None and not all(isinstance(r, int) and r > 0 for r in ram):
        errs.append("ram_mb must be a list of positive integers (the RAM sizes the board ships with)")
    oses = need(p, "os", list, "")
    for i, o in enumerate(oses or []):
        need(o, "name", str, f"os[{i}].")
        need(o, "python", str, f"os[{i}].")
    rec = need(p, "recommended", dict, "")
    if rec is not None:
        b = need(rec, "backend", str, "recommended.")
        if b is not None and b not in BACKENDS:
            errs.append(f"recommended.backend {b!r} is not one of {', '.join(BACKENDS)}")
        t = need(rec, "threads", int, "recommended.")
        if t is not None and t < 1:
            errs.append("recommended.threads must be >= 1")
    bud = need(p, "budgets", dict, "")
    if bud is not None:
        need(bud, "basis", str, "budgets.")
        need(bud, "derivation", str, "budgets.")
        classes = need(bud, "p99_us", dict, "budgets.")
        for c, _ in SIZE_CLASSES:
            if classes is not None:
                v = need(classes, c, (int, float, type(None)), "budgets.p99_us.")
                if v is not None and v <= 0:
                    errs.append(f"budgets.p99_us.{c} must be > 0 (or null: no ceiling)")
        f = need(bud, "p99_fraction_of_period", (int, float), "budgets.")
        if f is not None and not 0 < f <= 1:
            errs.append("budgets.p99_fraction_of_period must be in (0, 1]")
        m = need(bud, "max_miss_rate", (int, float), "budgets.")
        if m is not None and not 0 <= m < 1:
            errs.append("budgets.max_miss_rate must be in [0, 1)")
    if errs:
        raise ProfileError(f"invalid device profile {where}: " + "; ".join(errs))


def _tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _names(types):
    return " or ".join({"NoneType": "null"}.get(t.__name__, t.__name__) for t in _tuple(types))


# ----------------------------------------------------------------------------
# budgets


def macs_per_step(
    cell: str, input_size: int, hidden_size: int, num_layers: int, output_size: int, proj_size: int = 0
) -> int:
    """Multiply-adds of one streamed step: G*H*(I_k + S) per layer (+ an LSTM projection's S*H) + the
    head's O*S, S the size of h (proj_size or hidden_size)."""
    gates = {"lstm": 4, "gru": 3, "gru_lbr0": 3}.get(cell, 1)
    S = proj_size or hidden_size
    sizes = [input_size] + [S] * num_layers
    return (
        sum(gates * hidden_size * (sizes[k] + S) + proj_size * hidden_size for k in range(num_layers))
        + output_size * S
    )


def size_class(macs: int) -> str:
    return next(name for name, limit in SIZE_CLASSES if macs <= limit)


def budget_for(profile: dict, macs: int, rate_hz: float | None) -> dict:
    """The p99 ceiling (us) for a model of `macs` MAC/step on this device, and where it comes from."""
    b = profile["budgets"]
    cls = size_class(macs)
    limits = {}
    if b["p99_us"].get(cls) is not None:
        limits[f"{cls} model ceiling"] = float(b["p99_us"][cls])
    if rate_hz:
        frac = b["p99_fraction_of_period"]
        limits[f"{frac:g} x {1e6 / rate_hz:g} us period"] = frac * 1e6 / rate_hz
    out = {"size_class": cls, "macs": macs, "rate_hz": rate_hz, "max_miss_rate": b["max_miss_rate"]}
    if limits:
        why = min(limits, key=limits.get)
        out.update(p99_us=limits[why], p99_from=why)
    else:
        out.update(p99_us=None, p99_from="no ceiling for this size class and no --rate")
    return out


def check(budget: dict, latency: dict, deadline: dict | None) -> list[str]:
    """Failures of one backend's measurement against a budget ([] = meets it)."""
    fails = []
    if budget["p99_us"] is not None and latency["p99_us"] > budget["p99_us"]:
        fails.append(
            f"p99 {latency['p99_us']:.1f} us > budget {budget['p99_us']:.4g} us ({budget['p99_from']})"
        )
    if deadline is not None and deadline["miss_rate"] > budget["max_miss_rate"]:
        fails.append(
            f"{deadline['misses']} of {deadline['ticks']} deadlines missed ({deadline['miss_rate']:.2%} > "
            f"{budget['max_miss_rate']:.2%}), worst {deadline['worst_lateness_us']:.0f} us late"
        )
    return fails
