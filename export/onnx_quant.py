"""int8 ONNX graphs from the float step graph, with onnxruntime's quantization tools.

    int8-dynamic  quantize_dynamic on MatMul: weights int8 per output channel; each step quantises the
                  MatMul's input (uint8, one scale per tensor, from that step's own min/max).
    int8-static   quantize_static, QDQ, on Gemm: weights int8 per output channel, inputs uint8 with fixed
                  ranges calibrated by streaming training sequences (true min/max, see calibration_inputs);
                  ORT fuses each DQ -> Gemm into one integer QGemm with float output.

Only the matrix products (all the multiply-adds) are quantised; gate nonlinearities, the gate pre-activations
and the LSTM cell state stay float: quantising the Gemm outputs too made a GRU's error 10x worse.

reduce_range=True (7-bit weights), always. ORT's x86 u8s8 kernel without VNNI (AVX2 vpmaddubsw) adds two
u8*s8 products in int16 and saturates when both are large; with |w| <= 64 it cannot (255*64*2 < 32767).
Measured on an emulated Haswell (tests/test_onnx.py): 8-bit weights put the output 12-13 % of its range off
the graph's own semantics, 7-bit ones 0.2 %; on ARM and VNNI CPUs both are exact. The file we ship is the one
that is right on every CPU.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

REDUCE_RANGE = True
DYNAMIC_OPS = ["MatMul", "LSTM"]  # LSTM: the operator form (-> DynamicQuantizeLSTM); ORT leaves GRU/RNN float


def _ort_quant():
    from onnxruntime import quantization as q

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    return q


def _through_files(model: onnx.ModelProto, quantize) -> onnx.ModelProto:
    """ORT's quantisers work on files: pre-process the float model into a temp file, run
    quantize(q, src, dst), load the result."""
    q = _ort_quant()
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "float.onnx", Path(d) / "int8.onnx"
        _preprocess(q, model, src)
        quantize(q, src, dst)
        return onnx.load(dst)


def dynamic(model: onnx.ModelProto, reduce_range: bool = REDUCE_RANGE) -> onnx.ModelProto:
    return _through_files(
        model,
        lambda q, src, dst: q.quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=DYNAMIC_OPS,
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=q.QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        ),
    )


def _preprocess(q, model: onnx.ModelProto, path: Path) -> None:
    """ORT's quantisation pre-processing (shape inference), without its graph optimisation: that would fuse
    MatMul + Add into Gemm, which quantize_dynamic leaves float."""
    onnx.save(model, path)
    q.quant_pre_process(str(path), str(path), skip_optimization=True)


class _Feed:
    """CalibrationDataReader over step inputs, in batches (ranges are per tensor: batching is free)"""

    def __init__(self, inputs: dict[str, np.ndarray], batch: int = 4096):
        n = len(next(iter(inputs.values())))
        self.batches = iter([{k: v[i : i + batch] for k, v in inputs.items()} for i in range(0, n, batch)])

    def get_next(self):
        return next(self.batches, None)


def static(
    model: onnx.ModelProto,
    calib_inputs: dict[str, np.ndarray],  # every step input (x, h_in_0, ...) seen while streaming, (N, .)
    reduce_range: bool = REDUCE_RANGE,
) -> onnx.ModelProto:
    return _through_files(
        model,
        lambda q, src, dst: q.quantize_static(
            src,
            dst,
            _Feed(calib_inputs),
            quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=["Gemm"],
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
            extra_options={
                "CalibMovingAverage": False,  # true min/max: a moving average under-covers the state
                "OpTypesToExcludeOutputQuantization": ["Gemm"],  # gate pre-activations stay float
            },
        ),
    )


MAX_CALIB_STEPS = 50_000  # per pass; bounds memory (every step's inputs are kept) and time
CHAIN_STEPS = 20_000  # length of one back-to-back stream


def calibration_inputs(step_fn, state_sizes: dict[str, int], seqs: list[np.ndarray]) -> dict:
    """Stream `seqs` through the float step graph and record every step's inputs.

    step_fn(inputs dict of (B, .) arrays) -> outputs dict; state_sizes: state input name -> its size. Two
    passes: each sequence from a zero state (what a stream sees after reset), then the sequences back to
    back without a reset, in chains of up to CHAIN_STEPS steps (what a long-running stream sees). Streams
    are stepped together as one batch.
    """
    seqs = [np.asarray(s, np.float32) for s in seqs]
    n, total = 0, 0
    while n < len(seqs) and total + len(seqs[n]) <= MAX_CALIB_STEPS:
        total += len(seqs[n])
        n += 1
    seqs = seqs[: max(n, 1)]
    n_chains = -(-sum(len(s) for s in seqs) // CHAIN_STEPS)
    chains = [np.concatenate(seqs[k::n_chains]) for k in range(n_chains)]
    state_names = list(state_sizes)
    out = {k: [] for k in ["x", *state_names]}
    for seqs_b in (seqs, chains):
        T = max(len(s) for s in seqs_b)
        state = {k: np.zeros((len(seqs_b), n), np.float32) for k, n in state_sizes.items()}
        for t in range(T):
            live = [i for i, s in enumerate(seqs_b) if t < len(s)]
            x = np.stack([seqs_b[i][t] for i in live]).astype(np.float32)
            feed = {"x": x, **{k: v[live] for k, v in state.items()}}
            for k, v in feed.items():
                out[k].append(v)
            res = step_fn(feed)
            for k in state_names:
                state[k][live] = res[k.replace("_in_", "_out_")]
    return {k: np.concatenate(v) for k, v in out.items()}


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove initializers no node reads (ORT would warn about each one at every load)."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
