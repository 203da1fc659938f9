/* kernel.h - internal: packed weights and the per-CPU kernel table (one table per instruction set).
 *
 * Every matrix is packed in panels of RE_P = 16 rows so that a kernel loads 16 weights (fp32) or 16 x 4
 * int8 weights with one vector load and never sums horizontally:
 *   fp32  wf[p][k][16]          = W[16p + i, k]                     (panels, cols, 16)
 *   int8  wq[p][g][16][4]       = W[16p + i, 4g + j], zero padded   (panels, kq / 4, 16, 4)
 *   int8 weight-only  wb[p][k][16] = W[16p + i, k]                  (panels, cols, 16), float activations
 * Padding rows have zero weights, zero scale and zero bias, so they compute 0 and are never read back.
 */
#ifndef RNNEDGE_KERNEL_H
#define RNNEDGE_KERNEL_H

#include "rnnedge.h"

#define RE_P 16  /* rows per panel */
#define RE_KG 4  /* int8 products are summed in groups of 4 (VNNI vpdpbusd, NEON sdot) */
#define RE_MAX_NS 4 /* streams per kernel call */

/* A kernel block of np panels x ns streams with constant trip counts, so the compiler unrolls it fully:
 * RE_BLOCK4(np, ns, CALL) expands CALL(np, ns) for np, ns in 1..4 (RE_BLOCK2: np in 1..2). */
#define RE_CASES(P, CALL)                                                                                  \
    case 8 * P + 1: CALL(P, 1); break;                                                                     \
    case 8 * P + 2: CALL(P, 2); break;                                                                     \
    case 8 * P + 3: CALL(P, 3); break;                                                                     \
    case 8 * P + 4: CALL(P, 4); break;
#define RE_BLOCK2(np, ns, CALL)                                                                            \
    switch ((np) * 8 + (ns)) { RE_CASES(1, CALL) RE_CASES(2, CALL) }
#define RE_BLOCK4(np, ns, CALL)                                                                            \
    switch ((np) * 8 + (ns)) { RE_CASES(1, CALL) RE_CASES(2, CALL) RE_CASES(3, CALL) RE_CASES(4, CALL) }

typedef struct {
    int rows, cols;  /* logical shape (rows, cols) */
    int panels;      /* ceil(rows / 16) */
    int kq;          /* int8: cols rounded up to a multiple of 4 */
    float *wf;       /* fp32 panels, or NULL */
    int8_t *wq;      /* int8 panels, or NULL */
    int8_t *wb;      /* int8 weight-only panels, or NULL */
    float *scale;    /* (panels * 16,) int8 row scales (wq or wb) */
    int32_t *rowsum; /* (panels * 16,) sum over k of W[r, k]: undoes the +128 of unsigned x signed kernels */
    float *bias;     /* (panels * 16,) */
    float act_scale; /* int8-static: fixed scale of the input vector (0: dynamic) */
    float act_inv;   /* 1 / act_scale */
} re_packed;

typedef struct {
    const char *name;
    /* y_j[r] = sum_k W[r, k] x_j[k]  for j < ns <= RE_MAX_NS; y_j holds panels * 16 floats */
    void (*f32_matvec)(const re_packed *W, const float *const *x, float *const *y, int ns);
    /* the same with int8 weights wb (int8 weight-only), before the row scale */
    void (*w8_matvec)(const re_packed *W, const float *const *x, float *const *y, int ns);
    /* acc_j[r] = sum_k W[r, k] q_j[k], exact in int32; q_j holds kq bytes (zero padded) */
    void (*q8_matvec)(const re_packed *W, const int8_t *const *q, int32_t *const *acc, int ns);
    /* q[k] = clamp(rint(v[k] * inv), -127, 127) for k < n */
    void (*quantize)(const float *v, int n, float inv, int8_t *q);
    float (*absmax)(const float *v, int n);
    /* v = tanh(v) in place (rational approximation, |error| <= 5e-7, see act.c) */
    void (*tanh)(float *v, int n);
} re_ops;

/* one table per instruction set; NULL where this build or this CPU has none */
const re_ops *re_ops_scalar(void);
const re_ops *re_ops_avx2(void);
const re_ops *re_ops_avx512(void);
const re_ops *re_ops_neon(void);
const re_ops *re_ops_neon_dotprod(void);

/* the portable pieces every table may use (f32.c, w8.c, q8.c, act.c) */
void re_f32_matvec_scalar(const re_packed *W, const float *const *x, float *const *y, int ns);
void re_w8_matvec_scalar(const re_packed *W, const float *const *x, float *const *y, int ns);
void re_q8_matvec_scalar(const re_packed *W, const int8_t *const *q, int32_t *const *acc, int ns);
void re_quantize_scalar(const float *v, int n, float inv, int8_t *q);
float re_absmax_scalar(const float *v, int n);
void re_tanh_scalar(float *v, int n);

#endif
