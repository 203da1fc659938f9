"""Property-based fuzzing (hypothesis, bounded: part of the suite) and a bounded atheris run per loader.

The long runs are documented in README.md here.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import targets

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
SETTINGS = settings(
    max_examples=int(os.environ.get("RNNEDGE_HYPOTHESIS_EXAMPLES", 150)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples every run: CI stays reproducible
)


def seeds(target: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((HERE / "corpus" / target).iterdir())]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def paths(m, prefix=()):
    items = m.items() if isinstance(m, dict) else enumerate(m[:3])
    for k, v in items:
        yield (*prefix, k)
        if isinstance(v, (dict, list)):
            yield from paths(v, (*prefix, k))


MANIFESTS = [json.loads(s[1:]) for s in seeds("manifest")]
PATHS = [list(paths(m)) for m in MANIFESTS]


@st.composite
def edited_manifests(draw):
    k = draw(st.integers(0, len(MANIFESTS) - 1))
    m = copy.deepcopy(MANIFESTS[k])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS[k]))
        node = m
        try:
            for key in path[:-1]:
                node = node[key]
            if draw(st.booleans()):
                node[path[-1]] = draw(json_values)
            elif isinstance(node, dict):
                del node[path[-1]]
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit removed or replaced this path
    return k, m


@SETTINGS
@given(edited_manifests())
def test_manifest_edits_are_bundle_errors_or_load(km):
    k, m = km
    targets.manifest(bytes([k]) + json.dumps(m).encode())


@SETTINGS
@given(edited_manifests())
def test_own_schema_validator_rejects_all_that_jsonschema_rejects(km):
    jsonschema = pytest.importorskip("jsonschema")
    from rnnedge.runtime import bundle as B

    _, m = km
    if not jsonschema.Draft202012Validator(B.manifest_schema()).is_valid(m):
        with pytest.raises(B._Invalid):
            B.validate_schema(m, B.manifest_schema())


@st.composite
def mutated(draw, target: str):
    data = bytearray(draw(st.sampled_from(seeds(target))))
    for _ in range(draw(st.integers(1, 6))):
        if len(data) < 2:  # only the selector byte is left
            break
        op = draw(st.integers(0, 3))
        i = draw(st.integers(1, max(1, len(data) - 1)))
        if op == 0:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            v = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, len(data), 2**16]))
            data[i : i + 4] = v.to_bytes(4, "little")
        elif op == 2:
            del data[i : i + draw(st.integers(1, 64))]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@SETTINGS
@given(mutated("tflite"))
def test_tflite_checker_rejects_or_the_official_parser_accepts(data):
    targets.tflite(data)


@SETTINGS
@given(mutated("safetensors"))
def test_mutated_weights_are_bundle_errors_or_finite(data):
    targets.safetensors(data)


@settings(SETTINGS, max_examples=min(40, SETTINGS.max_examples))
@given(mutated("onnx"))
def test_mutated_onnx_is_a_bundle_error_or_runs(data):
    pytest.importorskip("onnxruntime")
    targets.onnx(data)


@SETTINGS
@given(mutated("checkpoint"), st.booleans())
def test_mutated_checkpoints_are_checkpoint_errors_or_load(data, sealed):
    """Re-sealed: any error is a CheckpointError; not re-sealed: any change is rejected."""
    targets.checkpoint(bytes([data[0] | (0 if sealed else 0x80)]) + data[1:])


@SETTINGS
@given(mutated("npy"))
def test_mutated_npy_inputs_are_errors_or_stream(data):
    targets.npy(data)


@SETTINGS
@given(st.binary(max_size=200) | mutated("csv"))
def test_csv_inputs_are_errors_or_stream(data):
    targets.csv(data)


@SETTINGS
@given(
    st.sampled_from(["input_size", "hidden_size", "num_layers", "output_size"]),
    st.integers(min_value=-(2**64), max_value=2**64),
)
def test_any_size_is_rejected_or_loads_quickly(field, value):
    import time

    m = copy.deepcopy(MANIFESTS[0])
    m["model"][field] = value
    t = time.monotonic()
    targets.manifest(b"\x00" + json.dumps(m).encode())
    assert time.monotonic() - t < 1.0


# ----------------------------------------------------------------------------
# atheris: a bounded coverage-guided run per loader (the long runs are in README.md)


@pytest.mark.parametrize("target", list(targets.TARGETS))
def test_atheris_bounded_run(target, tmp_path):
    pytest.importorskip("atheris")
    if target == "onnx":
        pytest.importorskip("onnxruntime")
    runs = {"onnx": 150, "checkpoint": 300}.get(target, 500)
    (tmp_path / "corpus").mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run_atheris", target, f"-runs={runs}", "-timeout=20",
         "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus"),
         str(HERE / "corpus" / target)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Done {runs} runs" in r.stderr
