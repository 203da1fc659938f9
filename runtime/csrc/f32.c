/* f32.c - the fp32 path: y_j = W x_j over 16-row panels (wf[p][k][16]), for up to 4 streams at once.
 *
 * Each kernel walks a block of up to 4 panels (64 rows) x up to 4 streams, so one weight load feeds every
 * stream of the call and the accumulators of a block stay in registers: the 16 accumulators of a 4 x 4
 * block fit the 32 vector registers of AVX-512 and NEON; AVX2 (16 registers) takes blocks of 2 panels.
 */
#include "kernel.h"

/* ---------------------------------------------------------------------------------------------------- */
/* portable */

void re_f32_matvec_scalar(const re_packed *W, const float *const *x, float *const *y, int ns)
{
    const int K = W->cols;
    for (int p = 0; p < W->panels; p++) {
        const float *w = W->wf + (size_t)p * K * RE_P; /* (K, 16) */
        for (int j = 0; j < ns; j++) {
            float acc[RE_P] = {0};
            for (int k = 0; k < K; k++) {
                const float xk = x[j][k];
                for (int i = 0; i < RE_P; i++) acc[i] += w[k * RE_P + i] * xk;
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

AVX512 INLINE void f32_block_avx512(const float *w, int K, const float *const *x, float *const *y, int p0,
                                    const int np, const int ns)
{
    __m512 acc[4][RE_MAX_NS];
    for (int p = 0; p < np; p++)
        for (int j = 0; j < ns; j++) acc[p][j] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m512 xk[RE_MAX_NS];
        for (int j = 0; j < ns; j++) xk[j] = _mm512_set1_ps(x[j][k]);
        for (int p = 0; p < np; p++) {
            const __m512 wv = _mm512_loadu_ps(w + ((size_t)p * K + k) * RE_P); /* W[16(p0+p) + i, k] */
            for (int j = 0; j < ns; j++) acc[p][j] = _mm512_fmadd_ps(wv, xk[j], acc[p][j]);
        }
    }
    for (int p = 0; p < np; p++)
        for (int j = 0; j < ns; j++) _mm512_storeu_ps(y[j] + (p0 + p) * RE_P, acc[p][j]);
}

AVX512 void re_f32_matvec_avx512(const re_packed *W, const float *const *x, float *const *y, int ns)
{
    const int K = W->cols;
    for (int p0 = 0; p0 < W->panels; p0 += 4) {
        const int np = W->panels - p0 < 4 ? W->panels - p0 : 4;
        const float *w = W->wf + (size_t)p0 * K * RE_P;
#define CALL(a, b) f32_block_avx512(w, K, x, y, p0, a, b)
        RE_BLOCK4(np, ns, CALL)
#undef CALL
    }
}

AVX2 INLINE void f32_block_avx2(const float *w, int K, const float *const *x, float *const *y, int p0,
                                const int np, const int ns)
{
    __m256 acc[2][2][RE_MAX_NS]; /* (panel, half, stream) */
    for (int p = 0; p < np; p++)
        for (int j = 0; j < ns; j++) acc[p][0][j] = acc[p][1][j] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256 xk[RE_MAX_NS];
        for (int j = 0; j < ns; j++) xk[j] = _mm256_set1_ps(x[j][k]);
        for (int p = 0; p < np; p++) {
            const float *wk = w + ((size_t)p * K + k) * RE_P;
            const __m256 lo = _mm256_loadu_ps(wk), hi = _mm256_loadu_ps(wk + 8);
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

AVX2 void re_f32_matvec_avx2(const re_packed *W, const float *const *x, float *const *y, int ns)
{
    const int K = W->cols;
    for (int p0 = 0; p0 < W->panels; p0 += 2) {
        const int np = W->panels - p0 < 2 ? W->panels - p0 : 2;
        const float *w = W->wf + (size_t)p0 * K * RE_P;
#define CALL(a, b) f32_block_avx2(w, K, x, y, p0, a, b)
        RE_BLOCK2(np, ns, CALL)
#undef CALL
    }
}
#endif

/* ---------------------------------------------------------------------------------------------------- */
#if defined(__aarch64__)
#include <arm_neon.h>
#define INLINE static inline __attribute__((always_inline))

INLINE void f32_block_neon(const float *w, int K, const float *const *x, float *const *y, int p0,
                           const int ns)
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
        const float32x4x4_t wv = vld1q_f32_x4(w + (size_t)(k + (u)) * RE_P);                              \
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
        const float32x4x4_t wv = vld1q_f32_x4(w + (size_t)k * RE_P);
        for (int j = 0; j < ns; j++)
            for (int q = 0; q < 4; q++) acc[q][j] = vfmaq_n_f32(acc[q][j], wv.val[q], x[j][k]);
    }
    for (int q = 0; q < 4; q++)
        for (int j = 0; j < ns; j++) vst1q_f32(y[j] + p0 * RE_P + 4 * q, acc[q][j]);
}

void re_f32_matvec_neon(const re_packed *W, const float *const *x, float *const *y, int ns)
{
    const int K = W->cols;
    for (int p = 0; p < W->panels; p++) {
        const float *w = W->wf + (size_t)p * K * RE_P;
        switch (ns) {
        case 1: f32_block_neon(w, K, x, y, p, 1); break;
        case 2: f32_block_neon(w, K, x, y, p, 2); break;
        case 3: f32_block_neon(w, K, x, y, p, 3); break;
        default: f32_block_neon(w, K, x, y, p, 4); break;
        }
    }
}
#endif
