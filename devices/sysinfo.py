"""The machine a benchmark ran on: CPU, cores, ISA features, governor, load, Python and library versions.

Everything is read from /proc and /sys where it exists (Linux, Raspberry Pi OS) and left out where it does
not; nothing here imports the heavy libraries (versions come from package metadata).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

LIBRARIES = ("numpy", "onnxruntime", "ai-edge-litert", "tflite-runtime", "torch", "rnnedge")

# /proc/cpuinfo "CPU part" of the Arm cores a Raspberry Pi (or a generic aarch64 board) has
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1"}


def read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip("\x00\n ")
    except OSError:
        return None


def cpuinfo() -> dict[str, str]:
    """First processor's fields of /proc/cpuinfo (and the Hardware/Model lines ARM kernels put at the end)."""
    text = read("/proc/cpuinfo") or ""
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep and k.strip() not in out:
            out[k.strip()] = v.strip()
    return out


def cpu_model(info: dict[str, str]) -> str:
    if "model name" in info:  # x86 (and some ARM kernels)
        return info["model name"]
    part = info.get("CPU part", "").lower()
    if part:
        return ARM_PARTS.get(part, f"Arm CPU part {part}")
    return platform.processor() or platform.machine()


def isa_features(info: dict[str, str]) -> dict[str, bool]:
    """The features the profiles record: neon / dotprod / fp16 on Arm, avx2 / fma / avx512 / vnni on x86."""
    flags = set((info.get("flags") or info.get("Features") or "").split())
    if "flags" in info:
        return {
            "neon": False,
            "dotprod": False,
            "fp16": False,
            "avx2": "avx2" in flags,
            "fma": "fma" in flags,
            "avx512": "avx512f" in flags,
            "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        }
    return {
        "neon": "asimd" in flags or "neon" in flags,
        "dotprod": "asimddp" in flags,
        "fp16": "asimdhp" in flags,
    }


def versions() -> dict[str, str | None]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def describe() -> dict:
    info = cpuinfo()
    cpu0 = "/sys/devices/system/cpu/cpu0/cpufreq/"
    khz = read(cpu0 + "scaling_cur_freq")
    max_khz = read(cpu0 + "cpuinfo_max_freq")
    temp = read("/sys/class/thermal/thermal_zone0/temp")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "board": read("/proc/device-tree/model"),  # "Raspberry Pi 4 Model B Rev 1.4" on a Pi
        "machine": platform.machine(),
        "cpu": cpu_model(info),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "isa": isa_features(info),
        "governor": read(cpu0 + "scaling_governor"),
        "mhz": int(khz) / 1000 if khz and khz.isdigit() else None,
        "max_mhz": int(max_khz) / 1000 if max_khz and max_khz.isdigit() else None,
        "temp_c": int(temp) / 1000 if temp and temp.lstrip("-").isdigit() else None,
        "loadavg": load,
        "os": platform_os(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "versions": versions(),
    }


def platform_os() -> str:
    rel = read("/etc/os-release") or ""
    for line in rel.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.platform()


def format_machine(m: dict) -> str:
    """Two or three human lines for the top of a report."""
    isa = ", ".join(k for k, v in m["isa"].items() if v) or "-"
    cpu = f"{m['cpu']} ({m['machine']}, {m['cores']} cores, {m['cores_usable']} usable; {isa})"
    freq = []
    if m.get("governor"):
        freq.append(f"governor {m['governor']}")
    if m.get("mhz"):
        freq.append(f"{m['mhz']:.0f}/{m['max_mhz'] or 0:.0f} MHz")
    if m.get("temp_c") is not None:
        freq.append(f"{m['temp_c']:.0f} C")
    if m.get("loadavg"):
        freq.append("load " + " ".join(str(x) for x in m["loadavg"]))
    libs = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [f"machine: {m['board'] + ': ' if m.get('board') else ''}{cpu}"]
    if freq:
        lines.append("         " + "; ".join(freq))
    lines.append(f"         {m['os']}; {m['python']}; {libs}")
    return "\n".join(lines)
