"""Parity: stream held-out sequences through a backend and compare with the quantised reference.

Recorded in the manifest under parity[<backend>]. Tolerances (from the numerics contract):
    weight-only schemes (fp32, fp16, int8): |y - ref| <= ATOL + RTOL * |ref| at every step
    activation-quantised schemes (int8-dynamic, int8-static): max abs error within 5 % of the output range
    (every task; a format may set a tighter bound per interpreter, e.g. TFLite int8-static on LiteRT, which
    computes the reference exactly), and for classification the decisions also agree on >= 99 % of
    sequences: agreement alone would hide a large numeric deviation
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

ATOL, RTOL = 1e-4, 1e-5
MIN_AGREEMENT = 0.99
MAX_REL_ERROR = 0.05  # activation-quantised regression: max abs error / output range


def compare(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],  # (outputs (T, O), reference outputs (T, O)) per sequence
    classify: bool,
    targets: Sequence | None = None,  # class index per sequence (classify): accuracy of both sides
) -> dict:
    """The one evaluation of outputs against a reference, used by parity, the ONNX cost-of-quantisation
    figures and the exporter's accuracy report. Returns sequences, steps, max_abs_error, relative_error (max
    abs error / the range of the reference outputs), max_excess (over ATOL + RTOL * |ref|), and for
    classification agreement (last-step decisions) and, with targets, accuracy and reference_accuracy."""
    n = steps = agree = correct = ref_correct = 0
    max_err = max_excess = 0.0
    lo, hi = np.inf, -np.inf
    for i, (out, ref) in enumerate(pairs):
        out, ref = np.asarray(out), np.asarray(ref)
        n, steps = n + 1, steps + len(ref)
        if len(ref):
            err = np.abs(out - ref)
            max_err = max(max_err, float(err.max()))
            max_excess = max(max_excess, float((err - (ATOL + RTOL * np.abs(ref))).max()))
            lo, hi = min(lo, float(ref.min())), max(hi, float(ref.max()))
        if classify:
            d, r = int(np.argmax(out[-1])), int(np.argmax(ref[-1]))
            agree += d == r
            if targets is not None:
                correct += d == int(targets[i])
                ref_correct += r == int(targets[i])
    res = {
        "sequences": n,
        "steps": int(steps),
        "max_abs_error": max_err,
        "relative_error": max_err / max(hi - lo, 1e-6) if n else 0.0,
        "max_excess": max_excess,
    }
    if classify and n:
        res["agreement"] = agree / n
        if targets is not None:
            res["accuracy"], res["reference_accuracy"] = correct / n, ref_correct / n
    return res


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
    stream_equal = True

    def pairs():
        nonlocal stream_equal
        for i, seq in enumerate(sequences):
            out = stream.run(seq)  # resets first
            if i < stream_checks:  # step-by-step must equal run() bit for bit
                stream.reset()
                stepped = np.stack([stream.step(x) for x in seq])
                stream_equal &= bool(np.array_equal(stepped, out))
            yield out, reference(seq)

    res = compare(pairs(), task == "classify", targets)
    res.pop("reference_accuracy", None)
    max_excess = res.pop("max_excess")
    res["stream_equals_run"] = stream_equal
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
