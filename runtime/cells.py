"""Numpy kernels for one step of each recurrent cell, updating state in place.

Each layer's weights are fused once at load time into one matrix W (G*H, I+H+1) that multiplies the layer's
buffer xh = [x; h; 1], so a step is one matmul plus a few in-place ufuncs and no allocation:

    LSTM  rows [i, f, o, g] (PyTorch's i,f,g,o reordered so the three sigmoid gates are contiguous)
    GRU   rows [r, z, n_x, n_h]  with n_x = W_in x + b_in and n_h = W_hn h + b_hn kept apart, because
          PyTorch's reset gate multiplies (W_hn h + b_hn), not h
    RNN   rows [a]               h = tanh(a) or relu(a)

Sigmoid rows are pre-scaled by 0.5 (exact in binary floating point) so that one tanh over all gates does the
work: sigmoid(a) = 0.5 * tanh(a / 2) + 0.5.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------
# weight fusion (once per model)


def fuse_layer(cell: str, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """PyTorch-layout weights of one layer -> fused W (rows, I+H+1) as described above."""
    H = w_hh.shape[1]
    I = w_ih.shape[1]
    if cell == "lstm":
        order = np.r_[0 : 2 * H, 3 * H : 4 * H, 2 * H : 3 * H]  # i,f,g,o -> i,f,o,g
        W = np.concatenate([w_ih, w_hh, (b_ih + b_hh)[:, None]], axis=1)[order]
        W[: 3 * H] *= 0.5
    elif cell == "gru":
        W = np.zeros((4 * H, I + H + 1), np.float32)
        W[: 2 * H] = 0.5 * np.concatenate([w_ih[: 2 * H], w_hh[: 2 * H], (b_ih + b_hh)[: 2 * H, None]], 1)
        W[2 * H : 3 * H, :I] = w_ih[2 * H :]
        W[2 * H : 3 * H, -1] = b_ih[2 * H :]
        W[3 * H :, I : I + H] = w_hh[2 * H :]
        W[3 * H :, -1] = b_hh[2 * H :]
    else:
        W = np.concatenate([w_ih, w_hh, (b_ih + b_hh)[:, None]], axis=1)
    return np.ascontiguousarray(W, dtype=np.float32)


def fuse_head(w, b) -> np.ndarray:
    """Linear head (O, H) + (O,) -> (O, H+1) that multiplies [h; 1]."""
    return np.ascontiguousarray(np.concatenate([w, b[:, None]], axis=1), dtype=np.float32)


# ----------------------------------------------------------------------------
# per-stream buffers of one layer, with the step kernel


class LayerState:
    """Buffers of one layer for one stream. `x` and `h` are views into xh = [x; h; 1]."""

    def __init__(self, cell: str, W: np.ndarray, input_size: int, hidden_size: int):
        I, H = input_size, hidden_size
        self.W = W  # (rows, I+H+1), shared by every stream
        self.xh = np.zeros(I + H + 1, np.float32)  # (I+H+1,)
        self.xh[-1] = 1.0
        self.x = self.xh[:I]
        self.h = self.xh[I : I + H]
        self.h1 = self.xh[I:]  # [h; 1]: what the next layer copies from and the head multiplies
        self.g = np.empty(W.shape[0], np.float32)  # (rows,)
        self.tmp = np.empty(H, np.float32)
        self.c = np.zeros(H, np.float32) if cell == "lstm" else None
        g = self.g
        if cell == "lstm":
            self.sig, self.i, self.f, self.o, self.gg = (
                g[: 3 * H],
                g[:H],
                g[H : 2 * H],
                g[2 * H : 3 * H],
                g[3 * H :],
            )
            self.step = self._lstm
        elif cell == "gru":
            self.sig, self.r, self.z, self.nx, self.nh = (
                g[: 2 * H],
                g[:H],
                g[H : 2 * H],
                g[2 * H : 3 * H],
                g[3 * H :],
            )
            self.step = self._gru
        elif cell == "rnn_tanh":
            self.step = self._rnn_tanh
        elif cell == "rnn_relu":
            self.step = self._rnn_relu
        else:
            raise ValueError(f"unknown cell {cell!r}")

    def reset(self):
        self.h[:] = 0.0
        if self.c is not None:
            self.c[:] = 0.0

    def _lstm(self):
        np.dot(self.W, self.xh, out=self.g)  # W (4H, I+H+1) @ xh -> g (4H,)
        np.tanh(self.g, out=self.g)
        self.sig *= 0.5
        self.sig += 0.5  # i, f, o = sigmoid
        self.c *= self.f
        np.multiply(self.i, self.gg, out=self.tmp)
        self.c += self.tmp  # c = f*c + i*g
        np.tanh(self.c, out=self.tmp)
        np.multiply(self.o, self.tmp, out=self.h)  # h = o*tanh(c)

    def _gru(self):
        np.dot(self.W, self.xh, out=self.g)  # W (4H, I+H+1) @ xh -> [r, z, n_x, n_h]
        np.tanh(self.sig, out=self.sig)
        self.sig *= 0.5
        self.sig += 0.5  # r, z = sigmoid
        self.nh *= self.r
        self.nx += self.nh
        np.tanh(self.nx, out=self.nx)  # n = tanh(W_in x + b_in + r*(W_hn h + b_hn))
        np.subtract(self.h, self.nx, out=self.tmp)
        self.tmp *= self.z
        np.add(self.nx, self.tmp, out=self.h)  # h = n + z*(h - n) = (1-z)*n + z*h

    def _rnn_tanh(self):
        np.dot(self.W, self.xh, out=self.g)
        np.tanh(self.g, out=self.h)

    def _rnn_relu(self):
        np.dot(self.W, self.xh, out=self.g)
        np.maximum(self.g, 0.0, out=self.h)
