"""The `rnnedge` command: train -> export -> run / info / bench, and the end-to-end demo.

User mistakes exit non-zero with a one-line `rnnedge: error: ...` (a traceback only with --debug).
Heavy imports (torch, onnx, ...) happen inside the subcommand that needs them, so `rnnedge run` and
`rnnedge info` work with the runtime's dependencies alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from rnnedge.runtime.errors import RnnEdgeError
from rnnedge.runtime.vocab import BACKENDS, CELLS, FORMATS, SCHEMES, TASKS


def positive_int(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{s!r}: need a whole number >= 1")
    return n


def csv_list(choices):
    def parse(s: str) -> list[str]:
        items = [x.strip() for x in s.split(",") if x.strip()]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{s!r}: choose from {', '.join(choices)} (comma-separated)")
        return items

    return parse


# ----------------------------------------------------------------------------
# train


def add_train(sub):
    from rnnedge.train.data import BUILTIN  # numpy only (sktime loads when a dataset does)

    p = sub.add_parser(
        "train",
        help="train a recurrent model on a bundled dataset or your .npz file",
        description="Train an RNN/LSTM/GRU with a linear head. Writes a run folder: checkpoint.json "
        "(one atomic commit per epoch naming every file by sha256), model-<sha>.safetensors (best "
        "checkpoint), resume-<sha>.safetensors (resume state), and when finished metrics.json, curves.png. "
        "A killed run continues with --resume RUN.",
    )
    p.add_argument(
        "--data",
        default="basic_motions",
        help=f"{' | '.join(BUILTIN)} | path/to/file.npz (default: %(default)s)",
    )
    p.add_argument(
        "--task",
        choices=TASKS,
        help="override the task inferred from the data (forecast = next-step, enables generate)",
    )
    p.add_argument("--cell", default="lstm", choices=CELLS, help="recurrent cell")
    p.add_argument("--hidden", type=positive_int, default=32, help="hidden size (default: %(default)s)")
    p.add_argument("--layers", type=int, default=1, choices=(1, 2, 3), help="stacked layers (default: 1)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout between stacked layers")
    p.add_argument("--epochs", type=positive_int, default=100, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, default=8, help="sequences per batch")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument(
        "--tbptt",
        type=int,
        default=0,
        metavar="K",
        help="truncated BPTT: backpropagate K steps, carry the state on (default 0 = full BPTT)",
    )
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping, 0 = off (default: 1.0)")
    p.add_argument(
        "--patience",
        type=int,
        default=25,
        help="early stopping patience in epochs, with --val-fraction only (default: 25)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="hold out this fraction for early stopping (default 0: train on all, fixed schedule)",
    )
    p.add_argument("--schedule", default="cosine", choices=("cosine", "constant"), help="learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0 = Adam)")
    p.add_argument(
        "--tail",
        type=float,
        default=0.2,
        help="classify: also train the label on this last fraction of each sequence (default: %(default)s)",
    )
    add_audio_train_args(p)
    p.add_argument(
        "--scale-augment",
        type=float,
        default=0.3,
        metavar="A",
        help="forecast: scale each training sequence by exp(U(-A, A)) per epoch, so levels beyond the "
        "training period are seen (default: %(default)s, 0 = off)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, split and batches")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (default: 2)")
    p.add_argument("--out", "-o", type=Path, help="run folder (default: runs/<data>-<cell>)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing run folder; the previous run stays until the new one has finished",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue a killed or interrupted run from its last finished epoch (the run's own settings; "
        "other options are ignored), e.g. `rnnedge train --resume runs/bm`",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress (otherwise a bar on a terminal, one plain line per epoch in a log or pipe)",
    )
    p.add_argument(
        "--stream-train",
        action="store_true",
        help="train on long streams (the training sequences end to end, state carried across --tbptt "
        "windows and sequences, never reset; --tbptt defaults to 50 here), as a deployed model runs",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel training on N local processes (PyTorch DDP, gloo), the same result as one "
        "process up to float summation order; under torchrun each process is one rank (README). Default: 1",
    )
    add_qat_options(p)
    p.set_defaults(func=cmd_train)


def add_qat_options(p):
    g = p.add_argument_group(
        "quantisation-aware training",
        "fine-tune a float run through one export scheme's exact arithmetic, e.g. `rnnedge train "
        "--qat int8-static --qat-target tflite --from runs/basic_motions-lstm -o runs/bm-qat`; then "
        "`rnnedge export runs/bm-qat --scheme int8-static --format tflite` computes what training reported",
    )
    g.add_argument("--qat", metavar="SCHEME", choices=("int8", "int8-dynamic", "int8-static"), help="scheme")
    g.add_argument("--from", dest="from_run", type=Path, metavar="RUN", help="the float run to fine-tune")
    g.add_argument(
        "--qat-target",
        default="native",
        choices=("native", "tflite"),
        help="whose arithmetic: the native bundle's, or TFLite's a8w8 full-integer graph (int8-static)",
    )
    g.add_argument(
        "--qat-state-limit",
        type=float,
        metavar="C",
        help="tflite: softly bound the LSTM cell state to +-C while fine-tuning, so its calibrated int8 "
        "grid is finer (default: off)",
    )
    g.add_argument(
        "--qat-state-weight",
        type=float,
        default=1e-3,
        help="weight of --qat-state-limit (default: %(default)s)",
    )
    g.add_argument("--qat-epochs", type=int, default=30, help="fine-tuning epochs (default: %(default)s)")
    g.add_argument(
        "--qat-lr", type=float, default=3e-4, help="fine-tuning learning rate (default: %(default)s)"
    )


def cmd_train(a) -> int:
    if a.qat or a.from_run:
        return cmd_train_qat(a)
    from rnnedge.train.trainer import TrainConfig, resume, train

    if a.resume is not None:
        _, metrics = resume(a.resume, progress=not a.no_progress)
        return EXIT_INTERRUPTED if metrics["interrupted"] else EXIT_OK
    cfg = TrainConfig(
        data=a.data,
        task=a.task,
        cell=a.cell,
        hidden_size=a.hidden,
        num_layers=a.layers,
        dropout=a.dropout,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        tbptt=a.tbptt,
        clip=a.clip,
        patience=a.patience,
        val_fraction=a.val_fraction,
        schedule=a.schedule,
        weight_decay=a.weight_decay,
        tail=a.tail,
        scale_augment=a.scale_augment,
        seed=a.seed,
        threads=a.threads,
        audio=audio_train_options(a),
        stream=a.stream_train,
    )
    out = a.out or Path("runs") / f"{Path(a.data).stem}-{a.cell}"
    if a.nproc > 1 or distributed_launch():
        from rnnedge.train.distributed import run

        cfg.threads = max(1, cfg.threads // max(1, a.nproc))  # the cores are shared between the ranks
        run(cfg, out, a.nproc, force=a.force, progress=not a.no_progress)
        return EXIT_OK
    _, metrics = train(cfg, out, force=a.force, progress=not a.no_progress)
    return EXIT_INTERRUPTED if metrics["interrupted"] else EXIT_OK


def add_audio_train_args(p) -> None:
    g = p.add_argument_group(
        "audio (--data FOLDER: one sub-folder of 16 kHz WAV files per class, see README 'Keyword spotting')"
    )
    g.add_argument(
        "--features", choices=("logmel", "mfcc"), default="logmel", help="front end (default: logmel)"
    )
    g.add_argument("--mels", type=int, default=32, help="mel bands (default: %(default)s)")
    g.add_argument(
        "--mfcc", type=int, default=13, help="MFCC coefficients with --features mfcc (default: 13)"
    )
    g.add_argument(
        "--augment",
        type=int,
        default=4,
        help="examples per training file, each with its own noise mix, gain and time shift (default: 4)",
    )


def audio_train_options(a) -> dict | None:
    if not Path(a.data).is_dir():
        return None
    return {"features": a.features, "n_mels": a.mels, "n_mfcc": a.mfcc, "augment": a.augment}


def distributed_launch() -> bool:
    """Started by torchrun (every rank runs `rnnedge train ...`)."""
    import os

    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def cmd_train_qat(a) -> int:
    from rnnedge.train.qat import train_qat
    from rnnedge.train.trainer import TrainError

    if not (a.qat and a.from_run):
        raise TrainError("quantisation-aware training needs both --qat SCHEME and --from RUN (a float run)")
    out = a.out or a.from_run.with_name(f"{a.from_run.name}-qat-{a.qat}-{a.qat_target}")
    train_qat(
        a.from_run,
        a.qat,
        out,
        a.qat_target,
        epochs=a.qat_epochs,
        lr=a.qat_lr,
        state_limit=a.qat_state_limit,
        state_weight=a.qat_state_weight,
        threads=a.threads,
        **({"stream": True, "tbptt": a.tbptt or 50} if a.stream_train else {}),
        force=a.force,
        progress=not a.no_progress,
    )
    return EXIT_OK


# ----------------------------------------------------------------------------
# export


def add_format_options(p) -> None:
    """One flag per export-format option, from the formats' option dataclasses (export/formats.py): key
    onnx_graph -> --onnx-graph, with its choices, default and help. --target is tflite_target's short name."""
    from rnnedge.export.formats import FORMATS  # numpy only: the format modules, not torch

    for fmt in FORMATS.values():
        for key, f in fmt.keys().items():
            flags = ["--" + key.replace("_", "-")] + (["--target"] if key == "tflite_target" else [])
            kw = {"dest": key, "default": f.default, "help": f.metadata["help"]}
            if isinstance(f.default, bool):
                kw["action"] = "store_true"
            else:
                kw["choices"] = f.metadata["choices"]
            p.add_argument(*flags, **kw)


def add_export(sub):
    p = sub.add_parser(
        "export",
        help="quantise a trained run and export a verified bundle",
        description="Quantise and export a run folder to a bundle (manifest.json + weights + "
        "optional model.onnx / model.tflite). Every export streams the test split through each "
        "target backend and the quantised reference; it fails (exit 1, nothing installed) if "
        "parity is outside tolerance.",
    )
    p.add_argument("run", type=Path, help="training run folder (from `rnnedge train`)")
    p.add_argument(
        "--quant",
        "-q",
        type=csv_list(SCHEMES),
        default=["fp32"],
        help=f"scheme(s), comma-separated: {', '.join(SCHEMES)} (default: fp32)",
    )
    p.add_argument(
        "--format",
        "-f",
        type=csv_list(FORMATS),
        default=["native"],
        help="native (always written), onnx, tflite; comma-separated (default: native)",
    )
    add_format_options(p)
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        help="bundle folder; with several --quant schemes, a folder holding one bundle per scheme "
        "(default: RUN/bundle-<scheme>)",
    )
    p.add_argument("--data", help="dataset for parity/calibration if the run's data file moved")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=cmd_export)


def cmd_export(a) -> int:
    from rnnedge.export.exporter import export, job_from_run
    from rnnedge.export.formats import FORMATS, check_options

    if a.run.is_file():
        raise RnnEdgeError(
            f"{a.run} is a file, not a training run folder: to export your own model use "
            f"`rnnedge import {a.run} --arch ...` (PyTorch state_dict) or `rnnedge import model.onnx`"
        )
    options = {key: getattr(a, key) for f in FORMATS.values() for key in f.keys()}
    check_options(options)  # before the checkpoint and the dataset are loaded
    for scheme in a.quant:
        if a.out is None:
            out = a.run / f"bundle-{scheme}"
        else:
            out = a.out / scheme if len(a.quant) > 1 else a.out
        print(f"exporting {a.run} as {scheme} -> {out}")
        job = job_from_run(a.run, scheme, data=a.data, options=options)
        export(job, a.format, out, force=a.force)
    return 0


# ----------------------------------------------------------------------------
# import: bring your own model (a PyTorch state_dict + declared architecture, or a standard ONNX file)


def add_import(sub):
    p = sub.add_parser(
        "import",
        help="export your own model (PyTorch state_dict + --arch, or a standard .onnx) to a verified bundle",
        description="Bring your own model: map a PyTorch state_dict with a declared architecture (--arch) or "
        "an ONNX graph built around the LSTM/GRU/RNN operators onto rnnedge's model, then quantise, export "
        "and verify it like `rnnedge export`, also against the ORIGINAL model (your weights in PyTorch, or "
        "ONNX Runtime on your file). Unsupported parts are refused with the module/node name and the reason.",
        epilog="examples:\n"
        "  rnnedge import lstm.pt --arch arch.json --data basic_motions -q fp32,int8 -o bundles/mine\n"
        '  rnnedge import lstm.pt --arch \'{"modules": [{"name": "lstm", "type": "LSTM", "input_size": 6, '
        '"hidden_size": 24, "batch_first": true}, {"name": "fc", "type": "Linear", "in_features": 24, '
        '"out_features": 4}]}\'\n'
        "  rnnedge import model.onnx --data my_sensor.npz --out bundles/from-onnx\n"
        "See README 'Bring your own model' for the --arch format.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", type=Path, help="state_dict (.pt / .pth / .safetensors) or ONNX file (.onnx)")
    p.add_argument("--arch", help="state_dict only: architecture JSON (a file or inline)")
    p.add_argument(
        "--quant", "-q", type=csv_list(SCHEMES), default=["fp32"], help="scheme(s) (default: fp32)"
    )
    p.add_argument(
        "--format",
        "-f",
        type=csv_list(("native", "onnx", "tflite")),
        default=["native"],
        help="native (always written), onnx, tflite (default: native)",
    )
    p.add_argument(
        "--task",
        choices=("classify", "regress", "forecast"),
        default="classify",
        help="classify = decision at the last step (default), regress = every step, forecast = next sample",
    )
    p.add_argument("--labels", help="class names, comma-separated (default: from --data, else 0..O-1)")
    p.add_argument(
        "--data",
        help="dataset name or .npz for parity, accuracy and int8-static calibration (default: seeded "
        "synthetic sequences, parity only)",
    )
    p.add_argument("--out", "-o", type=Path, help="bundle folder (default: MODEL-<scheme> beside the file)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(func=cmd_import)


def cmd_import(a) -> int:
    labels = [x.strip() for x in a.labels.split(",")] if a.labels else None
    for scheme in a.quant:
        if a.out is None:
            out = a.model.parent / f"{a.model.stem}-{scheme}"
        else:
            out = a.out / scheme if len(a.quant) > 1 else a.out
        print(f"importing {a.model} as {scheme} -> {out}")
        kw = dict(quant=scheme, formats=a.format, task=a.task, labels=labels, data=a.data, force=a.force)
        if a.model.suffix == ".onnx":
            if a.arch:
                raise RnnEdgeError("--arch is for PyTorch state_dicts; an ONNX file describes itself")
            from rnnedge.export.import_onnx import from_onnx

            from_onnx(a.model, out, **kw)
            continue
        from rnnedge.export.import_torch import arch_module, file_sha256, from_torch, read_state_dict

        if not a.arch:
            raise RnnEdgeError(
                f"{a.model}: a state_dict needs --arch (the modules in order, see README 'Bring your own "
                "model'); for an ONNX file use a .onnx name"
            )
        module, norm = arch_module(read_state_dict(a.model), a.arch)
        source = {"kind": "torch-state-dict", "file": str(a.model.resolve()), "sha256": file_sha256(a.model)}
        from_torch(module, out, source=source, **norm, **kw)
    return 0


# ----------------------------------------------------------------------------
# run: stream samples from a file or stdin


def add_run(sub):
    p = sub.add_parser(
        "run",
        help="stream samples through a bundle, one output line per input sample",
        description="Stream raw samples through a bundle. Input: a CSV (one sample per line, "
        "comma- or space-separated, UTF-8, lines up to 1 MiB; a first line with no number in it is a "
        "header; any other line that is not the model's number of values is an error naming the line, "
        "see --skip-bad-lines), a .npy array (T, I) or (N, T, I), "
        "a .npz file in the training format (X (N, T, I), optional lengths (N,): only the first "
        "lengths[i] steps of sequence i are streamed), or stdin ('-'). Output: one line per sample, "
        "flushed at once, so it can sit in a pipe behind a sensor. Sequences: each one starts from a fresh "
        "state; in CSV/stdin input a blank line ends a sequence (the state is reset). The end of a "
        "sequence is marked the same way in the output: one blank line after its last output line "
        "(after every sequence of an (N, T, I) input, and wherever the input had a blank line); "
        "--index adds the sequence number as a first column instead.",
    )
    p.add_argument("bundle", type=Path, help="bundle folder (from `rnnedge export`)")
    p.add_argument("input", nargs="?", default="-", help="CSV or .npy file, or - for stdin (default)")
    p.add_argument("--backend", "-b", default="native", choices=BACKENDS, help="runtime backend")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="threads: ORT/TFLite intra-op, numpy's BLAS pool (numpy path)",
    )
    p.add_argument(
        "--decision",
        action="store_true",
        help="print the predicted label (classification) instead of the output values",
    )
    p.add_argument(
        "--generate",
        type=int,
        metavar="N",
        help="one-to-many: after the input (the seed), feed outputs back for N more steps",
    )
    add_audio_run_args(p)
    p.add_argument(
        "--index",
        action="store_true",
        help="prefix each output line with its sequence number (0, 1, ...) instead of blank-line markers",
    )
    p.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip (with a warning naming the line) input lines that are not the model's number of values, "
        "instead of stopping with an error",
    )
    p.add_argument(
        "--nonfinite",
        choices=("reject", "hold", "reset"),
        default="reject",
        help="a sample with NaN/Inf: reject = an error naming the line (default); hold = each bad value "
        "replaced by its channel's last finite value; reset = the state is reset and bad values become "
        "the training mean",
    )
    p.set_defaults(func=cmd_run)


def add_audio_run_args(p) -> None:
    g = p.add_argument_group(
        "audio: a .wav input or --pcm stdin goes through the bundle's front end and prints one line per "
        "event, 'TIME_S<TAB>LABEL<TAB>CONFIDENCE', flushed at once",
        "examples:  rnnedge run kws/int8 talk.wav\n"
        "           arecord -f S16_LE -r 16000 -t raw | rnnedge run kws/int8 --pcm s16le",
    )
    g.add_argument("--pcm", choices=("s16le",), help="raw mono PCM on stdin (little-endian 16-bit)")
    g.add_argument("--rate", type=int, help="sample rate of --pcm input (default: the bundle's)")
    g.add_argument("--threshold", type=float, help="override the bundle's decision threshold (0..1)")
    g.add_argument("--steps", action="store_true", help="print every step's outputs instead of events")


def cmd_run_audio(a, model) -> int:
    """WAV file or raw PCM on stdin -> events (or per-step outputs with --steps), one flushed line each."""
    import dataclasses

    from rnnedge.runtime.frontend import read_wav

    fe = model.frontend
    if fe is None or not fe.audio:
        raise RnnEdgeError(
            f"{a.bundle} has no audio front end: it takes feature rows (CSV / .npy), not audio"
        )
    if a.pcm:
        rate = a.rate or fe.sample_rate
        chunks = pcm_chunks(sys.stdin.buffer, fe.hop_length * 4)
    else:
        rate, x = read_wav(open_binary(a.input))
        chunks = (x[i : i + 16000] for i in range(0, len(x), 16000))
    if rate != fe.sample_rate:
        raise RnnEdgeError(
            f"the audio is {rate} Hz but {a.bundle} expects {fe.sample_rate} Hz: resample it "
            f"(e.g. sox IN -r {fe.sample_rate} OUT)"
        )
    stream = model.stream()
    out = sys.stdout
    if a.steps:
        for chunk in chunks:
            for y in stream.push(chunk):
                out.write(",".join(f"{v:.6g}" for v in y) + "\n")
            out.flush()
        return 0
    decisions = model.decisions
    if a.threshold is not None:
        if not 0 <= a.threshold <= 1:
            raise RnnEdgeError(f"--threshold must be in 0..1, got {a.threshold}")
        decisions = dataclasses.replace(decisions, threshold=a.threshold)
    for e in stream.events(chunks, decisions):
        out.write(e.line() + "\n")
        out.flush()
    return 0


def pcm_chunks(src, samples: int):
    """int16 arrays from a binary stream as data arrives (read1: a pipe's partial data is not held back)."""
    import numpy as np

    carry = b""
    while True:
        block = src.read1(2 * samples) if hasattr(src, "read1") else src.read(2 * samples)
        if not block:
            return
        block = carry + block
        n = len(block) // 2 * 2
        carry = block[n:]
        if n:
            yield np.frombuffer(block[:n], "<i2")


def open_binary(path: str) -> str:
    if path == "-" or not Path(path).is_file():
        raise RnnEdgeError(f"no WAV file at {path} (raw PCM on stdin: --pcm s16le)")
    return path


def cmd_run(a) -> int:
    from rnnedge.runtime import InputError, load
    from rnnedge.runtime.backends.native import limit_blas_threads

    limit_blas_threads(a.threads)  # this process only steps one model: the numpy path's matvecs on one core
    model = load(a.bundle, backend=a.backend, threads=a.threads)
    if a.pcm or a.input.lower().endswith(".wav"):
        return cmd_run_audio(a, model)
    stream = model.stream(nonfinite=a.nonfinite)
    out = sys.stdout
    seq = 0

    def emit(y):
        prefix = f"{seq}," if a.index else ""
        if a.decision and model.task == "classify":
            out.write(f"{prefix}{model.decide(y)}\n")
        else:
            out.write(prefix + ",".join(f"{v:.6g}" for v in y) + "\n")
        out.flush()

    def end_of_sequence():  # the documented marker: a blank line (or, with --index, the next number)
        nonlocal seq
        if not a.index:
            out.write("\n")
            out.flush()
        seq += 1

    if a.generate is not None:
        seed = read_all(a.input, model.input_size, a.skip_bad_lines)
        for y in stream.generate(seed, a.generate):
            emit(y)
        return 0
    if a.input != "-" and a.input.endswith((".npy", ".npz")):
        seqs, several = load_sequences(a.input)
        for x in seqs:
            for y in stream.run(x) if len(x) else ():  # run() starts from a fresh state
                emit(y)
            if several:
                end_of_sequence()
        return 0
    for lineno, x in text_rows(a.input, model.input_size, a.skip_bad_lines):
        if x is None:
            stream.reset()
            end_of_sequence()
            continue
        try:
            y = stream.step(x)
        except InputError as e:
            raise InputError(f"{a.input}:{lineno}: {e}") from None
        emit(y)
    return 0


def load_sequences(path: str, max_bytes: int = 1 << 30) -> tuple[list, bool]:
    """.npy (T, I) or (N, T, I), or .npz with X (N, T, I) and optional lengths (N,) -> list of (T_i, I),
    and whether the file holds sequences (N, ...) rather than one (T, I) recording."""
    import zipfile

    import numpy as np

    if path.endswith(".npy"):
        arr = load_npy(path)
        return (list(arr), True) if arr.ndim == 3 else ([arr], False)
    try:
        with zipfile.ZipFile(path) as zf:  # declared sizes first: never decompress an unbounded member
            big = [i.filename for i in zf.infolist() if i.file_size > max_bytes]
        if big:
            raise RnnEdgeError(f"{path}: {big[0]} is larger than {max_bytes >> 20} MiB uncompressed")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("X", "lengths") if k in z.files}
    except RnnEdgeError:
        raise
    except Exception as e:
        raise RnnEdgeError(f"cannot read {path} as .npz: {e}") from e
    X = arrays.get("X")
    if X is None or X.ndim != 3:
        raise RnnEdgeError(f"{path}: needs an array X of shape (N, T, I) (the training format)")
    lengths = arrays.get("lengths")
    if lengths is None:
        return list(X), True
    if (
        lengths.shape != (len(X),)
        or lengths.dtype.kind not in "iu"
        or (lengths < 0).any()
        or (lengths > X.shape[1]).any()
    ):
        raise RnnEdgeError(f"{path}: lengths must be {len(X)} integers in 0..{X.shape[1]}")
    return [x[:n] for x, n in zip(X, lengths.tolist())], True


MAX_LINE = 1 << 20  # bytes in one input line: a longer one is an error, never an unbounded read


def text_rows(path: str, width: int | None = None, skip_bad: bool = False, warn=None):
    """CSV / whitespace rows from a file or stdin ('-'): yields (line number, float32 sample), or
    (line number, None) for a blank line (end of a sequence).

    A first line is a header only if none of its fields is a number. Any other line that is not `width`
    numbers (width None: any count) is an InputError naming its line, or with skip_bad a warning and the
    line is skipped. Binary input (a NUL byte, not UTF-8) and lines over MAX_LINE bytes are errors."""
    import numpy as np

    from rnnedge.runtime import InputError

    src = sys.stdin.buffer if path == "-" else open_text(path)
    warn = warn or (lambda msg: print(f"rnnedge: warning: {msg}", file=sys.stderr))
    lineno = 0
    while True:
        raw = src.readline(MAX_LINE + 1)
        if not raw:
            return
        lineno += 1
        where = f"{path}:{lineno}"
        if len(raw) > MAX_LINE:
            raise InputError(f"{where}: line longer than {MAX_LINE} bytes: not a row of samples")
        if b"\0" in raw:
            raise InputError(f"{where}: binary data (a NUL byte): the input must be text (CSV) or .npy")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{where}: not UTF-8 text: the input must be text (CSV) or .npy") from None
        fields = line.replace(",", " ").split()
        if not fields:
            yield lineno, None
            continue
        try:
            x = np.array([float(f) for f in fields], np.float32)
            problem = (
                None if width is None or len(x) == width else f"{len(x)} values, the model takes {width}"
            )
        except ValueError:
            if lineno == 1 and not any(_is_number(f) for f in fields):
                continue  # a header: no field of it is a number
            problem = f"not a row of numbers: {line.strip()[:60]!r}"
        if problem is None:
            yield lineno, x
        elif skip_bad:
            warn(f"{where}: skipped ({problem})")
        else:
            raise InputError(f"{where}: {problem} (--skip-bad-lines skips such lines)")


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def open_text(path: str):
    p = Path(path)
    if not p.is_file():
        raise RnnEdgeError(f"no input file at {p}")
    return p.open("rb")


def load_npy(path: str, max_bytes: int = 1 << 30):
    """A numeric .npy array, (T, I) or (N, T, I). The header's shape and dtype are checked against the file
    size before anything is allocated; no pickles."""
    import numpy as np
    from numpy.lib import format as npy

    try:
        with open(path, "rb") as f:
            major, _ = npy.read_magic(f)
            read_header = npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0
            shape, _, dtype = read_header(f)
            offset, size = f.tell(), os.fstat(f.fileno()).st_size
    except Exception as e:  # numpy raises ValueError / OSError / EOFError / SyntaxError on bad headers
        raise RnnEdgeError(f"cannot read {path} as .npy: {str(e)[:200]}") from None
    if dtype.kind not in "fiub" or dtype.itemsize > 8 or dtype.hasobject:
        raise RnnEdgeError(f"{path}: .npy of dtype {dtype} is not numeric samples")
    need = dtype.itemsize * math.prod(shape)
    if len(shape) not in (2, 3):
        raise RnnEdgeError(f"{path}: expected (T, I) or (N, T, I), got shape {shape}")
    if need != size - offset or size > max_bytes:
        raise RnnEdgeError(
            f"{path}: the .npy header says {shape} {dtype} ({need} bytes) but the file holds "
            f"{size - offset} bytes of data (truncated or damaged; at most {max_bytes} bytes are read)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise RnnEdgeError(f"cannot read {path} as .npy: {str(e)[:200]}") from None


def read_all(path: str, width: int, skip_bad: bool = False):
    import numpy as np

    if path.endswith(".npy"):
        return load_npy(path)
    rows = [x for _, x in text_rows(path, width, skip_bad) if x is not None]
    return np.array(rows, np.float32).reshape(-1, width)


# ----------------------------------------------------------------------------
# info


def add_info(sub):
    p = sub.add_parser(
        "info",
        help="show what is in a bundle",
        description="Show a bundle's model, task, "
        "quantisation, files, state names and the parity results recorded at export.",
    )
    p.add_argument("bundle", type=Path, help="bundle folder (from `rnnedge export`)")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(func=cmd_info)


def cmd_info(a) -> int:
    from rnnedge.runtime import load_bundle

    b = load_bundle(a.bundle)
    m = b.manifest
    if a.json:
        print(json.dumps(m, indent=2))
        return 0
    md, task = m["model"], m.get("task", {})
    print(f"bundle     {b.path}  (format v{m['format_version']}, rnnedge {m.get('rnnedge_version', '?')})")
    print(
        f"model      {md['cell']}  {md['num_layers']} layer(s) x {md['hidden_size']}  "
        f"input {md['input_size']} -> output {md['output_size']}  head {md.get('head', 'linear')}"
    )
    labels = task.get("labels")
    print(f"task       {task.get('kind')}" + (f"  labels {', '.join(labels)}" if labels else ""))
    print(f"quant      {m['quant']['scheme']}")
    src = m.get("source", {})
    if src.get("kind"):  # an imported model: where it came from
        origin = src.get("file") or src.get("module", "")
        print(
            f"source     {src['kind']}  {origin}"
            + (f"  sha256 {src['sha256'][:16]}..." if "sha256" in src else "")
        )
    print("state      " + ", ".join(f"{s['input']}->{s['output']} {s['shape']}" for s in m["io"]["state"]))
    print("files      " + ", ".join(f"{n} ({i['bytes'] / 1024:.1f} KiB)" for n, i in m["files"].items()))
    for name, ev in m.get("evaluation", {}).items():
        print(f"eval       {name}: {ev:.4g}" if isinstance(ev, float) else f"eval       {name}: {ev}")
    for backend, r in m.get("parity", {}).items():
        extra = "".join(f"  {k} {r[k]:.1%}" for k in ("agreement", "accuracy") if k in r)
        print(
            f"parity     {backend:15s} {'ok' if r['ok'] else 'FAILED'}  "
            f"max|err| {r['max_abs_error']:.2e}{extra}"
        )
    return 0


# ----------------------------------------------------------------------------
# entry point: one error path and one set of exit codes for every command

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = """exit codes (every command):
  0    done
  1    error: bad input, a missing file or optional package, a failed check (export parity, bench --device
       budget); one line `rnnedge: error: ...` on stderr (add --debug for the traceback), or an internal
       error (a bug): its traceback
  2    usage: unknown command, option or value (argparse's message)
  130  interrupted (Ctrl-C); `train` keeps the best checkpoint so far"""

EXAMPLES = {
    "train": """  rnnedge train                                   # LSTM 1x32 on BasicMotions -> runs/...
  rnnedge train --data japanese_vowels --cell gru --hidden 48 --out runs/jv
  rnnedge train --data my.npz --task regress --layers 2 --tbptt 50
  rnnedge train --data sine --epochs 30 2> train.log   # progress in a log: one plain line per epoch""",
    "export": """  rnnedge export runs/bm                           # fp32, native only -> runs/bm/bundle-fp32
  rnnedge export runs/bm --quant fp32,int8,int8-dynamic --out bundles/bm     # one bundle per scheme
  rnnedge export runs/bm -q int8-static -f native,onnx,tflite --target litert
  rnnedge export runs/bm -q int8-static -f tflite --tflite-activations int16""",
    "run": """  rnnedge run bundle/ samples.csv                  # one output line per input line
  sensor-reader | rnnedge run bundle/ - --decision   # stdin, the predicted label per sample
  rnnedge run bundle/ test.npy --backend onnxruntime
  rnnedge run bundle/ data.npz --index              # X (N, T, I) + lengths; sequence number per line
  rnnedge run bundle/ seed.csv --generate 100      # forecast models: 100 steps past the seed""",
    "info": """  rnnedge info runs/bm/bundle-int8
  rnnedge info runs/bm/bundle-int8 --json | jq .parity""",
    "demo": """  rnnedge demo                                     # -> demo-out/ (about a minute)
  rnnedge demo --force --epochs 30 --quant fp32,int8-dynamic""",
}

# the extra a command cannot start without (its heavy imports), checked before the command runs
EXTRA_NEEDED = {"train": "train", "export": "export", "import": "export", "demo": "train", "report": "train"}


class HelpFormatter(argparse.HelpFormatter):
    """Text with line breaks (examples, exit codes) stays as written, other text is wrapped; every option
    with a default says it."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if not text or "default" in text or d is None or d is False or d == argparse.SUPPRESS:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    from rnnedge import __version__

    p = argparse.ArgumentParser(
        prog="rnnedge",
        description="Train recurrent models, quantise and export them, and stream them one sample at a time "
        "on edge CPUs. Pipeline: train -> export -> run/bench. Start with `rnnedge demo`.",
        epilog="examples:\n"
        "  rnnedge demo                                  # the whole pipeline on BasicMotions (~1 min)\n"
        "  rnnedge train --data basic_motions --out runs/bm\n"
        "  rnnedge export runs/bm --quant fp32,int8 --format native,onnx\n"
        "  rnnedge run runs/bm/bundle-int8 samples.csv --decision\n"
        "  rnnedge COMMAND --help                        # each command's options, defaults and examples\n\n"
        + EXIT_CODES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"rnnedge {__version__}")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    add_train(sub)
    add_export(sub)
    add_import(sub)
    add_run(sub)
    add_info(sub)
    from rnnedge.demo import add_demo
    from rnnedge.devices import bench

    bench.add_parser(sub)
    add_demo(sub)
    from rnnedge.report import add_report

    add_report(sub)
    for name, sp in sub.choices.items():  # --debug anywhere on the line; one help layout and exit codes
        if name in EXAMPLES:
            sp.epilog = "examples:\n" + EXAMPLES[name]
        sp.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors"
        )
        sp.formatter_class = HelpFormatter
        sp.epilog = ((sp.epilog or "") + "\n\n" + EXIT_CODES).strip("\n")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)  # usage errors: argparse prints them and exits 2
    if not getattr(a, "func", None):
        parser.print_help()
        return EXIT_USAGE
    debug = getattr(a, "debug", False)
    try:
        check_extra(EXTRA_NEEDED.get(a.command))
        return a.func(a)
    except KeyboardInterrupt:
        print("rnnedge: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (`rnnedge run ... | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush is quiet
        return EXIT_OK
    except Exception as e:
        return report(e, debug, EXTRA_NEEDED.get(a.command))


def report(e: Exception, debug: bool, extra: str | None) -> int:
    """One line for what the user can fix; the traceback for what they cannot (a bug)."""
    import traceback

    missing = missing_module(e)
    if isinstance(e, RnnEdgeError | OSError) or missing:
        if debug:
            traceback.print_exc()
        if missing:
            from rnnedge.runtime.vocab import EXTRA_OF, pip_extra

            need = extra if missing == "torch" and extra else EXTRA_OF[missing]  # the command's own extra
            e = f"{missing} is not installed: run `{pip_extra(need)}`"
        hint = " (--debug shows where it was raised)" if isinstance(e, OSError) and not debug else ""
        print(f"rnnedge: error: {e}{hint}", file=sys.stderr)
        return EXIT_ERROR
    traceback.print_exc()
    print(
        f"rnnedge: internal error ({type(e).__name__}): this is a bug in rnnedge, not in your input. "
        "Please report it with the traceback above.",
        file=sys.stderr,
    )
    return EXIT_ERROR


def missing_module(e: Exception) -> str | None:
    """The optional package a ModuleNotFoundError is about (torch, onnx, ...), else None."""
    from rnnedge.runtime.vocab import EXTRA_OF

    name = (getattr(e, "name", None) or "").split(".")[0]
    return name if isinstance(e, ModuleNotFoundError) and name in EXTRA_OF else None


def check_extra(extra: str | None) -> None:
    """MissingDependency (one line naming the pip command) when the command's extra is not installed."""
    if extra is None:
        return
    from rnnedge.runtime.errors import require
    from rnnedge.runtime.vocab import pip_extra

    require("torch", "PyTorch", pip_extra(extra).removeprefix("pip install "))
