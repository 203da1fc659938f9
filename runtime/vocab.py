"""Every name rnnedge accepts, defined once: cells, quantisation schemes, export formats, backends, tasks,
the boards and their emulated CPUs. Everything else imports these (the CLI's choices, the manifest schema's
enums, the exporters, the backends, the device profiles); tests check the schema and profiles against them.
Standard library only, so any module may import it at no cost."""

from __future__ import annotations

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")  # PyTorch nn.RNN(tanh/relu), nn.LSTM, nn.GRU
# cells only an import produces (export/import_onnx.py): ONNX's default GRU, linear_before_reset=0 (every
# scheme and format; runtime/cells.py, train/model.py GRULbr0). An LSTM's proj_size is not a cell of its own:
# cell "lstm" + the manifest's model.proj_size
IMPORTED_CELLS = ("gru_lbr0",)
BUNDLE_CELLS = CELLS + IMPORTED_CELLS  # what a bundle may hold (the manifest schema's enum)

SCHEMES = ("fp32", "fp16", "int8", "int8-dynamic", "int8-static")
WEIGHT_ONLY = ("fp32", "fp16", "int8")  # compute in float32 with the scheme's weights
ACTIVATION_QUANTISED = ("int8-dynamic", "int8-static")  # int8 activations, int32 products

FORMATS = ("native", "onnx", "tflite")  # artifacts a bundle can hold (export/formats.py registers them)

# native: the compiled kernel (numpy if it was not built); numpy: the numpy path, forced
BACKENDS = ("native", "numpy", "onnxruntime", "litert", "tflite-runtime")
TFLITE_INTERPRETERS = ("litert", "tflite-runtime")
ARTIFACT_OF = {  # the bundle artifact (export format) each backend reads
    "native": "native",
    "numpy": "native",
    "onnxruntime": "onnx",
    "litert": "tflite",
    "tflite-runtime": "tflite",
}

TASKS = ("classify", "regress", "forecast")

# board profile (devices/profiles/*.json) -> the CPU `qemu-aarch64 -cpu` emulates for it
QEMU_CPU = {
    "pi-zero-2w": "cortex-a53",
    "pi3": "cortex-a53",
    "pi4": "cortex-a72",
    "pi5": "cortex-a76",
    "generic-aarch64": "cortex-a72",
}
DEFAULT_QEMU_CPU = "cortex-a72"

# optional module -> the extra that installs it (the one-line "pip install 'rnnedge[...]'" messages)
EXTRA_OF = {
    "torch": "train",
    "tqdm": "train",
    "sktime": "train",
    "matplotlib": "plot",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "ai_edge_litert": "tflite",
    "tflite_runtime": "tflite-runtime",
}


def pip_extra(extra: str) -> str:
    """The install command of one extra, quoted for a shell: pip install 'rnnedge[train]'."""
    return f"pip install 'rnnedge[{extra}]'"


def check_choice(value: str, choices, what: str) -> str:
    """value if it is one of choices, else ValueError naming them (callers wrap it in their error type)."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")
    return value
