"""Quantisation-aware training: fine-tune a float run through the exact arithmetic of one export scheme.

A QAT model wraps the run's RecurrentModel (its parameters are the ones trained) and computes, in torch, what
the scheme's quantised reference computes, with straight-through estimators (STE) for every rounding:

    target native (runtime/cells.py, export/quantize.py; folded normalisation, per-row int8 weights)
      int8          weights fake-quantised per output row (np.rint grid), activations float: nn.RNN/LSTM/GRU
      int8-dynamic  + every product input v (x, each h, the head's h) on s = max|v| / 127 per step and row
      int8-static   + the same on calibrated scales (quantize.calibrate_activations of the current weights)
    target tflite (export/tflite_graph.py): the exporter's own step graph, quantised by the exporter
      (int8-static: a8w8 full integer, every tensor on its calibrated per-tensor grid incl. the state, biases
      int32 on s_x * s_w, round half away from zero), run op by op in torch with the model's parameters in
      place of the graph's constants.

Ranges and grids are recalibrated from the current weights at the start of every epoch, exactly as the
exporter calibrates (the run's training sequences, each from a zero state and all as one long stream), and
frozen within the epoch. What training reports at the end is not the torch simulation but the exporter's own
reference (quantize.native_reference / the graph's numpy Evaluator) on the final checkpoint: `rnnedge export`
of the QAT run computes exactly that, which tests/test_qat.py checks on the real backends.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rnnedge.runtime.cells import activation_names
from rnnedge.runtime.errors import TrainError
from torch import nn

from .checkpoint import commit, has_run, load_checkpoint, result_entry, write_payload, write_result
from .data import load_dataset
from .trainer import (
    TrainConfig,
    _record,
    calibration_sequences,
    epoch_entry,
    evaluate,
    make_schedule,
    plot_curves,
    train_epoch,
)

SCHEMES = ("int8", "int8-dynamic", "int8-static")
TARGETS = ("native", "tflite")


# ----------------------------------------------------------------------------
# straight-through fake quantisation


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward q, backward identity."""
    return x + (q - x).detach()


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """std::round (TFLite), as tflite_graph.round_half_away."""
    return torch.sign(v) * torch.floor(torch.abs(v) + 0.5)


def fq_rows(w: torch.Tensor, per_row: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize.quantize_rows (or one scale per matrix) with STE: w (O, K) -> (fake-quantised w, scale)."""
    amax = (w.detach().abs().amax(dim=1) if per_row else w.detach().abs().amax()[None]).float()
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))  # (O,) or (1,)
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127) * scale[:, None]
    return ste(w, q), scale


def fq_symmetric(v: torch.Tensor, scale) -> torch.Tensor:
    """The native product input: q = rint(clip(v / s, -127, 127)) * s. scale None = dynamic (per row,
    s = max|v| / 127 this step); else the fixed static scale. Values beyond the grid get no gradient."""
    if scale is None:
        amax = v.detach().abs().amax(dim=-1, keepdim=True)  # (B, 1)
        s = amax / 127.0
        inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
        return ste(v, torch.round(torch.clamp(v * inv, -127, 127)) * s)
    s = float(scale)
    vc = torch.clamp(v, -127 * s, 127 * s)
    return ste(vc, torch.round(vc * (1.0 / s)) * s)


def fq_affine(v: torch.Tensor, scale: float, zero: float, lo: int, hi: int) -> torch.Tensor:
    """tflite_graph.fake_quant with STE (zero gradient outside the grid)."""
    vc = torch.clamp(v, (lo - zero) * scale, (hi - zero) * scale)
    q = (torch.clamp(round_half_away(vc / scale) + zero, lo, hi) - zero) * scale
    return ste(vc, q)


class StateLimit(torch.autograd.Function):
    """Identity forward; backward adds the gradient of weight * sum(relu(|c| - limit)^2) / (2 B): a soft bound
    on a recurrent state so that its calibrated range, hence its int8 step, shrinks (an a8w8 LSTM cell state
    of +-44 has a step of 0.35)."""

    @staticmethod
    def forward(ctx, c, limit: float, weight: float):
        ctx.save_for_backward(c)
        ctx.limit, ctx.weight = limit, weight
        return c.view_as(c)

    @staticmethod
    def backward(ctx, g):
        (c,) = ctx.saved_tensors
        excess = torch.relu(c.abs() - ctx.limit) * torch.sign(c)
        return g + ctx.weight * excess / c.shape[0], None, None


# ----------------------------------------------------------------------------
# the QAT model: RecurrentModel's forward contract, the scheme's arithmetic


class QatModel(nn.Module):
    """forward(x (B, T, I) raw, state) -> (y (B, T, O) raw, state), like RecurrentModel, so the trainer's
    train_epoch / evaluate run it unchanged. `calibrate(seqs)` refreshes the frozen ranges."""

    def __init__(
        self,
        model,
        scheme: str,
        target: str = "native",
        options: dict | None = None,
        state_limit: float | None = None,
        state_weight: float = 1e-3,
    ):
        super().__init__()
        if scheme not in SCHEMES:
            raise TrainError(f"--qat must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        if target not in TARGETS:
            raise TrainError(f"--qat-target must be one of {', '.join(TARGETS)}, got {target!r}")
        if target == "tflite" and scheme != "int8-static":
            raise TrainError(
                "--qat-target tflite simulates the a8w8 full-integer graph: use --qat int8-static (TFLite's "
                "int8 / int8-dynamic files compute like the native ones up to their per-row input rounding)"
            )
        self.inner, self.cfg = model, model.cfg
        self.scheme, self.target, self.options = scheme, target, dict(options or {})
        self.state_limit, self.state_weight = state_limit, state_weight  # tflite: soft bound on c_out_k
        self.scales = None  # native int8-static: {x, h_0, ...}
        self.graph = None  # tflite: the exporter's quantised step graph of the last calibration

    @property
    def out_std(self):
        return self.inner.out_std

    # -- calibration: the exporter's own code on the current weights

    def export_job(self, seqs: list[np.ndarray], eval_seqs=None, eval_targets=None, task=None):
        from rnnedge.export.exporter import ExportJob

        return ExportJob(
            cfg=self.cfg,
            model=self.inner,
            scheme=self.scheme,
            task=task or {"kind": "classify", "labels": None, "readout": "last"},
            eval_seqs=list(eval_seqs or []),
            eval_targets=eval_targets,
            calib_seqs=list(seqs),
            options={"tflite_target": "litert", **self.options},
        )

    @torch.no_grad()
    def calibrate(self, seqs: list[np.ndarray]) -> None:
        if self.scheme != "int8-static":
            return
        job = self.export_job(seqs)
        if self.target == "native":
            from rnnedge.export import native

            self.scales = native.activation_scales(job)
        else:
            from rnnedge.export import tflite_export

            self.graph, _ = tflite_export.graph(job)

    # -- forward

    def forward(self, x: torch.Tensor, state=None):
        if self.target == "tflite":
            return self._tflite(x, state)
        if self.scheme == "int8":
            return self._weight_only(x, state)
        return self._native_q8(x, state)

    def folded(self) -> dict[str, torch.Tensor]:
        """reference.fold_normalization in torch (differentiable): normalisation into layer 0 and the head."""
        m = self.inner
        p = dict(m.named_parameters())
        s_in, m_in, s_out, m_out = m.in_std, m.in_mean, m.out_std, m.out_mean
        w = {k: v for k, v in p.items()}
        w_ih = p["rnn.weight_ih_l0"]
        w["rnn.weight_ih_l0"] = w_ih / s_in[None, :]
        w["rnn.bias_ih_l0"] = p["rnn.bias_ih_l0"] - w_ih @ (m_in / s_in)
        w["head.weight"] = p["head.weight"] * s_out[:, None]
        w["head.bias"] = p["head.bias"] * s_out + m_out
        return w

    def _quantised_weights(self) -> dict[str, torch.Tensor]:
        from rnnedge.export.quantize import is_matrix

        return {k: (fq_rows(v)[0] if is_matrix(k) else v) for k, v in self.folded().items()}

    def _weight_only(self, x, state):
        """int8 weight-only: the reference is PyTorch's own module on the effective weights."""
        w = self._quantised_weights()
        rnn_w = {k[4:]: v for k, v in w.items() if k.startswith("rnn.")}
        seq, state = torch.func.functional_call(self.inner.rnn, rnn_w, (x, state))
        return seq @ w["head.weight"].T + w["head.bias"], state

    def _native_q8(self, x, state):
        """Q8Model in torch: each product's input on its int8 grid, products of dequantised values (exact in
        float32 up to summation order), PyTorch's gate equations in float."""
        cfg, w = self.cfg, self._quantised_weights()
        L, H, B = cfg.num_layers, cfg.hidden_size, x.shape[0]
        lstm = cfg.cell == "lstm"
        if state is None:
            z = x.new_zeros(L, B, H)
            state = (z, z.clone()) if lstm else z
        hs = list((state[0] if lstm else state).unbind(0))
        cs = list(state[1].unbind(0)) if lstm else [None] * L
        names = activation_names(L)
        scales = self.scales if self.scheme == "int8-static" else dict.fromkeys(names)
        if self.scheme == "int8-static" and scales is None:
            raise TrainError("int8-static QAT needs calibrate(training sequences) first")
        ys = []
        for t in range(x.shape[1]):
            v, v_scale = x[:, t], scales["x"]
            for k in range(L):
                gx = fq_symmetric(v, v_scale) @ w[f"rnn.weight_ih_l{k}"].T + w[f"rnn.bias_ih_l{k}"]
                hq = fq_symmetric(hs[k], scales[f"h_{k}"])
                gh = hq @ w[f"rnn.weight_hh_l{k}"].T + w[f"rnn.bias_hh_l{k}"]
                hs[k], cs[k] = gate_step(cfg.cell, gx, gh, hs[k], cs[k])
                v, v_scale = hs[k], scales[f"h_{k}"]
            ys.append(fq_symmetric(v, v_scale) @ w["head.weight"].T + w["head.bias"])
        h = torch.stack(hs)
        return torch.stack(ys, 1), ((h, torch.stack(cs)) if lstm else h)

    def _tflite(self, x, state):
        if self.graph is None:
            raise TrainError("tflite QAT needs calibrate(training sequences) first")
        limit = (self.state_limit, self.state_weight) if self.training and self.state_limit else None
        return GraphRunner(self.graph, self.inner, limit).run(x, state)


def gate_step(cell: str, gx, gh, h, c):
    """runtime.cells.gate_step in torch: gx = W_ih x + b_ih, gh = W_hh h + b_hh (B, G*H)."""
    H = h.shape[-1]
    if cell == "lstm":
        i, f, g, o = (gx + gh).split(H, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    if cell == "gru":
        rx, zx, nx = gx.split(H, dim=-1)
        rh, zh, nh = gh.split(H, dim=-1)
        r, z = torch.sigmoid(rx + rh), torch.sigmoid(zx + zh)
        n = torch.tanh(nx + r * nh)
        return (1 - z) * n + z * h, c
    a = gx + gh
    return (torch.tanh(a) if cell == "rnn_tanh" else torch.relu(a)), c


# ----------------------------------------------------------------------------
# the TFLite step graph in torch


def graph_constants(cfg, model) -> dict[str, torch.Tensor]:
    """The graph's FC weight/bias constants (tflite_graph.build, unfolded weights) from the parameters."""
    p = dict(model.named_parameters())
    H, out = cfg.hidden_size, {}
    for k in range(cfg.num_layers):
        w_ih, w_hh = p[f"rnn.weight_ih_l{k}"], p[f"rnn.weight_hh_l{k}"]
        b_ih, b_hh = p[f"rnn.bias_ih_l{k}"], p[f"rnn.bias_hh_l{k}"]
        out[f"l{k}.gx.weight"], out[f"l{k}.gh.weight"] = w_ih, w_hh
        if cfg.cell == "gru":
            zero = b_hh.new_zeros(H)
            out[f"l{k}.gx.bias"] = b_ih + torch.cat([b_hh[: 2 * H], zero])
            out[f"l{k}.gh.bias"] = torch.cat([zero, zero, b_hh[2 * H :]])
        else:
            out[f"l{k}.gx.bias"] = b_ih + b_hh
    out["head.weight"], out["head.bias"] = p["head.weight"], p["head.bias"]
    return out


class GraphRunner:
    """tflite_graph.Evaluator in torch for a full-integer graph: the same ops in the same order, every
    quantised activation on its grid (STE), FC weights re-quantised from the live parameters (per channel
    or per tensor as the graph stores them) and biases on s_x * s_w (round half away, as the exporter)."""

    def __init__(self, g, model, state_limit: tuple[float, float] | None = None):
        from rnnedge.export.tflite_graph import QRANGE

        self.g, self.model, self.qrange = g, model, QRANGE
        self.limited = set()  # the cell states' tensors (c_out_k, quantised: c_out_k_q) under StateLimit
        if state_limit is not None:
            deq = {o for op in g.ops if op.kind == "DEQUANTIZE" for o in op.outputs}
            self.limited = {
                i for i, t in enumerate(g.tensors) if t.name.startswith("c_out_") and i not in deq
            }
            self.limit = state_limit
        live = graph_constants(model.cfg, model)
        consts = {}
        for op in g.fcs():
            x, wt = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
            wq, ws = fq_rows(live[wt.name], per_row=len(wt.scale) > 1)
            consts[op.inputs[1]] = wq
            if op.inputs[2] >= 0:
                b = live[g.tensors[op.inputs[2]].name]
                bs = float(x.scale[0]) * ws  # (O,) or (1,)
                consts[op.inputs[2]] = ste(b, round_half_away(b / bs) * bs)
        for i, t in enumerate(g.tensors):  # the other constants (in/out normalisation) as stored; axes unused
            if t.data is not None and i not in consts and t.data.dtype != np.int32:
                consts[i] = torch.from_numpy(t.value())
        self.consts = consts

    def quantise(self, i: int, r: torch.Tensor) -> torch.Tensor:
        t = self.g.tensors[i]
        if not t.quantized:
            return r
        lo, hi = self.qrange[t.dtype]
        return fq_affine(r, float(t.scale[0]), float(t.zero_point[0]), lo, hi)

    def run_op(self, op, v: dict) -> None:
        k = op.kind
        a = [v.get(i) if i >= 0 else None for i in op.inputs]
        if k == "FULLY_CONNECTED":
            r = a[0] @ a[1].T
            res = [r if a[2] is None else r + a[2]]
        elif k == "ADD":
            res = [a[0] + a[1]]
        elif k == "SUB":
            res = [a[0] - a[1]]
        elif k == "MUL":
            res = [a[0] * a[1]]
        elif k == "LOGISTIC":
            res = [torch.sigmoid(a[0])]
        elif k == "TANH":
            res = [torch.tanh(a[0])]
        elif k == "SPLIT":
            res = a[1].chunk(op.opts["num_splits"], dim=1)
        elif k in ("QUANTIZE", "DEQUANTIZE"):  # the rounding happens on the output's grid
            res = [a[0]]
        else:
            raise NotImplementedError(k)
        for i, r in zip(op.outputs, res):
            if op.opts.get("act") == "RELU":
                r = torch.relu(r)
            if i in self.limited:
                r = StateLimit.apply(r, *self.limit)
            v[i] = self.quantise(i, r)

    def run(self, x: torch.Tensor, state=None):
        """x (B, T, I) raw -> y (B, T, O), state in the model's torch layout (h (L, B, H) or (h, c))."""
        g, cfg = self.g, self.model.cfg
        L, B = cfg.num_layers, x.shape[0]
        lstm = cfg.cell == "lstm"
        names = [g.tensors[i].name for i in g.inputs[1:]]  # h_in_0, c_in_0, h_in_1, ...
        if state is None:
            cur = {n: x.new_zeros(B, cfg.hidden_size) for n in names}
        else:
            h, c = state if lstm else (state, None)
            cur = {f"h_in_{k}": h[k] for k in range(L)}
            cur.update({f"c_in_{k}": c[k] for k in range(L)} if lstm else {})
        out_names = [g.tensors[i].name for i in g.outputs]
        ys = []
        for t in range(x.shape[1]):
            v = dict(self.consts)
            v[g.inputs[0]] = x[:, t]
            v.update({i: cur[n] for i, n in zip(g.inputs[1:], names)})
            for op in g.ops:
                self.run_op(op, v)
            res = dict(zip(out_names, (v[i] for i in g.outputs)))
            ys.append(res["y"])
            cur = {n: res[n.replace("_in_", "_out_")] for n in names}
        h = torch.stack([cur[f"h_in_{k}"] for k in range(L)])
        st = (h, torch.stack([cur[f"c_in_{k}"] for k in range(L)])) if lstm else h
        return torch.stack(ys, 1), st


# ----------------------------------------------------------------------------
# what the export will compute: the exporter's reference on a split


def reference_score(qat: QatModel, calib_seqs, split, task: str) -> dict:
    """Accuracy (classify) or RMSE of the exporter's quantised reference of the current weights, and of the
    float model, on `split`. This is what `rnnedge export --scheme S --format F` of the run computes."""
    from rnnedge.export import native, tflite_export
    from rnnedge.export.exporter import default_reference
    from rnnedge.export.reference import run_reference

    seqs = split.sequences()
    job = qat.export_job(calib_seqs, seqs)
    ref = (tflite_export if qat.target == "tflite" else native).reference(job) or default_reference(job)
    float_model = qat.inner.eval()
    outs = {"reference": [ref(s) for s in seqs], "float": [run_reference(float_model, s) for s in seqs]}
    if task == "classify":
        return {
            k: float(np.mean([np.argmax(y[-1]) == t for y, t in zip(ys, split.y)])) for k, ys in outs.items()
        }
    targets = [yy[:n] for yy, n in zip(split.y, split.lengths)]
    return {k: rmse(ys, targets) for k, ys in outs.items()}


def accuracy(ys: list[np.ndarray], labels) -> float:
    """Decision at each sequence's last step, as deployed (readout 'last')."""
    return float(np.mean([int(np.argmax(y[-1])) == int(t) for y, t in zip(ys, labels)]))


def rmse(ys: list[np.ndarray], targets: list[np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.concatenate([((y - t) ** 2).ravel() for y, t in zip(ys, targets)]))))


# ----------------------------------------------------------------------------
# the QAT run


def train_qat(
    from_run: str | Path,
    scheme: str,
    out: str | Path,
    target: str = "native",
    epochs: int = 30,
    lr: float = 3e-4,  # 1e-3 moved the weights themselves (BENCHMARKS.md, PTQ vs QAT)
    state_limit: float | None = None,
    state_weight: float = 1e-3,
    force: bool = False,
    progress: bool = True,
    log=print,
    **overrides,
):
    """Fine-tune the float run `from_run` through `scheme`'s arithmetic on `target`; write a run folder that
    `rnnedge export` takes like any other. Returns (model, metrics)."""
    out = Path(out)
    if has_run(out) and not force:
        raise TrainError(f"{out} already holds a run: choose another --out or pass --force to overwrite it")
    model, meta = load_checkpoint(from_run)
    base = meta["train"]
    cfg = TrainConfig(**{**base, "epochs": epochs, "lr": lr, **overrides})
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, cfg.threads))
    ds = load_dataset(meta["data"]["spec"], meta["task"]["kind"], seed=base.get("seed", 0))
    task = ds.task
    calib = calibration_sequences(ds.train, task, base.get("scale_augment", 0.0))  # as the exporter
    fit = ds.train
    qat = QatModel(model.train(), scheme, target, state_limit=state_limit, state_weight=state_weight)
    metric = "accuracy" if task == "classify" else "rmse"
    qat.calibrate(calib)
    ptq = reference_score(qat, calib, ds.test, task)
    log(
        f"QAT {scheme} ({target}) from {from_run}: before fine-tuning float {metric} {ptq['float']:.4f}, "
        f"{scheme} reference {ptq['reference']:.4f}"
    )
    opt = torch.optim.Adam(qat.parameters(), lr=cfg.lr)
    sched = make_schedule(opt, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    qat_meta = {
        "scheme": scheme,
        "target": target,
        "from": str(Path(from_run).resolve()),
        "state_limit": state_limit,
        "state_weight": state_weight if state_limit else None,
        "stream": cfg.stream,
    }
    config = {**meta, "model": model.cfg.to_dict(), "train": asdict(cfg), "qat": qat_meta}
    history, best_epoch, t0 = [], 0, time.time()
    # the starting point is a candidate too: fine-tuning returns the weights whose simulated training loss
    # is lowest, so it never hands back a model the scheme's arithmetic scores worse than post-training
    best = evaluate(qat, fit, task)["loss"]
    best_entry = write_payload(out, "model", qat.inner.state_dict()) | {"epoch": 0}
    commit(out, _record(config, history, best_entry, None))
    run_epoch = train_epoch
    if cfg.stream:  # fine-tune on long streams (stream_train.py), the state carried as deployed
        from .stream_train import stream_epoch as run_epoch
    for epoch in range(cfg.epochs):
        loss, gnorm = run_epoch(qat, opt, fit, task, cfg, gen)
        if sched is not None:
            sched.step()
        qat.calibrate(calib)  # the grids the export would use for these weights
        v = evaluate(qat, fit, task)
        history.append(epoch_entry(epoch, loss, v, metric, gnorm, t0))
        if v["loss"] < best:
            best, best_epoch = v["loss"], epoch + 1
            best_entry = write_payload(out, "model", qat.inner.state_dict()) | {"epoch": best_epoch}
            commit(out, _record(config, history, best_entry, None))
        if progress:
            log(f"  epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f}, train {metric} {v[metric]:.4f}")
    model, _ = load_checkpoint(out)
    qat = QatModel(model, scheme, target)
    qat.calibrate(calib)
    simulated = evaluate(qat, ds.test, task)
    final = reference_score(qat, calib, ds.test, task)
    metrics = {
        "task": task,
        "metric": metric,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "seconds": round(time.time() - t0, 2),
        # the export's number: the scheme's quantised reference of the saved weights on the test split
        "test": {metric: final["reference"], "loss": simulated["loss"]},
        "qat": {
            **qat_meta,
            "test_simulated": simulated[metric],
            "test_reference": final["reference"],
            "test_float": final["float"],
            "before": {"test_reference": ptq["reference"], "test_float": ptq["float"]},
        },
        "history": history,
    }
    results = {
        "metrics.json": write_result(out, "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    }
    title = f"{out.name}: QAT {scheme} ({target}) from {Path(from_run).name}, best epoch {best_epoch}"
    if plot_curves(history, metric, out / "curves.png", title, best_epoch, False, log):
        results["curves.png"] = result_entry(out, "curves.png")
    commit(out, _record(config, history, best_entry, None, results, True))
    log(
        f"best epoch {best_epoch}: test {metric} {scheme} ({target}) {final['reference']:.4f} "
        f"(torch simulation {simulated[metric]:.4f}, float {final['float']:.4f}; before QAT "
        f"{ptq['reference']:.4f}) -> {out}"
    )
    return model, metrics
