"""The PyTorch model: raw samples -> normalise -> nn.RNN/LSTM/GRU (stacked) -> Linear head -> de-normalise.

torch's own recurrent modules are the numerics spec (LSTM gates i,f,g,o; GRU r,z,n with the reset gate on
W_hn h + b_hn). Normalisation statistics are buffers, so they travel in the checkpoint and the exporter can
fold them into the first layer and the head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from rnnedge.runtime.vocab import CELLS, IMPORTED_CELLS
from torch import nn


@dataclass
class ModelConfig:
    cell: str = "lstm"  # rnn_tanh | rnn_relu | lstm | gru | gru_lbr0
    input_size: int = 6
    hidden_size: int = 32
    num_layers: int = 1  # 1-3 stacked
    output_size: int = 4
    dropout: float = 0.0  # between stacked layers (training only)
    proj_size: int = 0  # LSTM only, PyTorch's proj_size: h = W_hr (o * tanh(c)), h (P,), c (H,); 0 = none

    def __post_init__(self):
        if self.cell not in CELLS + IMPORTED_CELLS:
            raise ValueError(f"cell must be one of {CELLS + IMPORTED_CELLS}, got {self.cell!r}")
        if not 1 <= self.num_layers <= 3:
            raise ValueError(f"num_layers must be 1-3, got {self.num_layers}")
        for k in ("input_size", "hidden_size", "output_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1")
        if self.proj_size and (self.cell != "lstm" or not 0 < self.proj_size < self.hidden_size):
            raise ValueError(
                f"proj_size needs cell lstm and 0 < proj_size < hidden_size, got {self.proj_size}"
            )

    @property
    def state_size(self) -> int:
        """The size of h: what the next layer and the head take (proj_size, or hidden_size)."""
        return self.proj_size or self.hidden_size

    def to_dict(self) -> dict:
        return asdict(self)


def make_rnn(cfg: ModelConfig) -> nn.Module:
    kw = dict(
        input_size=cfg.input_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        batch_first=True,
        dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
    )
    if cfg.cell == "lstm":
        return nn.LSTM(proj_size=cfg.proj_size, **kw)
    if cfg.cell == "gru":
        return nn.GRU(**kw)
    if cfg.cell == "gru_lbr0":
        return GRULbr0(**kw)
    return nn.RNN(nonlinearity=cfg.cell.split("_")[1], **kw)


class GRULbr0(nn.Module):
    """The other GRU (ONNX GRU with linear_before_reset=0, its default; Keras reset_after=False): the reset
    gate multiplies h before the hidden product, n = tanh(W_in x + b_in + W_hn (r * h) + b_hn). Same
    parameter names, layouts (gates r, z, n) and call as a batch_first nn.GRU. A plain loop: the reference
    for imported models, not for training speed."""

    def __init__(self, input_size, hidden_size, num_layers=1, batch_first=True, dropout=0.0):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        bound = hidden_size**-0.5
        for k in range(num_layers):
            for kind, cols in (("ih", input_size if k == 0 else hidden_size), ("hh", hidden_size)):
                w = nn.Parameter(torch.empty(3 * hidden_size, cols).uniform_(-bound, bound))
                b = nn.Parameter(torch.empty(3 * hidden_size).uniform_(-bound, bound))
                self.register_parameter(f"weight_{kind}_l{k}", w)
                self.register_parameter(f"bias_{kind}_l{k}", b)

    def forward(self, x: torch.Tensor, h=None):
        """x (B, T, I), h (L, B, H) or None -> (B, T, H), (L, B, H)."""
        H = self.hidden_size
        h = list(h) if h is not None else [x.new_zeros(x.shape[0], H)] * self.num_layers
        ys = []
        for t in range(x.shape[1]):
            v = x[:, t]
            for k in range(self.num_layers):
                gx = v @ getattr(self, f"weight_ih_l{k}").T + getattr(self, f"bias_ih_l{k}")
                w_hh, b_hh = getattr(self, f"weight_hh_l{k}"), getattr(self, f"bias_hh_l{k}")
                rz = torch.sigmoid(gx[:, : 2 * H] + h[k] @ w_hh[: 2 * H].T + b_hh[: 2 * H])
                r, z = rz[:, :H], rz[:, H:]
                n = torch.tanh(gx[:, 2 * H :] + (r * h[k]) @ w_hh[2 * H :].T + b_hh[2 * H :])
                h[k] = v = (1 - z) * n + z * h[k]
            ys.append(v)
        return torch.stack(ys, 1), torch.stack(h)


class RecurrentModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.rnn = make_rnn(cfg)
        self.head = nn.Linear(cfg.state_size, cfg.output_size)
        self.register_buffer("in_mean", torch.zeros(cfg.input_size))
        self.register_buffer("in_std", torch.ones(cfg.input_size))
        self.register_buffer("out_mean", torch.zeros(cfg.output_size))
        self.register_buffer("out_std", torch.ones(cfg.output_size))

    def forward(self, x: torch.Tensor, state=None):
        """x (B, T, I) raw -> y (B, T, O) raw, next state (h (L, B, H) or (h, c) for LSTM)."""
        z = (x - self.in_mean) / self.in_std
        seq, state = self.rnn(z, state)  # (B, T, H)
        y = self.head(seq) * self.out_std + self.out_mean  # (B, T, O)
        return y, state

    def set_normalization(self, in_mean, in_std, out_mean=None, out_std=None):
        self.in_mean.copy_(torch.as_tensor(in_mean, dtype=torch.float32))
        self.in_std.copy_(torch.as_tensor(in_std, dtype=torch.float32))
        if out_mean is not None:
            self.out_mean.copy_(torch.as_tensor(out_mean, dtype=torch.float32))
            self.out_std.copy_(torch.as_tensor(out_std, dtype=torch.float32))


def state_to_named(cfg: ModelConfig, state) -> dict[str, torch.Tensor]:
    """torch state (h (L,B,P|H) or (h, c)) -> {h_in_0: (B,P|H), c_in_0: (B,H)} in the exports' naming."""
    h, c = state if cfg.cell == "lstm" else (state, None)
    out = {}
    for k in range(cfg.num_layers):
        out[f"h_in_{k}"] = h[k]
        if c is not None:
            out[f"c_in_{k}"] = c[k]
    return out


def named_to_state(cfg: ModelConfig, named: dict):
    """{h_in_0: (B,H), ...} -> torch state."""
    h = torch.stack([torch.as_tensor(named[f"h_in_{k}"]) for k in range(cfg.num_layers)])
    if cfg.cell != "lstm":
        return h
    c = torch.stack([torch.as_tensor(named[f"c_in_{k}"]) for k in range(cfg.num_layers)])
    return h, c
