/* rnnedge.h - the compiled streaming core: one model (read-only, shared), any number of streams.
 *
 *   re_model *m = re_model_new(&desc, &err);     // weights in PyTorch layout, packed once for this CPU
 *   re_stream *s = re_stream_new(m);             // its own state and scratch buffers
 *   re_step(s, x, y);                            // x (I,) -> y (O,), state updated in place
 *   re_reset(s); re_state(s, layer, kind)        // pointer to h or c of one layer (H,)
 *   re_step_many(m, streams, n, X, Y);           // n streams, one matrix-matrix product per layer
 *
 * Numerics (PyTorch's gate conventions; see export/quantize.py for the quantised schemes):
 *   gx = W_ih x + b_ih        gh = W_hh h + b_hh                  (each (G,), G = gates * H)
 *   LSTM  i,f,g,o = split(gx + gh): c = s(f) c + s(i) tanh(g); h = s(o) tanh(c)
 *         with proj_size P (PyTorch's): h = W_hr (s(o) tanh(c)), h (P,), c (H,); W_hh (4H, P), head (O, P)
 *   GRU   r,z,n: r = s(gx_r + gh_r), z = s(gx_z + gh_z), n = tanh(gx_n + r gh_n); h = (1 - z) n + z h
 *   GRU_LBR0 (ONNX linear_before_reset=0): r, z as GRU, n = tanh(gx_n + W_hn (r h) + b_hn)
 *   RNN   h = tanh(gx + gh) | relu(gx + gh)
 *   y = W_y h_last + b_y
 * int8 schemes: weights int8 per output row (scale s_w[r]); each product's input vector v is quantised to
 * int8 with one scale s (int8-dynamic: s = max|v| / 127 each step; int8-static: calibrated, fixed), the
 * product is exact in int32, and out[r] = acc[r] * (s_w[r] * s) + b[r]. The products inside a cell (W_hr's
 * input o tanh(c), GRU_LBR0's r h) are quantised the same way, int8-static with inner_scale[layer]. int8 weight-only (RE_Q8_WEIGHT): the
 * same int8 weights with float activations, out[r] = (sum_k W[r, k] v[k]) * s_w[r] + b[r] in float32.
 *
 * No allocation per step, no global mutable state (the CPU dispatch is chosen once, read-only after).
 * C11, no third-party code, no Python headers.
 */
#ifndef RNNEDGE_H
#define RNNEDGE_H

#include <stddef.h>
#include <stdint.h>

#define RE_MAX_LAYERS 8

enum re_cell { RE_RNN_TANH = 0, RE_RNN_RELU = 1, RE_LSTM = 2, RE_GRU = 3, RE_GRU_LBR0 = 4 };
enum re_quant { RE_F32 = 0, RE_Q8_DYNAMIC = 1, RE_Q8_STATIC = 2, RE_Q8_WEIGHT = 3 };

/* One weight matrix as stored in a bundle: float32 (rows, cols), or int8 (rows, cols) + scale (rows,). */
typedef struct {
    const float *f32;     /* float weights, or NULL */
    const int8_t *q8;     /* int8 weights, or NULL */
    const float *scale;   /* (rows,) per-row scale of q8 */
    const float *bias;    /* (rows,) */
    float act_scale;      /* int8-static: the calibrated scale of this product's input */
} re_matrix_desc;

typedef struct {
    int cell, quant;
    int input_size, hidden_size, num_layers, output_size;
    re_matrix_desc ih[RE_MAX_LAYERS], hh[RE_MAX_LAYERS], head;
    int proj_size;                  /* LSTM: 0 = none, else 1 <= P < hidden_size */
    re_matrix_desc hr[RE_MAX_LAYERS]; /* proj_size: W_hr (P, H), bias NULL (zero) */
    float inner_scale[RE_MAX_LAYERS]; /* int8-static: scale of o tanh(c) (proj_size) or r h (GRU_LBR0) */
} re_model_desc;

typedef struct re_model re_model;
typedef struct re_stream re_stream;

re_model *re_model_new(const re_model_desc *desc, const char **err); /* NULL + *err on bad input */
void re_model_free(re_model *m);
const char *re_model_isa(const re_model *m);    /* "avx512-vnni", "avx2", "neon-dotprod", "neon", "scalar" */
size_t re_model_bytes(const re_model *m);       /* packed weight bytes */
int re_model_state_count(const re_model *m);    /* h (and c) per layer */

re_stream *re_stream_new(const re_model *m);
void re_stream_free(re_stream *s);
void re_reset(re_stream *s);
float *re_state(re_stream *s, int layer, int kind); /* kind 0 = h, 1 = c (LSTM); see re_state_size */
int re_state_size(const re_model *m, int kind);    /* floats of h (P with proj_size, else H) or c (H) */

void re_step(re_stream *s, const float *x, float *y);                                 /* (I,) -> (O,) */
void re_step_many(const re_model *m, re_stream *const *s, int n, const float *X, float *Y); /* (n,I) -> (n,O) */

/* exposed for tests: the vectorised activation of this CPU, in place */
void re_tanh(const re_model *m, float *v, int n);

#endif
