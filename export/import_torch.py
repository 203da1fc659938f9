"""Bring your own PyTorch model: map a user's nn.Module onto rnnedge's model form and export it through the
normal pipeline (exporter.py: build -> verify -> install), checked against the module as it was given.

What maps (found in the module's registration order, `named_modules()`):
    [input normalisation] -> recurrent core -> [head]
    normalisation  declared `input_mean`/`input_std` (what your data pipeline does before forward(): the
                   bundle then takes raw samples), or `norm="name"`: a submodule that is a per-channel
                   affine map in eval mode (a Normalize module, BatchNorm1d, ...), probed numerically
    core           one nn.LSTM / nn.GRU / nn.RNN (tanh|relu, 1-3 layers, either batch_first, bias or not,
                   LSTM proj_size: h = W_hr (o * tanh(c))),
                   or a stack of nn.LSTMCell / nn.GRUCell / nn.RNNCell of one kind and one hidden size
    head           nn.Linear layers (consecutive ones are multiplied into one), nn.Dropout, nn.Identity;
                   no head = the core's h
What is refused, with the module's name and why: bidirectional layers (they need the future of the
sequence), activations inside or after the head (the runtime's head is one Linear layer),
attention, and every other module type. The mapping is then checked against the module's own forward() on
probe sequences, so a forward that does something the modules do not show (a residual, an inline
torch.relu, a different order) is refused instead of exported wrong.

The saved form (no user code needed): a state_dict (.pt via torch.load(weights_only=True), or
.safetensors) plus a declared architecture, a JSON list of the modules in order with their constructor
arguments (`arch_module`, `rnnedge import model.pt --arch arch.json`):
    {"modules": [{"name": "lstm", "type": "LSTM", "input_size": 6, "hidden_size": 24, "num_layers": 2,
                  "batch_first": true},
                 {"name": "fc", "type": "Linear", "in_features": 24, "out_features": 4}],
     "input_mean": [...] or "a state_dict key", "input_std": ...}
A torch.export program is not a supported saved form: torch.export decomposes nn.LSTM into aten ops and
keeps no module structure to map.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rnnedge.train.model import ModelConfig, RecurrentModel
from torch import nn

from .exporter import ExportError, ExportJob, export

CORES = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}
CELL_MODULES = {nn.LSTMCell: "lstm", nn.GRUCell: "gru", nn.RNNCell: "rnn"}
PASS_THROUGH = (nn.Dropout, nn.Identity)
ACTIVATIONS = (
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SiLU,
    nn.Softmax,
    nn.LogSoftmax,
)
ATTENTION = (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoder, nn.TransformerEncoderLayer)
MAX_LAYERS = 3
MAPPING_ATOL = 1e-4  # mapped model vs the module's own forward (fp32, float summation order only)


class ImportRefused(ExportError):
    """The model cannot be mapped; the message names the module and says why."""


@dataclass
class TorchMapping:
    cfg: ModelConfig
    model: RecurrentModel  # rnnedge's form: normalisation buffers, rnn, head (eval mode)
    batch_first: bool  # how the original forward() takes x
    parts: dict  # which of the user's modules became what: {"core": [...], "head": [...], "norm": ...}


# ----------------------------------------------------------------------------
# finding the parts


def leaf_modules(module: nn.Module, skip: str | None) -> list[tuple[str, nn.Module]]:
    """Modules in registration order that compute something: containers are walked, not listed."""
    out = []
    for name, m in module.named_modules():
        if skip and (name == skip or name.startswith(skip + ".")):
            continue
        if isinstance(m, (*CORES, *CELL_MODULES, *ATTENTION)) or not any(True for _ in m.children()):
            if not any(name.startswith(n + ".") for n, _ in out):  # inside an already listed module
                out.append((name or type(m).__name__, m))
    return out


def kind_of(m: nn.Module) -> str:
    if isinstance(m, (nn.RNN, nn.RNNCell)):
        return f"rnn_{m.nonlinearity}"
    return {**CORES, **CELL_MODULES}[type(m)]


def refuse_module(name: str, m: nn.Module, where: str):
    t = type(m).__name__
    if isinstance(m, ATTENTION):
        raise ImportRefused(
            f"{name} ({t}): attention looks at the whole sequence and cannot stream one sample "
            "at a time; rnnedge maps recurrent cores (LSTM/GRU/RNN) with Linear heads"
        )
    if isinstance(m, ACTIVATIONS):
        raise ImportRefused(
            f"{name} ({t}) {where}: rnnedge's head is one Linear layer, so activations in or "
            "after the head are not supported yet (drop a final Softmax: argmax is the same)"
        )
    if isinstance(m, nn.Linear) and where == "before the recurrent core":
        raise ImportRefused(f"{name} (Linear) before the recurrent core: input projections are not supported")
    raise ImportRefused(
        f"{name} ({t}) {where}: rnnedge cannot map this module (it maps input normalisation, "
        "nn.LSTM/GRU/RNN or a stack of their cells, then Linear/Dropout layers)"
    )


def check_core(name: str, m: nn.Module) -> None:
    if getattr(m, "bidirectional", False):
        raise ImportRefused(
            f"{name} ({type(m).__name__}) is bidirectional: its backward direction needs the "
            "future of the sequence, so it cannot stream; retrain with bidirectional=False"
        )
    if isinstance(m, tuple(CORES)) and not m.num_layers <= MAX_LAYERS:
        raise ImportRefused(f"{name} has {m.num_layers} layers: rnnedge streams 1-{MAX_LAYERS}")


def find_parts(module: nn.Module, norm: str | None) -> tuple[list, list]:
    """-> core [(name, module)] (one nn.RNN/LSTM/GRU or a stack of cells), head [(name, Linear)]."""
    core, head, seen_head = [], [], False
    for name, m in leaf_modules(module, norm):
        if isinstance(m, PASS_THROUGH):
            continue
        if isinstance(m, (*CORES, *CELL_MODULES)):
            check_core(name, m)
            if seen_head:
                raise ImportRefused(
                    f"{name} ({type(m).__name__}) comes after the head ({head[0][0]}): "
                    "rnnedge maps one recurrent core followed by a head"
                )
            if core and (isinstance(m, tuple(CORES)) or isinstance(core[0][1], tuple(CORES))):
                raise ImportRefused(
                    f"two recurrent modules ({core[0][0]}, {name}): rnnedge maps one stacked "
                    "nn.LSTM/GRU/RNN or one stack of cells of the same kind"
                )
            if core and kind_of(m) != kind_of(core[0][1]):
                raise ImportRefused(
                    f"{name} ({type(m).__name__}) stacked on {core[0][0]} "
                    f"({type(core[0][1]).__name__}): one cell kind per model"
                )
            core.append((name, m))
        elif isinstance(m, nn.Linear) and core:
            seen_head = True
            head.append((name, m))
        elif (
            not any(True for _ in m.parameters(recurse=False)) and not core and not isinstance(m, ACTIVATIONS)
        ):
            raise ImportRefused(
                f"{name} ({type(m).__name__}) before the recurrent core: rnnedge cannot map it "
                "(input normalisation: declare input_mean/input_std or name it with norm=)"
            )
        else:
            refuse_module(name, m, "after the recurrent core" if core else "before the recurrent core")
    if not core:
        raise ImportRefused(
            f"{type(module).__name__} has no nn.LSTM/GRU/RNN or LSTMCell/GRUCell/RNNCell to map"
        )
    if len(core) > MAX_LAYERS:
        raise ImportRefused(
            f"{len(core)} stacked cells ({core[0][0]} ... {core[-1][0]}): rnnedge streams "
            f"1-{MAX_LAYERS} layers"
        )
    return core, head


# ----------------------------------------------------------------------------
# weights in rnnedge's names (rnn.weight_ih_l0, ..., head.weight)


def _t(p) -> np.ndarray:
    return p.detach().double().cpu().numpy()


def core_weights(core: list) -> tuple[str, int, int, int, dict]:
    """-> cell, input size, hidden size, layers, {rnn.weight_ih_l0: ...} (float64, PyTorch layout)."""
    first = core[0][1]
    cell = kind_of(first)
    w = {}
    if isinstance(first, tuple(CORES)):
        I, H, L = first.input_size, first.hidden_size, first.num_layers
        for k in range(L):
            G = _t(getattr(first, f"weight_hh_l{k}")).shape[0]
            for kind in ("ih", "hh"):
                w[f"rnn.weight_{kind}_l{k}"] = _t(getattr(first, f"weight_{kind}_l{k}"))
                b = getattr(first, f"bias_{kind}_l{k}", None) if first.bias else None
                w[f"rnn.bias_{kind}_l{k}"] = _t(b) if b is not None else np.zeros(G)
            if getattr(first, "proj_size", 0):  # W_hr (P, H), no bias
                w[f"rnn.weight_hr_l{k}"] = _t(getattr(first, f"weight_hr_l{k}"))
        return cell, I, H, L, w
    I, H = first.input_size, first.hidden_size
    for k, (name, m) in enumerate(core):
        want = I if k == 0 else H
        if m.hidden_size != H or m.input_size != want:
            raise ImportRefused(
                f"{name} ({type(m).__name__}({m.input_size}, {m.hidden_size})) does not stack on "
                f"{core[k - 1][0] if k else 'the input'}: every layer needs input {want}, "
                f"hidden {H}"
            )
        for kind in ("ih", "hh"):
            w[f"rnn.weight_{kind}_l{k}"] = _t(getattr(m, f"weight_{kind}"))
            b = getattr(m, f"bias_{kind}")
            w[f"rnn.bias_{kind}_l{k}"] = _t(b) if b is not None else np.zeros(m.weight_hh.shape[0])
    return cell, I, H, len(core), w


def head_weights(head: list, H: int) -> dict:
    """Consecutive Linear layers (only Dropout between) multiplied into one: W = W2 W1, b = W2 b1 + b2."""
    W, b = np.eye(H), np.zeros(H)
    for name, m in head:
        if m.in_features != W.shape[0]:
            raise ImportRefused(
                f"{name} (Linear({m.in_features}, {m.out_features})) does not take the "
                f"{W.shape[0]} values before it"
            )
        w2 = _t(m.weight)
        b2 = _t(m.bias) if m.bias is not None else np.zeros(m.out_features)
        W, b = w2 @ W, w2 @ b + b2
    return {"head.weight": W, "head.bias": b}


def probe_affine(name: str, m: nn.Module, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A normalisation module as z = a x + b per channel -> (mean, std) with z = (x - mean) / std."""
    m.eval()
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(16, size, generator=gen, dtype=torch.float64) * 3
    try:
        with torch.no_grad():
            m64 = m.double() if any(True for _ in m.parameters()) or any(True for _ in m.buffers()) else m
            f0 = m64(torch.zeros(1, size, dtype=torch.float64))[0]
            f1 = m64(torch.ones(1, size, dtype=torch.float64))[0]
            fX = m64(X)
    except Exception as e:
        raise ImportRefused(
            f"norm module {name} ({type(m).__name__}) does not map (N, {size}) inputs: {e}"
        ) from None
    finally:
        m.float()
    a, b = (f1 - f0).numpy(), f0.numpy()
    if not np.allclose(fX.numpy(), X.numpy() * a + b, rtol=1e-6, atol=1e-6) or np.any(a == 0):
        raise ImportRefused(
            f"norm module {name} ({type(m).__name__}) is not a per-channel affine map "
            "(x - mean) / std, so it cannot be folded into the first layer"
        )
    return -b / a, 1.0 / a


def map_module(
    module: nn.Module,
    *,
    norm: str | None = None,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
    batch_first: bool | None = None,
) -> TorchMapping:
    """Find the core, head and normalisation of `module` and build rnnedge's form of it (see the module
    docstring). `batch_first`: how forward() takes x; default the core's own (nn.LSTM...) or True (cells)."""
    if not isinstance(module, nn.Module):
        raise ImportRefused(f"expected a torch.nn.Module, got {type(module).__name__}")
    module = module.eval()
    named = dict(module.named_modules())
    if norm is not None and norm not in named:
        raise ImportRefused(f"norm={norm!r}: {type(module).__name__} has no such submodule")
    core, head = find_parts(module, norm)
    cell, I, H, L, w = core_weights(core)
    P = getattr(core[0][1], "proj_size", 0)  # an LSTM's projection: h (and the head's input) has size P
    w.update(head_weights(head, P or H))
    O = w["head.weight"].shape[0]
    if norm is not None:
        if input_mean is not None:
            raise ImportRefused("give either norm= (a module) or input_mean/input_std, not both")
        mean, std = probe_affine(norm, named[norm], I)
    else:
        mean = np.zeros(I) if input_mean is None else np.asarray(input_mean, np.float64).reshape(-1)
        std = np.ones(I) if input_std is None else np.asarray(input_std, np.float64).reshape(-1)
    if mean.shape != (I,) or std.shape != (I,) or not np.all(np.isfinite(std)) or np.any(std == 0):
        raise ImportRefused(
            f"input normalisation needs {I} means and {I} non-zero stds, got {mean.shape[0]} and "
            f"{std.shape[0]}"
        )
    cfg = ModelConfig(cell=cell, input_size=I, hidden_size=H, num_layers=L, output_size=O, proj_size=P)
    model = RecurrentModel(cfg)
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in w.items()}, strict=False
    )
    model.set_normalization(mean, std)
    if batch_first is None:
        batch_first = bool(getattr(core[0][1], "batch_first", True))
    parts = {"core": [n for n, _ in core], "head": [n for n, _ in head], "norm": norm}
    return TorchMapping(cfg, model.eval(), batch_first, parts)


# ----------------------------------------------------------------------------
# the original model, as a reference


def original_runner(module: nn.Module, batch_first: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The user's forward() on one raw sequence (T, I) -> (T, O), or (O,) if it returns the last step only."""

    @torch.no_grad()
    def run(seq: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(seq, np.float32))
        y = module(x[None] if batch_first else x[:, None])
        while isinstance(y, (tuple, list)):  # (output, state)
            y = y[0]
        y = y.detach().float().numpy()
        T = len(seq)
        if y.ndim == 3:
            return y[0] if batch_first else y[:, 0]
        if y.ndim == 2 and y.shape[0] == 1:
            return y[0]  # (1, O): the last step
        if y.ndim == 2 and y.shape[0] == T:
            return y  # (T, O) without a batch axis
        raise ImportRefused(
            f"forward() returned shape {tuple(y.shape)} for a ({T}, {seq.shape[1]}) sequence: "
            "expected (B, T, O), (T, B, O) or (B, O)"
        )

    return run


def preprocessed(run: Callable, mean: np.ndarray, std: np.ndarray) -> Callable:
    """Declared input_mean/input_std: the normalisation the user's pipeline applies BEFORE forward(); the
    bundle takes raw samples, the original is forward((x - mean) / std)."""
    return lambda seq: run(((np.asarray(seq, np.float64) - mean) / std).astype(np.float32))


def check_mapping(mapping: TorchMapping, original: Callable, seqs: list[np.ndarray], name: str) -> float:
    """The mapped model must reproduce the module's own forward(), or nothing is exported."""
    from .reference import run_reference

    worst = 0.0
    for seq in seqs:
        try:
            ref = original(seq)
        except ImportRefused:
            raise
        except Exception as e:
            raise ImportRefused(
                f"{name}.forward() failed on a (1, {len(seq)}, {seq.shape[1]}) input "
                f"({type(e).__name__}: {e}); pass batch_first= if it takes (T, B, I)"
            ) from None
        ours = run_reference(mapping.model, seq)
        ours = ours if ref.ndim == 2 else ours[-1]
        if ours.shape != ref.shape:
            raise ImportRefused(
                f"{name}.forward() gives {ref.shape} where the mapped model gives {ours.shape}"
            )
        worst = max(worst, float(np.abs(ours - ref).max()))
    if worst > MAPPING_ATOL:
        raise ImportRefused(
            f"the mapped model ({' -> '.join(mapping.parts['core'] + mapping.parts['head'])}) does not "
            f"reproduce {name}.forward() (max |error| {worst:.2e}): rnnedge assumes forward() runs the "
            "normalisation, the core and the head in registration order and nothing else (no residuals, "
            "inline activations, or reordering)"
        )
    return worst


# ----------------------------------------------------------------------------
# data for parity, accuracy and calibration


def probe_sequences(I: int, mean, std, n: int = 8, T: int = 50, seed: int = 0) -> list[np.ndarray]:
    """Seeded synthetic raw inputs at the declared input scale (when the user gives no data)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((T, I)) * std + mean).astype(np.float32) for _ in range(n)]


def job_data(data, I: int, task: str, mean, std) -> dict:
    """data: None (synthetic), a dataset name or .npz path, an (N, T, I) array, or a list of (T, I) arrays."""
    if data is None:
        seqs = probe_sequences(I, mean, std)
        return {"eval_seqs": seqs, "calib_seqs": seqs, "data": "synthetic (seeded normal at the input scale)"}
    if isinstance(data, (str, Path)):
        from rnnedge.train.data import load_dataset

        ds = load_dataset(str(data), task)
        if ds.input_size != I:
            raise ImportRefused(f"{data} has {ds.input_size} input channels but the model takes {I}")
        out = {"eval_seqs": ds.test.sequences(), "calib_seqs": ds.train.sequences(), "data": str(data)}
        if task == "classify":
            out["eval_targets"], out["labels"] = list(ds.test.y), ds.labels
        return out
    seqs = [np.asarray(s, np.float32) for s in data]
    if not seqs or any(s.ndim != 2 or s.shape[1] != I for s in seqs):
        raise ImportRefused(f"data must be (N, T, {I}) or a list of (T, {I}) arrays")
    return {"eval_seqs": seqs, "calib_seqs": seqs, "data": f"{len(seqs)} sequences given in Python"}


# ----------------------------------------------------------------------------
# the API


def from_torch(
    module: nn.Module,
    out: str | Path,
    *,
    quant: str = "fp32",
    formats: Sequence[str] = ("native",),
    task: str = "classify",
    labels: Sequence[str] | None = None,
    data=None,
    norm: str | None = None,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
    batch_first: bool | None = None,
    options: dict | None = None,
    force: bool = False,
    source: dict | None = None,
    log=print,
) -> Path:
    """Export a live PyTorch recurrent model to a verified rnnedge bundle at `out`; returns its path.

        import rnnedge.export as rx
        rx.from_torch(my_model, "bundles/mine", quant="int8", data="basic_motions", labels=[...])

    task: classify (decision at the last step) | regress (every step) | forecast (next sample).
    data: parity / accuracy / calibration sequences (a dataset name, a .npz path, (N, T, I) or a list of
    (T, I)); default: seeded synthetic sequences (parity only). The bundle is checked against the
    quantised reference AND against `module` itself (parity["original"]; gating for fp32). Raises
    ImportRefused (an ExportError) naming the module that cannot be mapped."""
    mapping = map_module(
        module, norm=norm, input_mean=input_mean, input_std=input_std, batch_first=batch_first
    )
    cfg, m = mapping.cfg, mapping.model
    d = job_data(data, cfg.input_size, task, m.in_mean.double().numpy(), m.in_std.double().numpy())
    labels = list(labels) if labels is not None else d.get("labels")
    if task == "classify" and labels is not None and len(labels) != cfg.output_size:
        raise ImportRefused(f"{len(labels)} labels for {cfg.output_size} outputs")
    if task == "forecast" and cfg.output_size != cfg.input_size:
        raise ImportRefused(
            f"forecast needs output size == input size, got {cfg.output_size} != {cfg.input_size}"
        )
    original = original_runner(module, mapping.batch_first)
    if norm is None and (input_mean is not None or input_std is not None):
        original = preprocessed(original, m.in_mean.double().numpy(), m.in_std.double().numpy())
    name = type(module).__name__
    err = check_mapping(mapping, original, d["eval_seqs"][:4], name)
    core, head = ", ".join(mapping.parts["core"]), ", ".join(mapping.parts["head"]) or "none"
    log(
        f"  mapped {name}: {cfg.cell} {cfg.num_layers}x{cfg.hidden_size}, input {cfg.input_size} -> "
        f"{cfg.output_size} (core {core}; head {head}; max |mapped - forward()| {err:.1e})"
    )
    readout = "last" if task == "classify" else "every_step"
    job = ExportJob(
        cfg=cfg,
        model=m,
        scheme=quant,
        task={"kind": task, "labels": labels, "readout": readout},
        eval_seqs=d["eval_seqs"],
        eval_targets=d.get("eval_targets"),
        calib_seqs=d["calib_seqs"],
        options=options or {},
        source={
            "kind": "torch",
            "module": f"{type(module).__module__}.{name}",
            **mapping.parts,
            "data": d["data"],
            **(source or {}),
        },
        original=original,
    )
    return export(job, list(formats), out, force=force, log=log)


# ----------------------------------------------------------------------------
# the saved form: state_dict + declared architecture


ARCH_TYPES = {
    "LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell,
    "RNNCell": nn.RNNCell, "Linear": nn.Linear, "Dropout": nn.Dropout, "Identity": nn.Identity,
    "ReLU": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "GELU": nn.GELU,
}  # fmt: skip


class ArchModel(nn.Module):
    """The declared modules in order, with the forward() the declaration means: core, then head."""

    def __init__(self, spec: list[dict]):
        super().__init__()
        self.order = []
        for entry in spec:
            entry = dict(entry)
            name, kind = str(entry.pop("name", "")), entry.pop("type", None)
            if kind not in ARCH_TYPES:
                raise ImportRefused(
                    f"arch module {name!r}: unknown type {kind!r} (known: {', '.join(ARCH_TYPES)})"
                )
            if not name or any(not p.isidentifier() and not p.isdigit() for p in name.split(".")):
                raise ImportRefused(f"arch module {name!r}: a name like 'lstm' or 'head.0' is needed")
            try:
                m = ARCH_TYPES[kind](**entry)
            except TypeError as e:
                raise ImportRefused(f"arch module {name!r} ({kind}): {e}") from None
            parent = self
            *path, leaf = name.split(".")
            for p in path:
                if not hasattr(parent, p):
                    parent.add_module(p, nn.Module())
                parent = getattr(parent, p)
            parent.add_module(leaf, m)
            self.order.append(m)

    def forward(self, x):
        """x as the core takes it ((B, T, I) for cells) -> (B, T, O)."""
        cells = [m for m in self.order if isinstance(m, tuple(CELL_MODULES))]
        for m in self.order:
            if isinstance(m, tuple(CORES)):
                x = m(x)[0]
            elif cells and m is cells[0]:
                x = run_cells(cells, x)
            elif not isinstance(m, tuple(CELL_MODULES)):
                x = m(x)
        return x


def run_cells(cells: list, x: torch.Tensor) -> torch.Tensor:
    """A stack of RNNCell/GRUCell/LSTMCell over x (B, T, I) from a zero state -> (B, T, H)."""
    state = [None] * len(cells)
    ys = []
    for t in range(x.shape[1]):
        v = x[:, t]
        for k, c in enumerate(cells):
            state[k] = c(v, state[k])
            v = state[k][0] if isinstance(c, nn.LSTMCell) else state[k]
        ys.append(v)
    return torch.stack(ys, 1)


def read_arch(arch: str | Path | dict) -> dict:
    """--arch: a JSON file, inline JSON, or a dict."""
    if isinstance(arch, dict):
        return arch
    text = str(arch)
    try:
        obj = json.loads(text) if text.lstrip().startswith("{") else json.loads(Path(text).read_text())
    except (OSError, ValueError) as e:
        raise ImportRefused(f"cannot read the architecture {text[:60]!r}: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("modules"), list):
        raise ImportRefused('the architecture must be {"modules": [{"name": ..., "type": ...}, ...]}')
    return obj


def read_state_dict(path: str | Path) -> dict:
    """A state_dict file: .safetensors, or a torch.save'd dict read with weights_only=True (no user code)."""
    path = Path(path)
    if not path.is_file():
        raise ImportRefused(f"no state_dict file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ImportRefused(
            f"cannot read {path} as a state_dict (.pt with tensors only, or .safetensors): "
            f"{str(e).splitlines()[0][:200]}"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ImportRefused(f"{path} is not a state_dict (a dict of tensors)")
    return sd


def arch_module(state_dict: dict, arch: str | Path | dict) -> tuple[ArchModel, dict]:
    """state_dict + declared architecture -> (a module with those weights, normalisation kwargs)."""
    spec = read_arch(arch)
    model = ArchModel(spec["modules"])
    sd = dict(state_dict)
    norm = {}
    for key in ("input_mean", "input_std"):
        v = spec.get(key)
        if isinstance(v, str):
            if v not in sd:
                raise ImportRefused(f"{key}: no tensor {v!r} in the state_dict")
            v = sd.pop(v)
        if v is not None:
            norm[key] = np.asarray(v, np.float64).reshape(-1)
    missing, unexpected = [], []
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise ImportRefused(
            "the state_dict does not fit the architecture: "
            + (f"missing {', '.join(missing[:6])}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"unexpected {', '.join(unexpected[:6])}" if unexpected else "")
        )
    bad = [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
    if bad:
        k = bad[0]
        raise ImportRefused(
            f"{k}: the state_dict has shape {tuple(sd[k].shape)}, the architecture {tuple(own[k].shape)}"
        )
    model.load_state_dict(sd)
    return model.eval(), norm


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
