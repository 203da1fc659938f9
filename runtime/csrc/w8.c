/* w8.c - the int8 weight-only path: int8 weights in memory, float activations, y_j = W8 x_j in float32.
 *
 * Panels wb[p][k][16] = q[16p + i, k] (int8): the fp32 panel layout at a quarter of the bytes. Each kernel
 * widens 16 weights to float32 (exact: |q| <= 127) and sums k in order, like f32.c; the caller applies the
 * row scale once: out[r] = (sum_k q[r, k] x[k]) * s_w[r] + b[r]. Against the scheme's reference (float32
 * weights q * s_w, export/quantize.py `effective`) that moves one multiplication out of the sum: a float
 * rounding difference, not a numerics change. Blocks of up to 4 panels x 4 streams, as in f32.c.
 */
#include "kernel.h"

/* ---------------------------------------------------------------------------------------------------- */
/* portable */

void re_w8_matvec_scalar(const re_packed *W, const float *const *x, float *const *y, int ns)
{
    const int K = W->cols;
    for (int p = 0; p < W->panels; p++) {
        const int8_t *w = W->wb + (size_t)p * K * RE_P; /* (K, 16) */
        for (int j = 0; j < ns; j++) {
            float acc[RE_P] = {0};
            for (int k = 0; k < K; k++) {
                const float xk = x[j][k];
                for (int i = 0; i < RE_P; i++) acc[i] += (float)w[k * RE_P + i] * xk;
            }
            for (int i = 0; i < RE_P; i++) y[j][p * RE_P + i] = acc[i];
        }
    }
}

/* ---------------------------------------------------------------------------------------------------- */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))
#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

AVX512 INLINE void w8_block_avx512(const int8_t *w, int K, const float *const *x, float *const *y, int p0,
                                   const int np, const int ns)
{
    __m512 acc[4][RE_MAX_NS];
    for (int p = 0; p < np; p++)
        for (int j = 0; j < ns; j++) acc[p][j] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m512 xk[RE_MAX_NS];
        for (int j = 0; j < ns; j++) xk[j] = _mm512_set1_ps(x[j][k]);
        for (int p = 0; p < np; p++) {
            const __m128i b = _mm_loadu_si128((const __m128i *)(w + ((size_t)p * K + k) * RE_P));
            const __m512 wv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); /* q[16(p0+p) + i, k] */
            for (int j = 0; j < ns; j++) acc[p][j] = _mm512_fmadd_ps(wv, xk[j], acc[p][j]);
        }
    }
    for (int p = 0; p < np; p++)
        for (int j = 0; j < ns; j++) _mm512_storeu_ps(y[j] + (p0 + p) * RE_P, acc[p][j]);
}

AVX512 void re_w8_matvec_avx512(const re_packed *W, const float *const *x, float *const *y, int ns)
{
    const int K = W->cols;
    for (int p0 = 0; p0 < W->panels; p0 += 4) {
        const int np = W->panels - p0 < 4 ? W->panels - p0 : 4;
        const int8_t *w = W->wb + (size_t)p0 * K * RE_P;
#define CALL(a, b) w8_block_avx512(w, K, x, y, p0, a, b)
        RE_BLOCK4(np, ns, CALL)
#undef CALL
    }
}

AVX2 INLINE void w8_block_avx2(const int8_t *w, int K, const float *const *x, float *const *y, int p0,
                               const int np, const int ns)
{
    __m256 acc[2][2][RE_MAX_NS]; /* (panel, half, stream) */
    for (int p = 0; p < np; p++)
        for (int j = 0; j < ns; j++) acc[p][0][j] = acc[p][1][j] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256 xk[RE_MAX_NS];
        for (int j = 0; j < ns; j++) xk[j] = _mm256_set1_ps(x[j][k]);
        for (int p = 0; p < np; p++) {
            const int8_t *wk = w + ((size_t)p * K + k) * RE_P;
            const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)wk)));
            const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(wk + 8))));
            for (int j = 0; j < ns; j++) {
                acc[p][0][j] = _mm256_fmadd_ps(lo, xk[j], acc[p][0][j]);
                acc[p][1][j] = _mm256_fmadd_ps(hi, xk[j], acc[p][1][j]);
            }
        }
    }
    for (int p = 0; p < np; p++)
        for (int j = 0; j < ns; j++) {
            _mm256_storeu_ps(y[j] + (p0 + p) * RE_P, acc[p][0][j]);
            _mm256_storeu_ps(y[j] + (p0 + p) * RE_P + 8, acc[p][1][j]);
        }
}

AVX2 void re_w8_matvec_avx2(const re_packed *W, const float *const *x, float *const *y, int ns)
{
    const int K = W->cols;
    for (int p0 = 0; p0 < W->panels; p0 += 2) {
        const int np = W->panels - p0 < 2 ? W->panels - p0 : 2;
        const int8_t *w = W->wb + (size_t)p0 * K * RE_P;
#define CALL(a, b) w8_block_avx2(w, K, x, y, p0, a, b)
        RE_BLOCK2(np, ns, CALL)
#undef CALL
    }
}
#endif

/* ---------------------------------------------------------------------------------------------------- */
#if defined(__aarch64__)
#include <arm_neon.h>
#define INLINE static inline __attribute__((always_inline))

/* 16 int8 weights -> 4 x 4 float32 (sxtl, sxtl2, then scvtf) */
INLINE float32x4x4_t widen16(const int8_t *p)
{
    const int8x16_t b = vld1q_s8(p);
    const int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_high_s8(b);
    float32x4x4_t w;
    w.val[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
    w.val[1] = vcvtq_f32_s32(vmovl_high_s16(lo));
    w.val[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
    w.val[3] = vcvtq_f32_s32(vmovl_high_s16(hi));
    return w;
}

INLINE void w8_block_neon(const int8_t *w, int K, const float *const *x, float *const *y, int p0, const int ns)
{
    float32x4_t acc[4][RE_MAX_NS]; /* one panel: 4 quarters of 4 rows */
    for (int q = 0; q < 4; q++)
        for (int j = 0; j < ns; j++) acc[q][j] = vdupq_n_f32(0.0f);
    int k = 0;
    for (; k + 4 <= K; k += 4) { /* x_j[k..k+3] in one register, fmla by lane: each row still sums k in order */
        float32x4_t xk[RE_MAX_NS];
        for (int j = 0; j < ns; j++) xk[j] = vld1q_f32(x[j] + k);
#define FMLA_LANE(u)                                                                                       \
    do {                                                                                                   \
        const float32x4x4_t wv = widen16(w + (size_t)(k + (u)) * RE_P);                                   \
        for (int j = 0; j < ns; j++)                                                                       \
            for (int q = 0; q < 4; q++) acc[q][j] = vfmaq_laneq_f32(acc[q][j], wv.val[q], xk[j], (u));    \
    } while (0)
        FMLA_LANE(0);
        FMLA_LANE(1);
        FMLA_LANE(2);
        FMLA_LANE(3);
#undef FMLA_LANE
    }
    for (; k < K; k++) {
        const float32x4x4_t wv = widen16(w + (size_t)k * RE_P);
        for (int j = 0; j < ns; j++)
            for (int q = 0; q < 4; q++) acc[q][j] = vfmaq_n_f32(acc[q][j], wv.val[q], x[j][k]);
    }
    for (int q = 0; q < 4; q++)
        for (int j = 0; j < ns; j++) vst1q_f32(y[j] + p0 * RE_P + 4 * q, acc[q][j]);
}

void re_w8_matvec_neon(const re_packed *W, const float *const *x, float *const *y, int ns)
{
    const int K = W->cols;
    for (int p = 0; p < W->panels; p++) {
        const int8_t *w = W->wb + (size_t)p * K * RE_P;
        switch (ns) {
        case 1: w8_block_neon(w, K, x, y, p, 1); break;
        case 2: w8_block_neon(w, K, x, y, p, 2); break;
        case 3: w8_block_neon(w, K, x, y, p, 3); break;
        default: w8_block_neon(w, K, x, y, p, 4); break;
        }
    }
}
#endif
