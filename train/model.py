"""The PyTorch model: raw samples -> normalise -> nn.RNN/LSTM/GRU (stacked) -> Linear head -> de-normalise.

torch's own recurrent modules are the numerics spec (LSTM gates i,f,g,o; GRU r,z,n with the reset gate on
W_hn h + b_hn). Normalisation statistics are buffers, so they travel in the checkpoint and the exporter can
fold them into the first layer and the head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from rnnedge.runtime.vocab import CELLS
from torch import nn


@dataclass
class ModelConfig:
    cell: str = "lstm"  # rnn_tanh | rnn_relu | lstm | gru
    input_size: int = 6
    hidden_size: int = 32
    num_layers: int = 1  # 1-3 stacked
    output_size: int = 4
    dropout: float = 0.0  # between stacked layers (training only)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if not 1 <= self.num_layers <= 3:
            raise ValueError(f"num_layers must be 1-3, got {self.num_layers}")
        for k in ("input_size", "hidden_size", "output_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1")

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
        return nn.LSTM(**kw)
    if cfg.cell == "gru":
        return nn.GRU(**kw)
    return nn.RNN(nonlinearity=cfg.cell.split("_")[1], **kw)


class RecurrentModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.rnn = make_rnn(cfg)
        self.head = nn.Linear(cfg.hidden_size, cfg.output_size)
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
    """torch state (h (L,B,H) or (h, c)) -> {h_in_0: (B,H), c_in_0: ...} in the exports' naming."""
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
