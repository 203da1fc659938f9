"""Parity: stream held-out sequences through a backend and compare with the quantised reference.

Recorded in the manifest under parity[<backend>]. Tolerances (from the numerics contract):
    weight-only schemes (fp32, fp16, int8): |y - ref| <= ATOL + RTOL * |ref| at every step
    activation-quantised schemes (int8-dynamic, int8-static): max abs error within 5 % of the output range
    (every task; a format may set a tighter bound per interpreter, e.g. TFLite int8-static on LiteRT, which
    computes the reference exactly), and for classification the decisions also agree on >= 99 % of
    sequences: agreement alone would hide a large numeric deviation
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ATOL, RTOL = 1e-4, 1e-5
MIN_AGREEMENT = 0.99
MAX_REL_ERROR = 0.05  # activation-quantised regression: max abs error / output range


def check_parity(
    model,  # rnnedge.runtime.Model
    reference: Callable[[np.ndarray], np.ndarray],  # (T, I) -> (T, O)
    sequences: Sequence[np.ndarray],  # held-out raw sequences, each (T_i, I)
    task: str,
    exact: bool,
    targets: Sequence | None = None,  # class indices for classify (accuracy); optional
    stream_checks: int = 2,
    max_rel_error: float = MAX_REL_ERROR,  # activation-quantised: this interpreter's bound (see exporter)
) -> dict:
    """Returns {'ok', 'max_abs_error', 'agreement', 'accuracy', ...}; never raises on a mismatch."""
    stream = model.stream()
    max_err = max_excess = 0.0
    ref_lo, ref_hi = np.inf, -np.inf
    agree = correct = 0
    stream_equal = True
    for i, seq in enumerate(sequences):
        ref = reference(seq)
        out = stream.run(seq)  # resets first
        if i < stream_checks:  # step-by-step must equal run() bit for bit
            stream.reset()
            stepped = np.stack([stream.step(x) for x in seq])
            stream_equal &= bool(np.array_equal(stepped, out))
        err = np.abs(out - ref)
        max_err = max(max_err, float(err.max()))
        max_excess = max(max_excess, float((err - (ATOL + RTOL * np.abs(ref))).max()))
        ref_lo, ref_hi = min(ref_lo, float(ref.min())), max(ref_hi, float(ref.max()))
        if task == "classify":
            d = int(np.argmax(out[-1]))
            agree += d == int(np.argmax(ref[-1]))
            if targets is not None:
                correct += d == int(targets[i])
    n = len(sequences)
    res = {
        "sequences": n,
        "steps": int(sum(len(s) for s in sequences)),
        "max_abs_error": max_err,
        "stream_equals_run": stream_equal,
    }
    if task == "classify":
        res["agreement"] = agree / n
        if targets is not None:
            res["accuracy"] = correct / n
    span = max(ref_hi - ref_lo, 1e-6)
    res["relative_error"] = max_err / span  # max |y - ref| over the range of the reference outputs
    if exact:
        res["tolerance"] = f"|y-ref| <= {ATOL:g} + {RTOL:g}*|ref|"
        res["ok"] = bool(max_excess <= 0.0 and stream_equal)
    else:
        res["tolerance"] = f"max |y-ref| <= {max_rel_error:.2g} x the output range"
        res["max_relative_error"] = max_rel_error  # the bound, recorded beside the measured relative_error
        res["ok"] = bool(res["relative_error"] <= max_rel_error and stream_equal)
        if task == "classify":
            res["tolerance"] += f" and decision agreement >= {MIN_AGREEMENT:.0%}"
            res["ok"] = bool(res["ok"] and res["agreement"] >= MIN_AGREEMENT)
    return res
