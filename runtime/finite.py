"""The NaN/Inf policy's shared pieces (every backend uses these, so all behave the same).

Inputs: a sample with NaN/Inf is rejected (InputError, state unchanged) unless the stream was opened with
nonfinite="hold" (each bad value replaced by its channel's last finite value) or "reset" (the state is
reset, a new sequence starts, and bad values are replaced by the channel's training mean).
Outputs: a step whose output or new state is NaN/Inf raises OutputError and the state is rolled back to what
it was before the call.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import OutputError

POLICIES = ("reject", "hold", "reset")


try:  # the compiled kernel's checks: one C call (~0.1 us) instead of a numpy call per array (~0.6 us)
    from ._kernel import finite as _c_finite
    from ._kernel import finite_sample as _c_finite_sample
except ImportError:  # no compiler at install time
    _c_finite = _c_finite_sample = None


def all_finite(*arrays: np.ndarray) -> bool:
    """True if no value of any array is NaN/Inf."""
    if _c_finite is not None:
        try:
            return _c_finite(*arrays)
        except TypeError:  # not C-contiguous float32: numpy decides
            pass
    return all(_numpy_finite(a) for a in arrays)


def _numpy_finite(a: np.ndarray) -> bool:
    """One dot product (NaN/Inf make v.v non-finite; a huge finite value may overflow it too, so only then is
    every value checked)."""
    v = a.reshape(-1)
    return math.isfinite(float(v.dot(v))) or bool(np.isfinite(a).all())


def finite_sample(x, n: int) -> bool:
    """True if x is a float32 (n,) numpy array of finite values: a sample the runners take as it is. False:
    anything else (other dtypes, shapes, lists, NaN/Inf), which the Stream converts, repairs or rejects."""
    if type(x) is not np.ndarray:
        return False
    if _c_finite_sample is not None:
        return _c_finite_sample(x, n)
    return x.dtype == np.float32 and x.shape == (n,) and _numpy_finite(x)


def raise_bad_output(what: str = "step"):
    raise OutputError(
        f"{what} gave a non-finite output or state (NaN/Inf: the model overflows on this input); the state "
        "was rolled back to before the call"
    )
