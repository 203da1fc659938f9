"""The validated bundle format: schema, limits, file rules, listed payloads, weight shapes, file modes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rnnedge.runtime as rt
from rnnedge.runtime import bundle as B

from .conftest import CELLS, make_bundle


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def write(path: Path, m: dict) -> None:
    (path / "manifest.json").write_text(json.dumps(m))


def reseal(path: Path, name: str) -> None:
    """What an attacker (or a careless tool) does: rewrite a file's checksum in the manifest to match."""
    m = manifest(path)
    data = (path / name).read_bytes()
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write(path, m)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    # every cell x scheme goes through the same checks in test_runtime.py; here one cell, every storage type
    for scheme in ("fp32", "fp16", "int8"):
        out["lstm", scheme] = make_bundle(root, cell="lstm", layers=2, scheme=scheme, hidden=8)[0]
    out["classify"] = make_bundle(root, cell="gru", task="classify", hidden=8, name="cls")[0]
    return out


@pytest.fixture
def bundle(bundles, tmp_path):
    """A private copy of an LSTM fp32 bundle to damage."""
    import shutil

    dst = tmp_path / "b"
    shutil.copytree(bundles["lstm", "fp32"], dst)
    return dst


# ----------------------------------------------------------------------------
# the published schema


def test_schema_ships_next_to_format_version_and_is_valid_json_schema():
    schema = B.manifest_schema()
    assert B.SCHEMA_FILE.parent == Path(B.__file__).parent
    assert schema["properties"]["format_version"]["const"] == B.FORMAT_VERSION
    assert schema["properties"]["model"]["properties"]["cell"]["enum"] == list(B.CELLS)
    assert schema["properties"]["quant"]["properties"]["scheme"]["enum"] == list(B.SCHEMES)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)


def test_writer_manifests_validate_against_the_schema(bundles):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(B.manifest_schema())
    for path in bundles.values():
        m = manifest(path)
        errors = [e.message for e in validator.iter_errors(m)]
        assert not errors, (path, errors)
        B.validate_schema(m, B.manifest_schema())  # and the runtime's own validator agrees
        assert rt.load_bundle(path).validated


def test_own_validator_agrees_with_jsonschema_on_edits(bundles):
    """The runtime's small validator rejects at least everything jsonschema rejects (it is stricter only
    on integers written as floats)."""
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(B.manifest_schema())
    m0 = manifest(bundles["lstm", "fp32"])
    for where, m in edits(m0):
        ours = True
        try:
            B.validate_schema(m, B.manifest_schema())
        except B._Invalid:
            ours = False
        if not validator.is_valid(m):
            assert not ours, where


# ----------------------------------------------------------------------------
# files: listed, plain names, regular, bounded


@pytest.mark.parametrize("how", ["delete files", "delete one entry", "empty files"])
def test_a_manifest_that_omits_a_file_it_uses_is_rejected(bundle, bundles, how):
    import shutil

    other = bundles["lstm", "int8"]  # same shapes, other weights: would load silently without the check
    shutil.copy(other / "weights.safetensors", bundle / "weights.safetensors")
    m = manifest(bundle)
    if how == "delete files":
        del m["files"]
    elif how == "delete one entry":
        del m["files"]["weights.safetensors"]
    else:
        m["files"] = {}
    write(bundle, m)
    with pytest.raises(rt.BundleError, match="files") as e:
        rt.load(bundle)
    assert "manifest.json" in str(e.value)
    with pytest.raises(rt.BundleError):
        rt.load(bundle, verify=False)


@pytest.mark.parametrize(
    "name",
    [
        "/dev/zero",
        "../weights.safetensors",
        "a/b",
        "..",
        ".",
        ".hidden",
        "",
        "weights.safetensors\n",
        "x" * 200,
    ],
)
def test_artifact_paths_must_be_plain_names(bundle, name):
    m = manifest(bundle)
    m["artifacts"]["native"]["file"] = name
    m["files"][name] = m["files"]["weights.safetensors"]
    write(bundle, m)
    t = time.monotonic()
    with pytest.raises(rt.BundleError, match="artifacts.native.file|files"):
        rt.load(bundle)
    assert time.monotonic() - t < 1


def test_files_entries_outside_the_folder_are_never_probed(bundle):
    m = manifest(bundle)
    m["files"]["../../../../etc/hostname"] = {"sha256": "0" * 64, "bytes": 1}
    write(bundle, m)
    with pytest.raises(rt.BundleError, match="not an allowed key"):
        rt.load(bundle)


def test_a_symlink_to_dev_zero_is_rejected_at_once(bundle):
    w = bundle / "weights.safetensors"
    w.unlink()
    w.symlink_to("/dev/zero")
    t = time.monotonic()
    with pytest.raises(rt.BundleError, match="symbolic link"):
        rt.load(bundle)
    with pytest.raises(rt.BundleError, match="symbolic link"):
        rt.load(bundle, verify=False)
    assert time.monotonic() - t < 1


def test_manifest_symlink_to_dev_zero_and_fifos_and_folders_are_rejected(bundle, tmp_path):
    w = bundle / "weights.safetensors"
    w.unlink()
    os.mkfifo(w)  # opening a FIFO for reading would block forever without O_NONBLOCK
    t = time.monotonic()
    with pytest.raises(rt.BundleError, match="not a regular file"):
        rt.load(bundle)
    w.unlink()
    w.mkdir()
    with pytest.raises(rt.BundleError, match="not a regular file"):
        rt.load(bundle)
    other = tmp_path / "evil"
    other.mkdir()
    (other / "manifest.json").symlink_to("/dev/zero")
    with pytest.raises(rt.BundleError, match="symbolic link"):
        rt.load(other)
    assert time.monotonic() - t < 2


def test_sizes_are_checked_before_reading(bundle):
    big = B.Limits(max_file_bytes=1000)
    with pytest.raises(rt.BundleError, match="above the limit"):
        rt.load_bundle(bundle, limits=big)
    with pytest.raises(rt.BundleError, match="above the limit"):
        rt.load_bundle(bundle, verify=False, limits=big)
    with pytest.raises(rt.BundleError, match="manifest.json.*above the limit"):
        rt.load_bundle(bundle, limits=B.Limits(max_manifest_bytes=100))


def test_limits_are_configurable(bundle):
    with pytest.raises(rt.BundleError, match="model.hidden_size.*Limits.max_hidden_size"):
        rt.load_bundle(bundle, limits=B.Limits(max_hidden_size=4))
    with pytest.raises(rt.BundleError, match="model.num_layers"):
        rt.load_bundle(bundle, limits=B.Limits(max_layers=1))
    assert rt.load_bundle(bundle, limits=B.Limits(max_hidden_size=8, max_layers=2))


# ----------------------------------------------------------------------------
# weights against the manifest's sizes


@pytest.mark.parametrize(
    "field, value",
    [
        ("output_size", 4),
        ("input_size", 4),
        ("hidden_size", 16),
        ("num_layers", 1),
        ("num_layers", 3),
        ("cell", "gru"),
        ("cell", "rnn_tanh"),
    ],
)
def test_weights_must_have_the_manifests_shapes(bundle, field, value):
    m = manifest(bundle)
    md = m["model"]
    md[field] = value
    m["io"] = B.io_spec(md["cell"], md["input_size"], md["hidden_size"], md["num_layers"], md["output_size"])
    m["normalization"] = {k: v for k, v in m["normalization"].items() if k == "folded_into_weights"}
    write(bundle, m)
    with pytest.raises(rt.BundleError, match="weights? .*manifest") as e:
        rt.load(bundle)
    assert "weights.safetensors" in str(e.value)


def test_weights_of_another_scheme_or_extra_tensors_are_rejected(bundle, bundles):
    import shutil

    shutil.copy(bundles["lstm", "fp16"] / "weights.safetensors", bundle / "weights.safetensors")
    reseal(bundle, "weights.safetensors")
    with pytest.raises(rt.BundleError, match="F16.*need F32"):
        rt.load(bundle)
    from safetensors.numpy import save_file

    w = rt.load_bundle(bundles["lstm", "fp32"]).raw_weights()
    save_file({**w, "extra": np.zeros(3, np.float32)}, str(bundle / "weights.safetensors"))
    reseal(bundle, "weights.safetensors")
    with pytest.raises(rt.BundleError, match="unexpected \\['extra'\\]"):
        rt.load(bundle)


def test_non_finite_weights_are_rejected(bundle, bundles):
    from safetensors.numpy import save_file

    w = rt.load_bundle(bundles["lstm", "fp32"]).raw_weights()
    w["head.bias"] = w["head.bias"].copy()
    w["head.bias"][0] = np.nan
    save_file(w, str(bundle / "weights.safetensors"))
    reseal(bundle, "weights.safetensors")
    with pytest.raises(rt.BundleError, match="non-finite"):
        rt.load(bundle)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("scheme", ["fp32", "fp16", "int8"])
def test_weights_spec_matches_what_the_exporter_writes(bundles, cell, scheme):
    """weights_spec (what the check demands) against the tensors the exporter's own code stores."""
    from rnnedge.export import quantize
    from rnnedge.export.reference import fold_normalization

    from .conftest import random_model

    m = random_model(cell, layers=2, hidden=6, inp=3, out=2)
    stored = quantize.store(fold_normalization(m), scheme)
    dtypes = {np.float32: "F32", np.float16: "F16", np.int8: "I8"}
    got = {k: (dtypes[v.dtype.type], v.shape) for k, v in stored.items()}
    assert got == B.weights_spec(cell, 3, 6, 2, 2, scheme)


# ----------------------------------------------------------------------------
# targeted manifest edits: BundleError or a working model, quickly, in bounded memory

BAD_VALUES = [None, True, -1, 0, 10**9, 10**30, 1e9, 1.5, float("nan"), "x", "x" * 5000, [], {}, [[[[[]]]]]]


def edits(m: dict):
    """(where, edited manifest) for every field: deleted, and replaced by each bad value."""

    def walk(node, path):
        items = node.items() if isinstance(node, dict) else enumerate(node[:2])  # first items of lists
        for k, v in list(items):
            yield path + [k], v
            if isinstance(v, (dict, list)):
                yield from walk(v, path + [k])

    for path, _ in walk(m, []):
        for value in ["<delete>", *BAD_VALUES]:
            e = copy.deepcopy(m)
            node = e
            for k in path[:-1]:
                node = node[k]
            if value == "<delete>":
                del node[path[-1]]
            else:
                node[path[-1]] = value
            yield ".".join(map(str, path)) + f"={value!r:.20}", e


def test_manifest_fuzz_targeted_edits_end_in_bundle_error(bundles, tmp_path):
    import shutil

    src = bundles["classify"]
    dst = tmp_path / "f"
    shutil.copytree(src, dst)
    m0 = manifest(src)
    outcomes = {"BundleError": 0, "loaded": 0}
    slowest = 0.0
    tracemalloc.start()
    try:
        for where, m in edits(m0):
            (dst / "manifest.json").write_text(json.dumps(m))
            tracemalloc.reset_peak()
            t = time.monotonic()
            try:
                model = rt.load(dst)
                s = model.stream()
                model.decide(s.step(np.zeros(model.input_size, np.float32)))
                outcomes["loaded"] += 1
            except rt.BundleError as e:
                assert "manifest.json" in str(e) or "weights.safetensors" in str(e), (where, e)
                outcomes["BundleError"] += 1
            except Exception as e:  # noqa: BLE001
                pytest.fail(f"{where}: {type(e).__name__}: {e}")
            slowest = max(slowest, time.monotonic() - t)
            assert tracemalloc.get_traced_memory()[1] < 32 << 20, where
    finally:
        tracemalloc.stop()
    assert outcomes["BundleError"] > 500, outcomes
    assert slowest < 2.0


@pytest.mark.parametrize("field", ["num_layers", "hidden_size", "input_size", "output_size"])
@pytest.mark.parametrize("value", [10**9, 10**6, 2**31, 2**63, -(2**31)])
def test_huge_sizes_are_rejected_before_anything_is_allocated(bundle, field, value):
    m = manifest(bundle)
    m["model"][field] = value
    write(bundle, m)
    tracemalloc.start()
    t = time.monotonic()
    try:
        with pytest.raises(rt.BundleError, match=f"model.{field}"):
            rt.load(bundle)
        assert tracemalloc.get_traced_memory()[1] < 4 << 20
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t < 0.5


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100000,
        '{"format": "rnnedge-bundle", "format_version": 1' + "0" * 5000 + "}",
        "\x00" * 100,
        "\udc80",
    ],
)
def test_pathological_json_is_a_bundle_error(bundle, text):
    (bundle / "manifest.json").write_text(text, errors="surrogateescape")
    with pytest.raises(rt.BundleError):
        rt.load(bundle)


def test_labels_must_match_the_outputs(bundles, tmp_path):
    import shutil

    dst = tmp_path / "c"
    shutil.copytree(bundles["classify"], dst)
    m = manifest(dst)
    m["task"]["labels"] = m["task"]["labels"][:-1]
    write(dst, m)
    with pytest.raises(rt.BundleError, match="task.labels"):
        rt.load(dst)


# ----------------------------------------------------------------------------
# files rnnedge writes honour the umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert B.current_umask() == umask
        B.atomic_write_text(tmp_path / "f.json", "{}")
        path, _, _ = make_bundle(tmp_path, name=f"b{umask:o}")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == mode
    for f in path.iterdir():
        assert f.stat().st_mode & 0o777 == mode, f
