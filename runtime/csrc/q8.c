/* q8.c - the int8 path: quantise an activation vector, then acc_j = W q_j exactly in int32.
 *
 * Panels wq[p][g][16][4]: for each group g of 4 columns, the 16 rows' 4 weights side by side (64 bytes),
 * the layout of x86 vpdpbusd and ARM sdot (one 32-bit lane = one row's 4 products). Every kernel gives the
 * same integers (products are exact), so int8 results do not depend on the CPU.
 *   AVX-512 VNNI  vpdpbusd multiplies unsigned x signed: it takes q + 128 and subtracts 128 * rowsum.
 *   AVX2          vpmaddubsw would saturate (255 * 127 * 2 > 32767); with |q| <= 127 as the unsigned
 *                 operand and sign(q) moved onto the weights, a pair is at most 2 * 127 * 127 = 32258.
 *   NEON dotprod  sdot, signed x signed.
 *   NEON          smull (8 x 8 -> 16 bits) + sadalp (pairwise accumulate into 32 bits).
 */
#include <math.h>

#include "kernel.h"

/* ---------------------------------------------------------------------------------------------------- */
/* portable */

void re_q8_matvec_scalar(const re_packed *W, const int8_t *const *q, int32_t *const *acc, int ns)
{
    const int G = W->kq / RE_KG;
    for (int p = 0; p < W->panels; p++) {
        const int8_t *w = W->wq + (size_t)p * G * RE_P * RE_KG; /* (G, 16, 4) */
        for (int j = 0; j < ns; j++) {
            int32_t a[RE_P] = {0};
            for (int g = 0; g < G; g++)
                for (int i = 0; i < RE_P; i++)
                    for (int t = 0; t < RE_KG; t++)
                        a[i] += (int32_t)w[(g * RE_P + i) * RE_KG + t] * q[j][g * RE_KG + t];
            for (int i = 0; i < RE_P; i++) acc[j][p * RE_P + i] = a[i];
        }
    }
}

void re_quantize_scalar(const float *v, int n, float inv, int8_t *q)
{
    for (int k = 0; k < n; k++) {
        float t = v[k] * inv;
        t = t > 127.0f ? 127.0f : (t < -127.0f ? -127.0f : t); /* clamp first: no int overflow, ever */
        q[k] = (int8_t)lrintf(t);                               /* round half to even, like np.rint */
    }
}

float re_absmax_scalar(const float *v, int n)
{
    float m = 0.0f;
    for (int k = 0; k < n; k++) m = fabsf(v[k]) > m ? fabsf(v[k]) : m;
    return m;
}

/* ---------------------------------------------------------------------------------------------------- */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))
#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

static inline int32_t load4(const int8_t *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

AVX512 INLINE void q8_block_vnni(const int8_t *w, int G, const int8_t *const *q, int32_t *const *acc,
                                 const int32_t *rowsum, int p0, const int np, const int ns)
{
    __m512i a[4][RE_MAX_NS];
    for (int p = 0; p < np; p++)
        for (int j = 0; j < ns; j++) a[p][j] = _mm512_setzero_si512();
    const __m512i bias128 = _mm512_set1_epi32((int)0x80808080u);
    for (int g = 0; g < G; g++) {
        __m512i xg[RE_MAX_NS]; /* q_j[4g..4g+3] + 128 as unsigned bytes, in every lane */
        for (int j = 0; j < ns; j++) xg[j] = _mm512_xor_si512(_mm512_set1_epi32(load4(q[j] + 4 * g)), bias128);
        for (int p = 0; p < np; p++) {
            const __m512i wv = _mm512_loadu_si512((const void *)(w + ((size_t)p * G + g) * 64));
            for (int j = 0; j < ns; j++) a[p][j] = _mm512_dpbusd_epi32(a[p][j], xg[j], wv);
        }
    }
    for (int p = 0; p < np; p++) {
        const __m512i off = _mm512_slli_epi32(_mm512_loadu_si512((const void *)(rowsum + (p0 + p) * RE_P)), 7);
        for (int j = 0; j < ns; j++)
            _mm512_storeu_si512((void *)(acc[j] + (p0 + p) * RE_P), _mm512_sub_epi32(a[p][j], off));
    }
}

AVX512 void re_q8_matvec_vnni(const re_packed *W, const int8_t *const *q, int32_t *const *acc, int ns)
{
    const int G = W->kq / RE_KG;
    for (int p0 = 0; p0 < W->panels; p0 += 4) {
        const int np = W->panels - p0 < 4 ? W->panels - p0 : 4;
        const int8_t *w = W->wq + (size_t)p0 * G * 64;
#define CALL(a_, b_) q8_block_vnni(w, G, q, acc, W->rowsum, p0, a_, b_)
        RE_BLOCK4(np, ns, CALL)
#undef CALL
    }
}

AVX2 INLINE void q8_panel_avx2(const int8_t *w, int G, const int8_t *const *q, int32_t *const *acc, int p,
                               const int ns)
{
    __m256i a[2][RE_MAX_NS]; /* (half of the panel, stream) */
    for (int j = 0; j < ns; j++) a[0][j] = a[1][j] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int g = 0; g < G; g++) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(w + (size_t)g * 64));
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + (size_t)g * 64 + 32));
        for (int j = 0; j < ns; j++) {
            const __m256i xg = _mm256_set1_epi32(load4(q[j] + 4 * g));
            const __m256i ax = _mm256_abs_epi8(xg); /* |q| <= 127, unsigned operand */
            const __m256i p0 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w0, xg));
            const __m256i p1 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w1, xg));
            a[0][j] = _mm256_add_epi32(a[0][j], _mm256_madd_epi16(p0, ones));
            a[1][j] = _mm256_add_epi32(a[1][j], _mm256_madd_epi16(p1, ones));
        }
    }
    for (int j = 0; j < ns; j++) {
        _mm256_storeu_si256((__m256i *)(acc[j] + p * RE_P), a[0][j]);
        _mm256_storeu_si256((__m256i *)(acc[j] + p * RE_P + 8), a[1][j]);
    }
}

AVX2 void re_q8_matvec_avx2(const re_packed *W, const int8_t *const *q, int32_t *const *acc, int ns)
{
    const int G = W->kq / RE_KG;
    for (int p = 0; p < W->panels; p++) {
        const int8_t *w = W->wq + (size_t)p * G * 64;
        switch (ns) {
        case 1: q8_panel_avx2(w, G, q, acc, p, 1); break;
        case 2: q8_panel_avx2(w, G, q, acc, p, 2); break;
        case 3: q8_panel_avx2(w, G, q, acc, p, 3); break;
        default: q8_panel_avx2(w, G, q, acc, p, 4); break;
        }
    }
}

AVX2 void re_quantize_avx2(const float *v, int n, float inv, int8_t *q)
{
    const __m256 s = _mm256_set1_ps(inv), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(v + k), s);
        t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
        const __m256i i32 = _mm256_cvtps_epi32(t); /* round half to even (MXCSR default) */
        const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
        _mm_storel_epi64((__m128i *)(q + k), _mm_packs_epi16(i16, i16));
    }
    re_quantize_scalar(v + k, n - k, inv, q + k);
}

AVX2 float re_absmax_avx2(const float *v, int n)
{
    const __m256 mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 m = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= n; k += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(v + k), mask));
    float t[8], r = re_absmax_scalar(v + k, n - k);
    _mm256_storeu_ps(t, m);
    for (int i = 0; i < 8; i++) r = t[i] > r ? t[i] : r;
    return r;
}
#endif

/* ---------------------------------------------------------------------------------------------------- */
#if defined(__aarch64__)
#include <arm_neon.h>
#define INLINE static inline __attribute__((always_inline))

static inline int32_t load4(const int8_t *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

#define DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))

DOTPROD INLINE void q8_panel_sdot(const int8_t *w, int G, const int8_t *const *q, int32_t *const *acc, int p,
                                  const int ns)
{
    int32x4_t a[4][RE_MAX_NS];
    for (int t = 0; t < 4; t++)
        for (int j = 0; j < ns; j++) a[t][j] = vdupq_n_s32(0);
    int g = 0;
    for (; g + 4 <= G; g += 4) { /* 4 groups: q_j[4g..4g+15] in one register, sdot by 32-bit lane */
        int8x16_t xg[RE_MAX_NS];
        for (int j = 0; j < ns; j++) xg[j] = vld1q_s8(q[j] + 4 * g);
#define SDOT_LANE(u)                                                                                       \
    do {                                                                                                   \
        const int8x16x4_t wv = vld1q_s8_x4(w + (size_t)(g + (u)) * 64);                                   \
        for (int j = 0; j < ns; j++)                                                                       \
            for (int t = 0; t < 4; t++) a[t][j] = vdotq_laneq_s32(a[t][j], wv.val[t], xg[j], (u));        \
    } while (0)
        SDOT_LANE(0);
        SDOT_LANE(1);
        SDOT_LANE(2);
        SDOT_LANE(3);
#undef SDOT_LANE
    }
    for (; g < G; g++) {
        const int8x16x4_t wv = vld1q_s8_x4(w + (size_t)g * 64);
        for (int j = 0; j < ns; j++) {
            const int8x16_t xg = vreinterpretq_s8_s32(vdupq_n_s32(load4(q[j] + 4 * g)));
            for (int t = 0; t < 4; t++) a[t][j] = vdotq_s32(a[t][j], wv.val[t], xg);
        }
    }
    for (int t = 0; t < 4; t++)
        for (int j = 0; j < ns; j++) vst1q_s32(acc[j] + p * RE_P + 4 * t, a[t][j]);
}

DOTPROD void re_q8_matvec_sdot(const re_packed *W, const int8_t *const *q, int32_t *const *acc, int ns)
{
    const int G = W->kq / RE_KG;
    for (int p = 0; p < W->panels; p++) {
        const int8_t *w = W->wq + (size_t)p * G * 64;
        switch (ns) {
        case 1: q8_panel_sdot(w, G, q, acc, p, 1); break;
        case 2: q8_panel_sdot(w, G, q, acc, p, 2); break;
        case 3: q8_panel_sdot(w, G, q, acc, p, 3); break;
        default: q8_panel_sdot(w, G, q, acc, p, 4); break;
        }
    }
}

/* plain NEON (Cortex-A53/A72): smull of 4 rows x 4 columns against the group, the next group's products added
 * in int16 with smlal (|sum of 2| <= 2 * 128 * 127 < 2^15), then sadalp into int32 */
INLINE void q8_panel_neon(const int8_t *w, int G, const int8_t *q, int32_t *acc, int p)
{
    int32x4_t a[8]; /* a[2t] = [r 4t: cols 01, 23 | r 4t+1: 01, 23], a[2t+1] the same for rows 4t+2, 4t+3 */
    for (int t = 0; t < 8; t++) a[t] = vdupq_n_s32(0);
    int g = 0;
    for (; g + 2 <= G; g += 2) {
        const int8x16x4_t u = vld1q_s8_x4(w + (size_t)g * 64), v = vld1q_s8_x4(w + (size_t)g * 64 + 64);
        const int8x16_t xu = vreinterpretq_s8_s32(vdupq_n_s32(load4(q + 4 * g)));
        const int8x16_t xv = vreinterpretq_s8_s32(vdupq_n_s32(load4(q + 4 * g + 4)));
        for (int t = 0; t < 4; t++) {
            const int16x8_t lo = vmlal_s8(vmull_s8(vget_low_s8(u.val[t]), vget_low_s8(xu)), vget_low_s8(v.val[t]),
                                          vget_low_s8(xv));
            const int16x8_t hi = vmlal_high_s8(vmull_high_s8(u.val[t], xu), v.val[t], xv);
            a[2 * t] = vpadalq_s16(a[2 * t], lo);
            a[2 * t + 1] = vpadalq_s16(a[2 * t + 1], hi);
        }
    }
    if (g < G) {
        const int8x16x4_t u = vld1q_s8_x4(w + (size_t)g * 64);
        const int8x16_t xu = vreinterpretq_s8_s32(vdupq_n_s32(load4(q + 4 * g)));
        for (int t = 0; t < 4; t++) {
            a[2 * t] = vpadalq_s16(a[2 * t], vmull_s8(vget_low_s8(u.val[t]), vget_low_s8(xu)));
            a[2 * t + 1] = vpadalq_s16(a[2 * t + 1], vmull_high_s8(u.val[t], xu));
        }
    }
    for (int t = 0; t < 4; t++) /* rows 4t..4t+3 */
        vst1q_s32(acc + p * RE_P + 4 * t, vpaddq_s32(a[2 * t], a[2 * t + 1]));
}

void re_q8_matvec_neon(const re_packed *W, const int8_t *const *q, int32_t *const *acc, int ns)
{
    const int G = W->kq / RE_KG;
    for (int p = 0; p < W->panels; p++)
        for (int j = 0; j < ns; j++) q8_panel_neon(W->wq + (size_t)p * G * 64, G, q[j], acc[j], p);
}

void re_quantize_neon(const float *v, int n, float inv, int8_t *q)
{
    const float32x4_t s = vdupq_n_f32(inv), hi = vdupq_n_f32(127.0f), lo = vdupq_n_f32(-127.0f);
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const float32x4_t a = vminq_f32(vmaxq_f32(vmulq_f32(vld1q_f32(v + k), s), lo), hi);
        const float32x4_t b = vminq_f32(vmaxq_f32(vmulq_f32(vld1q_f32(v + k + 4), s), lo), hi);
        const int16x8_t h = vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(a)), vqmovn_s32(vcvtnq_s32_f32(b)));
        vst1_s8(q + k, vqmovn_s16(h)); /* vcvtnq: round to nearest, ties to even */
    }
    re_quantize_scalar(v + k, n - k, inv, q + k);
}

float re_absmax_neon(const float *v, int n)
{
    float32x4_t m = vdupq_n_f32(0.0f);
    int k = 0;
    for (; k + 4 <= n; k += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(v + k)));
    const float r = re_absmax_scalar(v + k, n - k), t = vmaxvq_f32(m);
    return t > r ? t : r;
}
#endif
