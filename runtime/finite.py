"""The NaN/Inf policy's shared pieces (every backend uses these, so all behave the same).

Inputs: a sample with NaN/Inf is rejected (InputError, state unchanged) unless the stream was opened with
nonfinite="hold" (each bad value replaced by its channel's last finite value) or "reset" (the state is
reset, a new sequence starts, and bad values are replaced by the channel's training mean).
Outputs: a step whose output or new state is NaN/Inf raises OutputError and the state is rolled back to what
it was before the call.
"""

from __future__ import annotations

import numpy as np

from .errors import OutputError

POLICIES = ("reject", "hold", "reset")


def all_finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.isfinite(a).all()) for a in arrays)


def raise_bad_output(what: str = "step"):
    raise OutputError(
        f"{what} gave a non-finite output or state (NaN/Inf: the model overflows on this input); the state "
        "was rolled back to before the call"
    )
