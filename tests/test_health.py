"""The seams (issue 12): one definition of each vocabulary and rule, a typed export-format registry, library
calls without process-wide side effects, one CLI error path with documented exit codes, progress suited to
where it goes. Each test names the finding it would have caught."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rnnedge.runtime as rt
from rnnedge.export import formats
from rnnedge.export.exporter import ExportError, ExportJob
from rnnedge.export.verify import compare
from rnnedge.runtime import bundle as B
from rnnedge.runtime import quant, vocab

from rnnedge import cli
from rnnedge.progress import Progress

from .conftest import make_bundle, random_model, random_seqs

ROOT = Path(__file__).resolve().parents[1]
RNNEDGE = [sys.executable, "-m", "rnnedge"]


def run_cli(*args, env=None, cwd=None, timeout=300):
    return subprocess.run(
        [*RNNEDGE, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def shadowed(tmp_path, *modules) -> dict:
    """An environment in which `modules` are "not installed" (a package that raises ModuleNotFoundError)."""
    site = tmp_path / "shadow"
    for name in modules:
        (site / name).mkdir(parents=True, exist_ok=True)
        (site / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n'
        )
    return {**os.environ, "PYTHONPATH": str(site)}


# ----------------------------------------------------------------------------
# one definition of each vocabulary


def test_every_vocabulary_comes_from_runtime_vocab():
    schema = B.manifest_schema()["properties"]
    assert schema["model"]["properties"]["cell"]["enum"] == list(
        vocab.BUNDLE_CELLS
    )  # + cells only imports make
    assert schema["quant"]["properties"]["scheme"]["enum"] == list(vocab.SCHEMES)
    assert schema["artifacts"]["propertyNames"]["enum"] == list(vocab.FORMATS)
    assert tuple(formats.FORMATS) == vocab.FORMATS
    assert set(vocab.ARTIFACT_OF) == set(vocab.BACKENDS) and set(vocab.ARTIFACT_OF.values()) == set(
        vocab.FORMATS
    )
    assert set(vocab.WEIGHT_ONLY) | set(vocab.ACTIVATION_QUANTISED) == set(vocab.SCHEMES)
    from rnnedge.devices import torch_baseline
    from rnnedge.devices.arm import emulate
    from rnnedge.export import quantize
    from rnnedge.runtime.backends import BACKENDS
    from rnnedge.train import data, model

    assert quantize.SCHEMES is vocab.SCHEMES and model.CELLS is vocab.CELLS and data.TASKS is vocab.TASKS
    assert BACKENDS is vocab.BACKENDS and emulate.BACKENDS is vocab.BACKENDS
    assert torch_baseline.BACKENDS == (*vocab.BACKENDS, "torch")
    assert set(vocab.QEMU_CPU.values()) <= set(emulate.CPUS)
    from rnnedge.devices import profiles

    for name in profiles.known():  # every ARM board's emulated CPU comes from vocab.QEMU_CPU
        prof = profiles.load_profile(name)
        assert (prof["cpu"]["arch"] == "aarch64") == (name in vocab.QEMU_CPU), name
        if "emulation" in prof:
            assert prof["emulation"]["qemu_cpu"] == vocab.QEMU_CPU[name]
    assert "qemu_cpu" not in (ROOT / "devices" / "profiles" / "pi4.json").read_text()


def test_cli_choices_are_the_vocabularies():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    opts = {a.dest: a for a in sub["train"]._actions}
    assert tuple(opts["cell"].choices) == vocab.CELLS and tuple(opts["task"].choices) == vocab.TASKS
    opts = {a.dest: a for a in sub["run"]._actions}
    assert tuple(opts["backend"].choices) == vocab.BACKENDS
    opts = {a.dest: a for a in sub["export"]._actions}
    assert tuple(opts["onnx_graph"].choices) == formats.option_choices("onnx_graph")
    assert tuple(opts["tflite_target"].choices) == formats.option_choices("tflite_target")
    assert opts["tflite_target"].option_strings == ["--tflite-target", "--target"]


# ----------------------------------------------------------------------------
# one scheme rule, one atomic writer, errors below the bundle reader


@pytest.mark.parametrize("scheme", vocab.SCHEMES)
def test_effective_weights_are_what_a_bundle_dequantizes(tmp_path, scheme):
    path, _, job = make_bundle(tmp_path, cell="gru", scheme=scheme)
    eff = quant.effective(job.folded, scheme)
    loaded = rt.load_bundle(path).weights()
    assert set(eff) == set(loaded)
    for name in eff:
        assert np.array_equal(eff[name], loaded[name]), name
    if scheme != "fp32":  # the rule quantises: the effective weights are not the float ones
        assert any(not np.array_equal(eff[n], job.folded[n]) for n in eff)


def test_errors_vocab_quant_fileio_do_not_load_the_bundle_reader():
    code = (
        "import sys\n"
        "import rnnedge.runtime.errors, rnnedge.runtime.vocab, rnnedge.runtime.quant\n"
        "import rnnedge.runtime.fileio\n"
        "import rnnedge.train.model, rnnedge.train.data, rnnedge.train.checkpoint, rnnedge.train.trainer\n"
        "print(sorted(m for m in sys.modules if m.startswith('rnnedge.runtime.') and m.count('.') == 2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(json.loads(out.stdout.replace("'", '"')))
    assert "rnnedge.runtime.bundle" not in loaded and "rnnedge.runtime.stream" not in loaded, loaded


def test_one_atomic_writer():
    """No module writes a file of its own way: every writer goes through runtime/fileio.py."""
    offenders = []
    for path in [*ROOT.glob("runtime/**/*.py"), *ROOT.glob("export/*.py"), *ROOT.glob("train/*.py"),
                 *ROOT.glob("devices/**/*.py"), *ROOT.glob("rnnedge/*.py")]:  # fmt: skip
        text = path.read_text()
        for bad in ("tempfile.mkstemp", ".write_text(", ".write_bytes(", ".replace(path)", "savefig(path"):
            if bad in text and path.name != "fileio.py":
                offenders.append(f"{path.relative_to(ROOT)}: {bad}")
    assert not offenders


# ----------------------------------------------------------------------------
# export formats: a typed interface, an explicit registry, validated options


def test_format_registry_and_options():
    for name, f in formats.FORMATS.items():
        assert f.name == name and callable(f.write) and callable(f.reference) and callable(f.verified_on)
        assert f.runs_on and all(b in vocab.BACKENDS for b in f.runs_on)
    assert formats.FORMATS["onnx"].parse({"onnx_graph": "op"}).graph == "op"
    assert formats.FORMATS["tflite"].parse({}).target == "both"
    with pytest.raises(ExportError, match="unknown export option 'onnx_grahp'"):
        formats.check_options({"onnx_grahp": "op"})
    with pytest.raises(ExportError, match="onnx_sequence must be a bool"):
        formats.check_options({"onnx_sequence": "yes"})
    m = random_model()
    with pytest.raises(ExportError, match="onnx_graph must be one of cell, op, got 'ops'"):
        ExportJob(m.cfg, m, "fp32", {"kind": "regress"}, random_seqs(), options={"onnx_graph": "ops"})
    with pytest.raises(ExportError, match="unknown format 'coreml'"):
        formats.get("coreml")


def test_cli_validates_format_options_before_loading_anything(tmp_path):
    r = run_cli("export", tmp_path / "no-run", "--onnx-graph", "ops")
    assert r.returncode == 2 and "invalid choice: 'ops'" in r.stderr


# ----------------------------------------------------------------------------
# one evaluation helper


def test_compare_reports_error_range_and_agreement():
    ref = [np.array([[0.0, 1.0], [0.0, 3.0]]), np.array([[2.0, 0.0]])]
    out = [np.array([[0.0, 1.5], [0.0, 3.0]]), np.array([[0.0, 1.0]])]  # second decision flips
    r = compare(zip(out, ref), classify=True, targets=[1, 1])
    assert r["sequences"] == 2 and r["steps"] == 3
    assert r["max_abs_error"] == 2.0 and r["relative_error"] == pytest.approx(2.0 / 3.0)
    assert r["agreement"] == 0.5 and r["accuracy"] == 1.0 and r["reference_accuracy"] == 0.5
    assert r["max_excess"] == pytest.approx(2.0 - (1e-4 + 1e-5 * 2.0))  # err 2 over ATOL + RTOL * |ref|
    r = compare(zip(ref, ref), classify=False)
    assert r["max_abs_error"] == 0.0 and r["max_excess"] <= 0 and "agreement" not in r


# ----------------------------------------------------------------------------
# library calls without process-wide side effects


def test_loading_a_bundle_leaves_the_blas_pool_alone(tmp_path):
    path, _, _ = make_bundle(tmp_path, hidden=32)
    code = (
        "import numpy\n"  # loads the BLAS library threadpoolctl reports
        "from threadpoolctl import threadpool_info, threadpool_limits\n"
        "import rnnedge.runtime as rt\n"
        "threadpool_limits(limits=2, user_api='blas')\n"
        "def blas(): return sorted(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas')\n"
        "before = blas()\n"
        f"m = rt.load({str(path)!r}, backend='numpy', threads=1); m.stream().step([0.0] * 5)\n"
        "after = blas()\n"
        "from rnnedge.runtime.backends.native import limit_blas_threads\n"
        "with limit_blas_threads(1):\n"
        "    inside = blas()\n"
        "print(before, after, inside, blas())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    before, after, inside, restored = (json.loads(x) for x in out.stdout.replace("] [", "]|[").split("|"))
    assert before, "numpy's BLAS pool is not visible to threadpoolctl: this test could not fail"
    assert after == before == restored and set(inside) == {1}, out.stdout


# ----------------------------------------------------------------------------
# progress suited to a terminal and a log file


class _Log(io.StringIO):
    def isatty(self):
        return False


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_writes_one_plain_line_per_update_to_a_log():
    f = _Log()
    with Progress(3, "epochs", "ep", file=f) as bar:
        for k in range(3):
            bar.update(1, loss=f"{k:.1f}")
    assert f.getvalue() == "epochs: 1/3 loss=0.0\nepochs: 2/3 loss=1.0\nepochs: 3/3 loss=2.0\n"
    f = _Log()
    with Progress(3, "epochs", file=f, enabled=False) as bar:
        bar.update(1)
    assert f.getvalue() == ""
    t = _Tty()  # a terminal: a bar (tqdm) or a self-overwriting line, never one line per update
    with Progress(2, "epochs", file=t) as bar:
        bar.update(1)
        bar.update(1)
    assert "\r" in t.getvalue()


# ----------------------------------------------------------------------------
# the CLI: one error path, documented exit codes, --debug anywhere, bugs keep their traceback


def test_help_documents_exit_codes_examples_and_defaults():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    for name, p in [("rnnedge", cli.build_parser()), *sub.items()]:
        text = p.format_help()
        assert "exit codes" in text and "130" in text and "--debug" in text, name
        assert "examples:" in text, f"{name} --help has no examples"
        for a in p._actions:
            shown = a.default is not None and a.default is not False and a.default != "==SUPPRESS=="
            if a.option_strings and shown:
                assert a.help and "default" in p._get_formatter()._get_help_string(a), (name, a.dest)


def test_debug_works_after_the_command_and_errors_are_one_line(tmp_path):
    r = run_cli("info", tmp_path / "missing")
    assert r.returncode == 1 and r.stderr == f"rnnedge: error: no bundle at {tmp_path / 'missing'}\n"
    r = run_cli("info", tmp_path / "missing", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr and "BundleError" in r.stderr
    r = run_cli("bench", tmp_path / "missing", "--quiet")
    assert r.returncode == 1 and r.stderr.startswith("rnnedge: error: no bundle at")
    r = run_cli("info")
    assert r.returncode == 2 and "usage:" in r.stderr


def test_an_os_error_is_one_line_with_a_debug_hint(monkeypatch, capsys, tmp_path):
    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(rt, "load_bundle", full, raising=False)
    assert cli.main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"rnnedge: error: [Errno 28] No space left on device: '{tmp_path / 'x'}'")
    assert err.endswith(" (--debug shows where it was raised)\n") and err.count("\n") == 1


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch, capsys, tmp_path):
    def broken(*a, **k):
        raise ValueError("boom: a bug, not the user's input")

    monkeypatch.setattr(rt, "load_bundle", broken, raising=False)
    assert cli.main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: boom" in err and "internal error (ValueError)" in err


def test_missing_extras_are_one_line_naming_the_pip_command(tmp_path):
    env = shadowed(tmp_path, "torch")
    for cmd, extra in (("train", "train"), ("export", "export"), ("demo", "train")):
        args = [cmd, tmp_path / "run"] if cmd == "export" else [cmd, "--out", tmp_path / cmd]
        r = run_cli(*args, env=env, cwd=ROOT)
        assert r.returncode == 1, (cmd, r.stderr)
        assert r.stderr == f"rnnedge: error: PyTorch is not installed: run `pip install 'rnnedge[{extra}]'`\n"
        assert not (tmp_path / cmd).exists()


@pytest.mark.parametrize(
    "module,command_extra,extra",
    [("onnx", "export", "onnx"), ("torch", "export", "export"), ("matplotlib", None, "plot")],
)
def test_a_missing_module_anywhere_names_the_extra_that_installs_it(capsys, module, command_extra, extra):
    try:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    except ModuleNotFoundError as e:
        assert cli.report(e, False, command_extra) == 1
    want = f"rnnedge: error: {module} is not installed: run `pip install 'rnnedge[{extra}]'`\n"
    assert capsys.readouterr().err == want


def test_ctrl_c_during_training_exits_130_and_keeps_the_best_checkpoint(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen(
        [*RNNEDGE, "train", "--data", "sine", "--hidden", "8", "--epochs", "100000", "--out", str(out)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        lines = []
        for line in p.stderr:  # not a terminal: one plain progress line per epoch
            lines.append(line)
            if line.startswith("epochs: 2/"):
                break
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=120)[::-1]
    finally:
        p.kill()
    assert p.returncode == 130, "".join(lines) + rest
    assert "\r" not in "".join(lines) and lines[-1].startswith("epochs: 2/100000 loss=")
    metrics = json.loads((out / "metrics.json").read_text())
    record = json.loads((out / "checkpoint.json").read_text())
    assert metrics["interrupted"] is True and (out / record["best"]["file"]).is_file()
    assert not record["finished"] and record["resume"]  # `train --resume` continues it


def test_demo_force_only_replaces_a_demo_folder(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    r = run_cli("demo", "--out", precious, "--force", cwd=ROOT)
    assert r.returncode == 1 and "not written by `rnnedge demo`" in r.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"
    from rnnedge.demo import MARKER, prepare_out

    prepare_out(tmp_path / "d", force=False)
    (tmp_path / "d" / "old-bundle").mkdir()
    prepare_out(tmp_path / "d", force=True)  # an earlier demo's folder: replaced
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [MARKER]


@pytest.mark.parametrize("backend", vocab.TFLITE_INTERPRETERS)
def test_the_xnnpack_info_line_stays_out_of_the_output(backend):
    bundle = ROOT / "tests" / "fuzz" / "corpus" / "bundles" / "t0"  # a real exported bundle with a .tflite
    width = rt.load_bundle(bundle).input_size
    r = subprocess.run(
        [*RNNEDGE, "run", str(bundle), "--backend", backend],
        input=",".join(["0.5"] * width) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 and "XNNPACK" not in r.stderr + r.stdout, r.stderr


# ----------------------------------------------------------------------------
# plots: labelled, titled, best epoch marked, no pyplot state


def test_training_curves_are_labelled_and_leave_matplotlib_alone(tmp_path):
    code = f"""
import json, sys, matplotlib
matplotlib.use("svg")  # the caller's own choice: a library call must not change it
from rnnedge.plotting import training_curves
h = [dict(epoch=e, train_loss=1 / e, val_loss=1.1 / e, val_accuracy=0.1 * e, grad_norm=2.0 / e)
     for e in range(1, 8)]
png = {str(tmp_path / "c.png")!r}
fig = training_curves(h, "accuracy", png, "run-7: lstm 1x8 on sine", 5, validation=False)
axes = [dict(x=a.get_xlabel(), y=a.get_ylabel(), ticks=[float(t) for t in a.get_xticks()],
             vlines=[float(ln.get_xdata()[0]) for ln in a.get_lines() if len(set(ln.get_xdata())) == 1])
        for a in fig.axes]
print(json.dumps(dict(backend=matplotlib.get_backend(), pyplot="matplotlib.pyplot" in sys.modules,
                      title=fig._suptitle.get_text(), axes=axes)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    r = json.loads(out.stdout)
    assert r["backend"] == "svg" and not r["pyplot"]
    assert r["title"] == "run-7: lstm 1x8 on sine"
    for a in r["axes"]:
        assert a["x"] == "epoch" and "(" in a["y"], a  # a quantity with its unit
        assert all(t == int(t) for t in a["ticks"]), a["ticks"]  # whole epochs
        assert 5.0 in a["vlines"], a  # the best epoch, marked on every panel
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------
# packaging layout: one checkout at a time


def test_layout_guard_fails_loudly_when_two_checkouts_mix(tmp_path):
    import shutil

    import rnnedge

    assert set(rnnedge.check_layout()) == set(rnnedge.SUBPACKAGES)
    other = tmp_path / "other-clone"  # a second clone's rnnedge/ on sys.path, this checkout installed
    shutil.copytree(ROOT / "rnnedge", other / "rnnedge", ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-c", "import rnnedge"], capture_output=True, text=True, cwd=other)
    assert r.returncode != 0 and "LayoutError: rnnedge is mixed from different folders" in r.stderr
    assert f"rnnedge/ is {other / 'rnnedge'}" in r.stderr and f"rnnedge.train is {ROOT / 'train'}" in r.stderr


def test_package_dir_follows_the_layout_the_guard_and_the_arm_tree_assume():
    tomllib = pytest.importorskip("tomllib")  # 3.11+ (the suite runs on 3.11)

    import rnnedge

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    top = {k.split(".")[1]: v for k, v in tool["package-dir"].items() if k.count(".") == 1}
    assert top == {n: n for n in rnnedge.SUBPACKAGES} and tool["package-dir"]["rnnedge"] == "rnnedge"
    for name, folder in tool["package-dir"].items():  # deeper packages live inside their parent's folder
        assert folder == "/".join(name.split(".")[1:]) or name == "rnnedge", (name, folder)
