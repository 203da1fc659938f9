"""Numpy kernels for one step of each recurrent cell, updating state in place.

Each layer's weights are fused once at load time into one matrix W (G*H, I+H+1) that multiplies the layer's
buffer xh = [x; h; 1], so a step is one matmul plus a few in-place ufuncs and no allocation:

    LSTM  rows [i, f, o, g] (PyTorch's i,f,g,o reordered so the three sigmoid gates are contiguous);
          with proj_size P (h is (P,), c (H,)): h = W_hr (o * tanh(c)), W_hr (P, H) a second matrix
    GRU   rows [r, z, n_x, n_h]  with n_x = W_in x + b_in and n_h = W_hn h + b_hn kept apart, because
          PyTorch's reset gate multiplies (W_hn h + b_hn), not h
    GRU_LBR0 (ONNX GRU linear_before_reset=0, Keras reset_after=False): the reset gate multiplies h BEFORE
          the hidden product, n = tanh(W_in x + b_in + W_hn (r*h) + b_hn): rows [r, z, n_x] with b_hn in
          n_x, and W_hn (H, H) kept as a second matrix applied to r*h
    RNN   rows [a]               h = tanh(a) or relu(a)

Sigmoid rows are pre-scaled by 0.5 (exact in binary floating point) so that one tanh over all gates does the
work: sigmoid(a) = 0.5 * tanh(a / 2) + 0.5.

int8-dynamic / int8-static (`Q8Model`, at the end) follow export/quantize.py's definition product by product;
they are the numerics reference of the compiled kernel's int8 path, not a fast path.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------
# weight fusion (once per model)


def fuse_layer(cell: str, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """PyTorch-layout weights of one layer -> fused W (rows, I+P+1) as described above (P = the size of h:
    hidden_size, or an LSTM's proj_size)."""
    H = w_hh.shape[0] // 4 if cell == "lstm" else w_hh.shape[1]
    I = w_ih.shape[1]
    if cell == "lstm":
        order = np.r_[0 : 2 * H, 3 * H : 4 * H, 2 * H : 3 * H]  # i,f,g,o -> i,f,o,g
        W = np.concatenate([w_ih, w_hh, (b_ih + b_hh)[:, None]], axis=1)[order]
        W[: 3 * H] *= 0.5
    elif cell == "gru_lbr0":  # rows [r, z, n_x; W_hn]: LayerState splits off W_hn (applied to r*h)
        W = np.zeros((4 * H, I + H + 1), np.float32)
        W[: 2 * H] = 0.5 * np.concatenate([w_ih[: 2 * H], w_hh[: 2 * H], (b_ih + b_hh)[: 2 * H, None]], 1)
        W[2 * H : 3 * H, :I] = w_ih[2 * H :]
        W[2 * H : 3 * H, -1] = b_ih[2 * H :] + b_hh[2 * H :]
        W[3 * H :, I : I + H] = w_hh[2 * H :]
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
    """Buffers of one layer for one stream. `x` and `h` are views into xh = [x; h; 1]. W_hr (P, H): an
    LSTM's projection (h is (P,)), or None."""

    def __init__(self, cell: str, W: np.ndarray, input_size: int, hidden_size: int, W_hr=None):
        I, H = input_size, hidden_size
        P = H if W_hr is None else W_hr.shape[0]  # the size of h
        if cell == "gru_lbr0":
            W, self.W_hn = np.ascontiguousarray(W[: 3 * H]), np.ascontiguousarray(W[3 * H :, I : I + H])
        self.W = W  # (rows, I+P+1), shared by every stream
        self.W_hr = W_hr
        self.xh = np.zeros(I + P + 1, np.float32)  # (I+P+1,)
        self.xh[-1] = 1.0
        self.x = self.xh[:I]
        self.h = self.xh[I : I + P]
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
            self.step = self._lstm if W_hr is None else self._lstm_proj
        elif cell == "gru":
            self.sig, self.r, self.z, self.nx, self.nh = (
                g[: 2 * H],
                g[:H],
                g[H : 2 * H],
                g[2 * H : 3 * H],
                g[3 * H :],
            )
            self.step = self._gru
        elif cell == "gru_lbr0":
            self.sig, self.r, self.z, self.nx = g[: 2 * H], g[:H], g[H : 2 * H], g[2 * H :]
            self.nh = np.empty(H, np.float32)
            self.step = self._gru_lbr0
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

    def _lstm_c(self):
        np.dot(self.W, self.xh, out=self.g)  # W (4H, I+P+1) @ xh -> g (4H,)
        np.tanh(self.g, out=self.g)
        self.sig *= 0.5
        self.sig += 0.5  # i, f, o = sigmoid
        self.c *= self.f
        np.multiply(self.i, self.gg, out=self.tmp)
        self.c += self.tmp  # c = f*c + i*g
        np.tanh(self.c, out=self.tmp)  # tanh(c) (H,)

    def _lstm(self):
        self._lstm_c()
        np.multiply(self.o, self.tmp, out=self.h)  # h = o*tanh(c)

    def _lstm_proj(self):
        self._lstm_c()
        self.tmp *= self.o  # o*tanh(c) (H,)
        np.dot(self.W_hr, self.tmp, out=self.h)  # h = W_hr (o*tanh(c)) (P,)

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

    def _gru_lbr0(self):
        np.dot(self.W, self.xh, out=self.g)  # W (3H, I+H+1) @ xh -> [r, z, n_x]
        np.tanh(self.sig, out=self.sig)
        self.sig *= 0.5
        self.sig += 0.5  # r, z = sigmoid
        np.multiply(self.r, self.h, out=self.tmp)
        np.dot(self.W_hn, self.tmp, out=self.nh)  # W_hn (r*h)
        self.nx += self.nh
        np.tanh(self.nx, out=self.nx)  # n = tanh(W_in x + b_in + b_hn + W_hn (r*h))
        np.subtract(self.h, self.nx, out=self.tmp)
        self.tmp *= self.z
        np.add(self.nx, self.tmp, out=self.h)  # h = (1-z)*n + z*h

    def _rnn_tanh(self):
        np.dot(self.W, self.xh, out=self.g)
        np.tanh(self.g, out=self.h)

    def _rnn_relu(self):
        np.dot(self.W, self.xh, out=self.g)
        np.maximum(self.g, 0.0, out=self.h)


# ----------------------------------------------------------------------------
# int8-dynamic / int8-static: activation-quantised products (definition: export/quantize.py)


def q8_product(v, w_q, w_scale, bias, scale=None) -> np.ndarray:
    """out = float(W q) * (s_w * s) + b, q = rint(clip(v * inv, -127, 127)); scale None = dynamic
    (s = max|v| / 127 this step, inv = 127 / max|v|), else static (s fixed, inv = 1 / s). float32; the
    integer product is exact (int64 here, int32 in the kernels)."""
    v = np.asarray(v, np.float32)
    if scale is None:
        amax = np.float32(np.abs(v).max())
        s = amax / np.float32(127.0)
        inv = np.float32(127.0) / amax if amax > 0 else np.float32(0.0)
    else:
        s = np.float32(scale)
        inv = np.float32(1.0) / s
    q = np.rint(np.clip(v * inv, -127, 127)).astype(np.int64)
    acc = (w_q @ q).astype(np.float32)  # w_q int64: exact
    return acc * (w_scale * s) + bias


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-a.astype(np.float64)))).astype(np.float32)


def gate_step(cell: str, gx, gh, h, c, inner=None):
    """PyTorch's gate equations on gx = W_ih x + b_ih and gh = W_hh h + b_hh -> new (h, c). `inner` is the
    product inside the cell, v -> W v + b: an LSTM's projection W_hr (o*tanh(c)) (None: no projection), or
    gru_lbr0's W_hn (r*h) + b_hn (gh then holds the r, z rows only)."""
    if cell == "lstm":  # i, f, g, o
        H = len(gx) // 4
        a = gx + gh
        i, f, g, o = _sigmoid(a[:H]), _sigmoid(a[H : 2 * H]), np.tanh(a[2 * H : 3 * H]), _sigmoid(a[3 * H :])
        c = f * c + i * g
        m = o * np.tanh(c)
        return (m if inner is None else inner(m)), c
    H = len(h)
    if cell in ("gru", "gru_lbr0"):  # r, z, n
        r, z = _sigmoid(gx[:H] + gh[:H]), _sigmoid(gx[H : 2 * H] + gh[H : 2 * H])
        hn = inner(r * h) if cell == "gru_lbr0" else r * gh[2 * H :]  # W_hn (r h) + b_hn | r (W_hn h + b_hn)
        n = np.tanh(gx[2 * H :] + hn)
        return (1 - z) * n + z * h, c
    a = gx + gh
    return (np.tanh(a) if cell == "rnn_tanh" else np.maximum(a, 0)), c


def activation_names(num_layers: int, cell: str = "lstm", proj_size: int = 0) -> list[str]:
    """The product inputs of a model, each with one int8-static scale: x, then each layer's h, then the
    products inside a cell: an LSTM projection's o*tanh(c) (`hr_k`), gru_lbr0's r*h (`rh_k`)."""
    inner = "hr" if proj_size else "rh" if cell == "gru_lbr0" else None
    return (
        ["x"]
        + [f"h_{k}" for k in range(num_layers)]
        + ([f"{inner}_{k}" for k in range(num_layers)] if inner else [])
    )


class Q8Model:
    """int8 weights (`name` int8 (R, K) + `name.scale` (R,)) as stored; scales: int8-static's calibrated
    {x, h_0, ..., hr_0 | rh_0, ...}, or None for int8-dynamic. An LSTM with proj_size has `rnn.weight_hr_l{k}`
    (P, H, no bias); gru_lbr0's W_hh rows split into r, z (applied to h) and n (applied to r*h): per-row
    scales make the split exact."""

    def __init__(self, cell: str, stored: dict, num_layers: int, scales: dict | None):
        self.cell, self.L = cell, num_layers
        self.P = stored["rnn.weight_hh_l0"].shape[1]  # the size of h
        self.H = stored["rnn.weight_hh_l0"].shape[0] // 4 if cell == "lstm" else self.P  # the size of c
        self.proj = "rnn.weight_hr_l0" in stored

        def mat(name, rows=slice(None)):
            b = stored.get(name.replace("weight", "bias"))
            w = stored[name][rows]
            return (
                w.astype(np.int64),
                stored[name + ".scale"][rows].astype(np.float32),
                np.zeros(len(w), np.float32) if b is None else b[rows].astype(np.float32),
            )

        H2 = slice(0, 2 * self.H) if cell == "gru_lbr0" else slice(None)
        self.ih = [mat(f"rnn.weight_ih_l{k}") for k in range(num_layers)]
        self.hh = [mat(f"rnn.weight_hh_l{k}", H2) for k in range(num_layers)]
        self.inner = [None] * num_layers  # the in-cell product and its scale's name
        if self.proj:
            self.inner = [(mat(f"rnn.weight_hr_l{k}"), f"hr_{k}") for k in range(num_layers)]
        elif cell == "gru_lbr0":
            self.inner = [
                (mat(f"rnn.weight_hh_l{k}", slice(2 * self.H, None)), f"rh_{k}") for k in range(num_layers)
            ]
        self.head = mat("head.weight")
        self.scales = scales or dict.fromkeys(activation_names(num_layers, cell, self.proj))

    def zero_state(self) -> tuple[list, list]:
        return [np.zeros(self.P, np.float32) for _ in range(self.L)], [
            np.zeros(self.H, np.float32) for _ in range(self.L)
        ]

    def step(self, x, h: list, c: list) -> np.ndarray:
        """One sample: updates h[k] (P,), c[k] (H,) and returns y (O,)."""
        s = self.scales
        v, v_scale = np.asarray(x, np.float32), s["x"]
        for k in range(self.L):
            gx = q8_product(v, *self.ih[k], v_scale)
            gh = q8_product(h[k], *self.hh[k], s[f"h_{k}"])
            inner = self.inner[k] and (lambda u, m=self.inner[k]: q8_product(u, *m[0], s[m[1]]))
            h[k], c[k] = gate_step(self.cell, gx, gh, h[k], c[k], inner)
            v, v_scale = h[k], s[f"h_{k}"]
        return q8_product(v, *self.head, v_scale)
