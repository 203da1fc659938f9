"""Coverage-guided fuzzing of one loader with atheris (libFuzzer).

    nice .venv/bin/python -m tests.fuzz.run_atheris TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET: manifest | safetensors | tflite | onnx | csv | npy | checkpoint (see targets.py). With no corpus
folder given, the checked-in seeds (tests/fuzz/corpus/TARGET) are used read-only. Examples:

    nice .venv/bin/python -m tests.fuzz.run_atheris tflite -runs=100000 -timeout=10 -rss_limit_mb=2048
    nice .venv/bin/python -m tests.fuzz.run_atheris manifest -max_total_time=3600 /tmp/corpus-manifest \
        tests/fuzz/corpus/manifest          # new inputs go to the first folder

A finding stops the run and writes TARGET-crash-* / -timeout-* / -oom-* (the input) to
$TMPDIR/rnnedge-fuzz-findings/ unless -artifact_prefix= says otherwise.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def main() -> None:
    import atheris

    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    target = sys.argv.pop(1)
    with atheris.instrument_imports(include=["rnnedge"]):
        import rnnedge.runtime  # noqa: F401
        import rnnedge.runtime.bundle  # noqa: F401
        import rnnedge.runtime.tflite_check  # noqa: F401

        if target in ("csv", "npy"):
            import rnnedge.cli  # noqa: F401
        if target == "checkpoint":
            import rnnedge.train.checkpoint  # noqa: F401
    from tests.fuzz import targets

    fn = targets.TARGETS[target]
    for seed in sorted((Path(__file__).parent / "corpus" / target).iterdir()):
        fn(seed.read_bytes())  # warm-up: lazy imports (torch.optim, ORT) are not charged to the first unit
    args = list(sys.argv)
    if not any(a.startswith("-artifact_prefix=") for a in args):
        findings = Path(tempfile.gettempdir()) / "rnnedge-fuzz-findings"
        findings.mkdir(exist_ok=True)
        args.insert(1, f"-artifact_prefix={findings}/{target}-")
    if not any(not a.startswith("-") for a in args[1:]):
        # libFuzzer writes new inputs into the first corpus folder: never into the checked-in seeds
        work = Path(tempfile.mkdtemp(prefix=f"rnnedge-fuzz-{target}-"))
        args += [str(work), str(Path(__file__).parent / "corpus" / target)]
    atheris.Setup(args, fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
