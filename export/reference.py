"""The PyTorch reference a bundle is checked against.

fold_normalization: the trained model's normalisation goes into layer 0 and the head, so every backend
takes raw samples and returns raw outputs:
    W_ih' = W_ih / s_in            b_ih' = b_ih - W_ih (m_in / s_in)
    W_y'  = s_out W_y              b_y'  = s_out b_y + m_out
reference_model: a RecurrentModel with identity normalisation and the scheme's effective weights.
"""

from __future__ import annotations

import numpy as np
import torch
from rnnedge.train.model import ModelConfig, RecurrentModel

from . import quantize


def fold_normalization(model: RecurrentModel) -> dict[str, np.ndarray]:
    """Trained model -> float32 weights in PyTorch names/layouts with normalisation folded in."""
    sd = {k: v.detach().double().cpu().numpy() for k, v in model.state_dict().items()}
    m_in, s_in = sd.pop("in_mean"), sd.pop("in_std")
    m_out, s_out = sd.pop("out_mean"), sd.pop("out_std")
    w_ih = sd["rnn.weight_ih_l0"]
    sd["rnn.weight_ih_l0"] = w_ih / s_in[None, :]
    sd["rnn.bias_ih_l0"] = sd["rnn.bias_ih_l0"] - w_ih @ (m_in / s_in)
    sd["head.weight"] = sd["head.weight"] * s_out[:, None]
    sd["head.bias"] = sd["head.bias"] * s_out + m_out
    return {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}


def model_from_weights(cfg: ModelConfig, weights: dict[str, np.ndarray]) -> RecurrentModel:
    """A RecurrentModel (identity normalisation, eval mode) computing with the given float weights."""
    m = RecurrentModel(ModelConfig(**{**cfg.to_dict(), "dropout": 0.0}))
    sd = m.state_dict()
    for name, w in weights.items():
        if name not in sd:
            raise KeyError(f"unexpected weight {name!r} for {cfg}")
        sd[name] = torch.from_numpy(np.asarray(w, np.float32).copy())
    m.load_state_dict(sd)
    return m.eval()


def reference_model(cfg: ModelConfig, folded: dict[str, np.ndarray], scheme: str) -> RecurrentModel:
    """The quantised reference for a weight-only scheme (fp32, fp16, int8; dynamic/static: weights part)."""
    return model_from_weights(cfg, quantize.effective(folded, scheme))


@torch.no_grad()
def run_reference(model: RecurrentModel, seq: np.ndarray) -> np.ndarray:
    """Whole sequence (T, I) -> (T, O) in float32 through PyTorch."""
    y, _ = model(torch.from_numpy(np.asarray(seq, np.float32))[None])
    return y[0].numpy()
