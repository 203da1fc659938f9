/* model.c - packing a model for this CPU, streams, and the step: products (f32.c / q8.c) + cell gates.
 *
 * Read top to bottom: the kernel tables and CPU choice, packing, streams, the products, the cells, the step.
 */
#include <stdlib.h>
#include <string.h>

#include "kernel.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

/* ==================================================================================================== */
/* kernel tables: one per instruction set, chosen once per model (RNNEDGE_ISA=name forces a lower one) */

static const re_ops OPS_SCALAR = {"scalar", re_f32_matvec_scalar, re_w8_matvec_scalar, re_q8_matvec_scalar,
                                  re_quantize_scalar, re_absmax_scalar, re_tanh_scalar};
const re_ops *re_ops_scalar(void) { return &OPS_SCALAR; }

#if defined(__x86_64__) || defined(__i386__)
void re_f32_matvec_avx2(const re_packed *, const float *const *, float *const *, int);
void re_f32_matvec_avx512(const re_packed *, const float *const *, float *const *, int);
void re_w8_matvec_avx2(const re_packed *, const float *const *, float *const *, int);
void re_w8_matvec_avx512(const re_packed *, const float *const *, float *const *, int);
void re_q8_matvec_avx2(const re_packed *, const int8_t *const *, int32_t *const *, int);
void re_q8_matvec_vnni(const re_packed *, const int8_t *const *, int32_t *const *, int);
void re_quantize_avx2(const float *, int, float, int8_t *);
float re_absmax_avx2(const float *, int);
void re_tanh_avx2(float *, int);
void re_tanh_avx512(float *, int);

static const re_ops OPS_AVX2 = {"avx2", re_f32_matvec_avx2, re_w8_matvec_avx2, re_q8_matvec_avx2,
                                re_quantize_avx2, re_absmax_avx2, re_tanh_avx2};
static const re_ops OPS_AVX512 = {"avx512-vnni", re_f32_matvec_avx512, re_w8_matvec_avx512, re_q8_matvec_vnni,
                                  re_quantize_avx2, re_absmax_avx2, re_tanh_avx512};

const re_ops *re_ops_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &OPS_AVX2 : NULL;
}
const re_ops *re_ops_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
                   __builtin_cpu_supports("fma")
               ? &OPS_AVX512
               : NULL;
}
#else
const re_ops *re_ops_avx2(void) { return NULL; }
const re_ops *re_ops_avx512(void) { return NULL; }
#endif

#if defined(__aarch64__)
void re_f32_matvec_neon(const re_packed *, const float *const *, float *const *, int);
void re_w8_matvec_neon(const re_packed *, const float *const *, float *const *, int);
void re_q8_matvec_neon(const re_packed *, const int8_t *const *, int32_t *const *, int);
void re_q8_matvec_sdot(const re_packed *, const int8_t *const *, int32_t *const *, int);
void re_quantize_neon(const float *, int, float, int8_t *);
float re_absmax_neon(const float *, int);
void re_tanh_neon(float *, int);

static const re_ops OPS_NEON = {"neon", re_f32_matvec_neon, re_w8_matvec_neon, re_q8_matvec_neon,
                                re_quantize_neon, re_absmax_neon, re_tanh_neon};
static const re_ops OPS_NEON_DOT = {"neon-dotprod", re_f32_matvec_neon, re_w8_matvec_neon, re_q8_matvec_sdot,
                                    re_quantize_neon, re_absmax_neon, re_tanh_neon};
const re_ops *re_ops_neon(void) { return &OPS_NEON; }
const re_ops *re_ops_neon_dotprod(void)
{
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) ? &OPS_NEON_DOT : NULL;
#else
    return NULL;
#endif
}
#else
const re_ops *re_ops_neon(void) { return NULL; }
const re_ops *re_ops_neon_dotprod(void) { return NULL; }
#endif

static const re_ops *choose_ops(void)
{
    const re_ops *(*const best_first[])(void) = {re_ops_avx512, re_ops_avx2, re_ops_neon_dotprod, re_ops_neon,
                                                 re_ops_scalar};
    const char *want = getenv("RNNEDGE_ISA"); /* e.g. "avx2" on an AVX-512 box: test every path on one CPU */
    for (size_t i = 0; i < sizeof best_first / sizeof *best_first; i++) {
        const re_ops *ops = best_first[i]();
        if (ops && (!want || !*want || strcmp(want, ops->name) == 0)) return ops;
    }
    return &OPS_SCALAR; /* an unknown or unsupported RNNEDGE_ISA falls back to the portable path */
}

/* ==================================================================================================== */
/* the model: packed matrices */

struct re_model {
    int cell, quant, I, H, L, O;
    int P;                       /* the size of h: proj_size (LSTM with a projection) or H */
    int gates;                   /* rows per layer: 4H (LSTM), 3H (GRU), H (RNN) */
    re_packed ih[RE_MAX_LAYERS]; /* (gates*H, I or P) */
    re_packed hh[RE_MAX_LAYERS]; /* (gates*H, P); GRU_LBR0: (2H, H), the r and z rows */
    re_packed hn[RE_MAX_LAYERS]; /* GRU_LBR0 only: W_hn (H, H) + b_hn, applied to r * h */
    re_packed hr[RE_MAX_LAYERS]; /* proj_size only: W_hr (P, H), applied to o tanh(c) */
    re_packed head;              /* (O, P) */
    int rows_max, cols_max;      /* padded sizes of the largest product: stream scratch */
    size_t bytes;
    const re_ops *ops;
};

static void *zalloc(size_t n) /* 64-byte aligned, zeroed */
{
    n = (n + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n ? n : 64);
    if (p) memset(p, 0, n ? n : 64);
    return p;
}

static void packed_free(re_packed *W)
{
    free(W->wf);
    free(W->wq);
    free(W->wb);
    free(W->scale);
    free(W->rowsum);
    free(W->bias);
}

/* int8 weight-only: int8 panels in the fp32 layout (wb) + row scales; activations stay float */
static int pack_weight_only(re_packed *W, const re_matrix_desc *d, int rows, int cols, size_t *bytes)
{
    const size_t R = (size_t)W->panels * RE_P;
    if (!d->q8 || !d->scale) return 0;
    W->wb = zalloc(R * cols);
    W->scale = zalloc(R * sizeof(float));
    if (!W->wb || !W->scale) return 0;
    for (int r = 0; r < rows; r++) {
        for (int k = 0; k < cols; k++)
            W->wb[((size_t)(r / RE_P) * cols + k) * RE_P + r % RE_P] = d->q8[(size_t)r * cols + k];
        W->scale[r] = d->scale[r];
    }
    *bytes += R * cols + 2 * R * sizeof(float);
    return 1;
}

/* (rows, cols) row-major -> panels. fp32 models keep float weights; int8 models keep int8 + row scales. */
static int pack(re_packed *W, const re_matrix_desc *d, int rows, int cols, int quant, size_t *bytes)
{
    W->rows = rows, W->cols = cols, W->panels = (rows + RE_P - 1) / RE_P;
    W->kq = (cols + RE_KG - 1) / RE_KG * RE_KG;
    const size_t R = (size_t)W->panels * RE_P;
    W->bias = zalloc(R * sizeof(float));
    if (!W->bias) return 0;
    for (int r = 0; r < rows; r++) W->bias[r] = d->bias ? d->bias[r] : 0.0f;
    if (quant == RE_F32) {
        if (!d->f32) return 0;
        W->wf = zalloc(R * cols * sizeof(float));
        if (!W->wf) return 0;
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++)
                W->wf[((size_t)(r / RE_P) * cols + k) * RE_P + r % RE_P] = d->f32[(size_t)r * cols + k];
        *bytes += R * cols * sizeof(float) + R * sizeof(float);
        return 1;
    }
    if (quant == RE_Q8_WEIGHT) return pack_weight_only(W, d, rows, cols, bytes);
    if (!d->q8 || !d->scale) return 0;
    W->wq = zalloc(R * W->kq);
    W->scale = zalloc(R * sizeof(float));
    W->rowsum = zalloc(R * sizeof(int32_t));
    if (!W->wq || !W->scale || !W->rowsum) return 0;
    const int G = W->kq / RE_KG;
    for (int r = 0; r < rows; r++) {
        int32_t sum = 0;
        for (int k = 0; k < cols; k++) {
            const int8_t w = d->q8[(size_t)r * cols + k];
            W->wq[(((size_t)(r / RE_P) * G + k / RE_KG) * RE_P + r % RE_P) * RE_KG + k % RE_KG] = w;
            sum += w;
        }
        W->rowsum[r] = sum;
        W->scale[r] = d->scale[r];
    }
    W->act_scale = quant == RE_Q8_STATIC ? d->act_scale : 0.0f;
    W->act_inv = W->act_scale > 0.0f ? 1.0f / W->act_scale : 0.0f;
    *bytes += R * W->kq + R * (2 * sizeof(float) + sizeof(int32_t));
    return 1;
}

void re_model_free(re_model *m)
{
    if (!m) return;
    for (int l = 0; l < RE_MAX_LAYERS; l++) {
        packed_free(&m->ih[l]), packed_free(&m->hh[l]);
        packed_free(&m->hn[l]), packed_free(&m->hr[l]);
    }
    packed_free(&m->head);
    free(m);
}

re_model *re_model_new(const re_model_desc *d, const char **err)
{
    *err = NULL;
    if (d->cell < RE_RNN_TANH || d->cell > RE_GRU_LBR0) return *err = "unknown cell", NULL;
    if (d->quant < RE_F32 || d->quant > RE_Q8_WEIGHT) return *err = "unknown quantisation", NULL;
    if (d->proj_size && (d->cell != RE_LSTM || d->proj_size < 1 || d->proj_size >= d->hidden_size))
        return *err = "proj_size needs an LSTM and 1 <= proj_size < hidden_size", NULL;
    if (d->num_layers < 1 || d->num_layers > RE_MAX_LAYERS) return *err = "num_layers out of range", NULL;
    if (d->input_size < 1 || d->hidden_size < 1 || d->output_size < 1) return *err = "sizes must be >= 1", NULL;
    if (d->input_size > (1 << 16) || d->hidden_size > (1 << 14) || d->output_size > (1 << 16))
        return *err = "sizes too large", NULL;
    re_model *m = calloc(1, sizeof *m);
    if (!m) return *err = "out of memory", NULL;
    m->cell = d->cell, m->quant = d->quant, m->I = d->input_size, m->H = d->hidden_size;
    m->L = d->num_layers, m->O = d->output_size, m->P = d->proj_size ? d->proj_size : d->hidden_size;
    m->gates = (d->cell == RE_LSTM ? 4 : d->cell >= RE_GRU ? 3 : 1) * m->H;
    m->ops = choose_ops();
    int ok = 1;
    for (int l = 0; l < m->L && ok; l++) {
        ok = pack(&m->ih[l], &d->ih[l], m->gates, l ? m->P : m->I, m->quant, &m->bytes);
        if (m->cell != RE_GRU_LBR0) {
            ok = ok && pack(&m->hh[l], &d->hh[l], m->gates, m->P, m->quant, &m->bytes);
            if (d->proj_size) { /* h = W_hr (o tanh(c)), no bias */
                re_matrix_desc r = d->hr[l];
                r.bias = NULL, r.act_scale = d->inner_scale[l];
                ok = ok && pack(&m->hr[l], &r, m->P, m->H, m->quant, &m->bytes);
            }
        } else if (ok && (d->hh[l].f32 || d->hh[l].q8) && d->hh[l].bias) { /* rows r, z | n: W_hn (r h) */
            const re_matrix_desc *h = &d->hh[l];
            const size_t off = (size_t)2 * m->H * m->H;
            re_matrix_desc n = {h->f32 ? h->f32 + off : 0, h->q8 ? h->q8 + off : 0, h->scale ? h->scale + 2 * m->H : 0,
                                h->bias + 2 * m->H, d->inner_scale[l]};
            ok = pack(&m->hh[l], &d->hh[l], 2 * m->H, m->H, m->quant, &m->bytes) &&
                 pack(&m->hn[l], &n, m->H, m->H, m->quant, &m->bytes);
        } else {
            ok = 0;
        }
    }
    ok = ok && pack(&m->head, &d->head, m->O, m->P, m->quant, &m->bytes);
    if (!ok) {
        re_model_free(m);
        return *err = "missing weights or out of memory", NULL;
    }
    if (m->quant == RE_Q8_STATIC) {
        for (int l = 0; l < m->L; l++)
            if (!(m->ih[l].act_scale > 0) || !(m->hh[l].act_scale > 0)) ok = 0;
            else if (m->cell == RE_GRU_LBR0 && !(m->hn[l].act_scale > 0)) ok = 0;
            else if (m->P != m->H && !(m->hr[l].act_scale > 0)) ok = 0;
        if (!(m->head.act_scale > 0)) ok = 0;
        if (!ok) {
            re_model_free(m);
            return *err = "int8-static needs a positive activation scale for every product", NULL;
        }
    }
    const int P = ((m->gates > m->O ? m->gates : m->O) + RE_P - 1) / RE_P * RE_P;
    const int K = (m->I > m->H ? m->I : m->H) + RE_KG;
    m->rows_max = P, m->cols_max = K;
    return m;
}

const char *re_model_isa(const re_model *m) { return m->ops->name; }
size_t re_model_bytes(const re_model *m) { return m->bytes; }
int re_model_state_count(const re_model *m) { return m->L * (m->cell == RE_LSTM ? 2 : 1); }
int re_state_size(const re_model *m, int kind) { return kind ? m->H : m->P; }
void re_tanh(const re_model *m, float *v, int n) { m->ops->tanh(v, n); }

/* ==================================================================================================== */
/* streams: state and scratch in one block, allocated once */

struct re_stream {
    const re_model *m;
    float *h[RE_MAX_LAYERS], *c[RE_MAX_LAYERS]; /* (H,) each; h holds P <= H */
    float *gx, *gh;                             /* (rows_max,) the two products of a layer */
    int32_t *acc;                               /* (rows_max,) int8 accumulators */
    int8_t *q;                                  /* (cols_max,) the quantised input of a product */
    float *tmp;                                 /* (H,) */
    void *block;
};

re_stream *re_stream_new(const re_model *m)
{
    const size_t H = ((size_t)m->H + 15) & ~(size_t)15, R = m->rows_max, K = ((size_t)m->cols_max + 63) & ~(size_t)63;
    const size_t floats = 2 * m->L * H + 2 * R + R + H; /* h, c, gx, gh, acc (int32), tmp */
    re_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->block = zalloc(floats * sizeof(float) + K);
    if (!s->block) return free(s), NULL;
    float *f = s->block;
    s->m = m;
    for (int l = 0; l < m->L; l++) s->h[l] = f, f += H, s->c[l] = f, f += H;
    s->gx = f, f += R;
    s->gh = f, f += R;
    s->acc = (int32_t *)f, f += R;
    s->tmp = f, f += H;
    s->q = (int8_t *)f;
    return s;
}

void re_stream_free(re_stream *s)
{
    if (s) free(s->block), free(s);
}

void re_reset(re_stream *s)
{
    for (int l = 0; l < s->m->L; l++) {
        memset(s->h[l], 0, sizeof(float) * s->m->H);
        memset(s->c[l], 0, sizeof(float) * s->m->H);
    }
}

float *re_state(re_stream *s, int layer, int kind)
{
    if (layer < 0 || layer >= s->m->L || kind < 0 || kind > (s->m->cell == RE_LSTM)) return NULL;
    return kind ? s->c[layer] : s->h[layer];
}

/* ==================================================================================================== */
/* The elementwise work of a step (int8 epilogues, gate arithmetic) is plain C that the compiler vectorises;
 * on x86 it is built for AVX-512, AVX2 and the SSE2 baseline and the loader picks one per CPU (an ifunc).
 * Elementwise IEEE arithmetic without FMA contraction gives the same bits at every width, so this choice
 * never changes a result (RNNEDGE_ISA selects the products and tanh, which may differ in rounding). */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define ELEMENTWISE __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ELEMENTWISE
#endif

/* ==================================================================================================== */
/* one product for ns streams: out_j = W v_j + b */

ELEMENTWISE static void product(const re_model *m, const re_packed *W, const float *const *v, float *const *out,
                    re_stream *const *s, int ns)
{
    const re_ops *ops = m->ops;
    const int R = W->rows;
    if (m->quant == RE_F32) {
        ops->f32_matvec(W, v, out, ns);
        for (int j = 0; j < ns; j++)
            for (int r = 0; r < R; r++) out[j][r] += W->bias[r];
        return;
    }
    if (m->quant == RE_Q8_WEIGHT) {
        ops->w8_matvec(W, v, out, ns);
        for (int j = 0; j < ns; j++)
            for (int r = 0; r < R; r++) out[j][r] = out[j][r] * W->scale[r] + W->bias[r];
        return;
    }
    const int8_t *q[RE_MAX_NS] = {0};
    int32_t *acc[RE_MAX_NS] = {0};
    float scale[RE_MAX_NS] = {0};
    for (int j = 0; j < ns; j++) { /* int8-dynamic: s = max|v| / 127 this step; int8-static: calibrated */
        float inv = W->act_inv;
        scale[j] = W->act_scale;
        if (m->quant == RE_Q8_DYNAMIC) {
            const float amax = ops->absmax(v[j], W->cols);
            scale[j] = amax / 127.0f;
            inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        }
        ops->quantize(v[j], W->cols, inv, s[j]->q);
        memset(s[j]->q + W->cols, 0, (size_t)(W->kq - W->cols)); /* padding columns: 0 */
        q[j] = s[j]->q, acc[j] = s[j]->acc;
    }
    ops->q8_matvec(W, q, acc, ns);
    for (int j = 0; j < ns; j++)
        for (int r = 0; r < R; r++) out[j][r] = (float)acc[j][r] * (W->scale[r] * scale[j]) + W->bias[r];
}

/* ==================================================================================================== */
/* the cells, on one stream's gx = W_ih x + b_ih and gh = W_hh h + b_hh */

ELEMENTWISE static void cell_update(const re_model *m, re_stream *s, int l)
{
    const int H = m->H;
    float *gx = s->gx, *gh = s->gh, *h = s->h[l], *c = s->c[l], *t = s->tmp;
    void (*const tanh_)(float *, int) = m->ops->tanh;
    switch (m->cell) {
    case RE_LSTM: { /* rows i, f, g, o */
        for (int r = 0; r < 4 * H; r++) gx[r] += gh[r];
        for (int r = 0; r < 2 * H; r++) gx[r] *= 0.5f; /* sigmoid(a) = 0.5 tanh(a / 2) + 0.5 */
        for (int r = 3 * H; r < 4 * H; r++) gx[r] *= 0.5f;
        tanh_(gx, 4 * H);
        const float *i = gx, *f = gx + H, *g = gx + 2 * H, *o = gx + 3 * H;
        for (int k = 0; k < H; k++) c[k] = (0.5f * f[k] + 0.5f) * c[k] + (0.5f * i[k] + 0.5f) * g[k]; /* c = f c + i g */
        memcpy(t, c, sizeof(float) * H);
        tanh_(t, H);
        if (m->P == H) {
            for (int k = 0; k < H; k++) h[k] = (0.5f * o[k] + 0.5f) * t[k]; /* h = o tanh(c) */
            break;
        }
        for (int k = 0; k < H; k++) t[k] *= 0.5f * o[k] + 0.5f; /* o tanh(c) (H,) */
        const float *v = t;
        product(m, &m->hr[l], &v, &gh, &s, 1); /* h = W_hr (o tanh(c)) (P,); gh is free again */
        memcpy(h, gh, sizeof(float) * m->P);
        break;
    }
    case RE_GRU: { /* rows r, z, n */
        for (int r = 0; r < 2 * H; r++) gx[r] = 0.5f * (gx[r] + gh[r]);
        tanh_(gx, 2 * H);
        float *n = gx + 2 * H;
        const float *rg = gx, *z = gx + H, *hn = gh + 2 * H;
        for (int k = 0; k < H; k++) n[k] += (0.5f * rg[k] + 0.5f) * hn[k]; /* W_in x + b_in + r (W_hn h + b_hn) */
        tanh_(n, H);
        for (int k = 0; k < H; k++) h[k] = n[k] + (0.5f * z[k] + 0.5f) * (h[k] - n[k]); /* (1 - z) n + z h */
        break;
    }
    case RE_GRU_LBR0: { /* rows r, z, n; gh holds r and z only */
        for (int r = 0; r < 2 * H; r++) gx[r] = 0.5f * (gx[r] + gh[r]);
        tanh_(gx, 2 * H);
        float *n = gx + 2 * H;
        const float *rg = gx, *z = gx + H;
        for (int k = 0; k < H; k++) t[k] = (0.5f * rg[k] + 0.5f) * h[k];
        const float *v = t;
        product(m, &m->hn[l], &v, &gh, &s, 1); /* gh[0:H] = W_hn (r h) + b_hn (r and z are read) */
        for (int k = 0; k < H; k++) n[k] += gh[k];
        tanh_(n, H);
        for (int k = 0; k < H; k++) h[k] = n[k] + (0.5f * z[k] + 0.5f) * (h[k] - n[k]);
        break;
    }
    case RE_RNN_TANH:
        for (int k = 0; k < H; k++) h[k] = gx[k] + gh[k];
        tanh_(h, H);
        break;
    default: /* RE_RNN_RELU */
        for (int k = 0; k < H; k++) {
            const float a = gx[k] + gh[k];
            h[k] = a > 0.0f ? a : 0.0f;
        }
    }
}

/* ==================================================================================================== */
/* the step: every layer, then the head, for ns <= RE_MAX_NS streams */

static void step_group(const re_model *m, re_stream *const *s, int ns, const float *const *x, float *const *y)
{
    const float *v[RE_MAX_NS];
    float *gx[RE_MAX_NS], *gh[RE_MAX_NS];
    for (int j = 0; j < ns; j++) gx[j] = s[j]->gx, gh[j] = s[j]->gh;
    for (int l = 0; l < m->L; l++) {
        for (int j = 0; j < ns; j++) v[j] = l ? s[j]->h[l - 1] : x[j];
        product(m, &m->ih[l], v, gx, s, ns); /* gx = W_ih x + b_ih */
        for (int j = 0; j < ns; j++) v[j] = s[j]->h[l];
        product(m, &m->hh[l], v, gh, s, ns); /* gh = W_hh h + b_hh */
        for (int j = 0; j < ns; j++) cell_update(m, s[j], l);
    }
    for (int j = 0; j < ns; j++) v[j] = s[j]->h[m->L - 1];
    product(m, &m->head, v, gx, s, ns); /* y = W_y h + b_y */
    for (int j = 0; j < ns; j++) memcpy(y[j], s[j]->gx, sizeof(float) * m->O);
}

void re_step(re_stream *s, const float *x, float *y) { step_group(s->m, &s, 1, &x, &y); }

void re_step_many(const re_model *m, re_stream *const *s, int n, const float *X, float *Y)
{
    for (int j0 = 0; j0 < n; j0 += RE_MAX_NS) {
        const int ns = n - j0 < RE_MAX_NS ? n - j0 : RE_MAX_NS;
        const float *x[RE_MAX_NS];
        float *y[RE_MAX_NS];
        for (int j = 0; j < ns; j++) x[j] = X + (size_t)(j0 + j) * m->I, y[j] = Y + (size_t)(j0 + j) * m->O;
        step_group(m, s + j0, ns, x, y);
    }
}
