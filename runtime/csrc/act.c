/* act.c - tanh for every instruction set (sigmoid(a) = 0.5 tanh(a / 2) + 0.5 is built on it in model.c).
 *
 * tanh(x) ~= x p(x^2) / q(x^2) on x clamped to [-9, 9] (beyond, tanh is 1 to float precision): the
 * degree 13/6 rational minimax fit Eigen and XLA use for float. Measured max |error| against float64 tanh
 * on a dense grid (tests/test_kernel.py): 2.7e-7 with FMA (AVX2, AVX-512, NEON), 3.9e-7 scalar, both near
 * |x| = 6; the bound tested is 5e-7. The result is clamped to [-1, 1].
 */
#include "kernel.h"

#define A1 4.89352455891786e-03f
#define A3 6.37261928875436e-04f
#define A5 1.48572235717979e-05f
#define A7 5.12229709037114e-08f
#define A9 -8.60467152213735e-11f
#define A11 2.00018790482477e-13f
#define A13 -2.76076847742355e-16f
#define B0 4.89352518554385e-03f
#define B2 2.26843463243900e-03f
#define B4 1.18534705686654e-04f
#define B6 1.19825839466702e-06f

static inline float tanh1(float x)
{
    x = x > 9.0f ? 9.0f : (x < -9.0f ? -9.0f : x);
    const float x2 = x * x;
    const float p = ((((((A13 * x2 + A11) * x2 + A9) * x2 + A7) * x2 + A5) * x2 + A3) * x2 + A1) * x;
    const float q = ((B6 * x2 + B4) * x2 + B2) * x2 + B0;
    const float r = p / q;
    return r > 1.0f ? 1.0f : (r < -1.0f ? -1.0f : r);
}

void re_tanh_scalar(float *v, int n)
{
    for (int k = 0; k < n; k++) v[k] = tanh1(v[k]);
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))
#define AVX2 __attribute__((target("avx2,fma")))

AVX512 void re_tanh_avx512(float *v, int n)
{
    const __m512 lim = _mm512_set1_ps(9.0f), one = _mm512_set1_ps(1.0f);
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        const __m512 x = _mm512_max_ps(_mm512_min_ps(_mm512_loadu_ps(v + k), lim), _mm512_sub_ps(_mm512_setzero_ps(), lim));
        const __m512 x2 = _mm512_mul_ps(x, x);
        __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(A13), x2, _mm512_set1_ps(A11));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(A9));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(A7));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(A5));
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(A3));
        p = _mm512_mul_ps(_mm512_fmadd_ps(p, x2, _mm512_set1_ps(A1)), x);
        __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(B6), x2, _mm512_set1_ps(B4));
        q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(B2));
        q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(B0));
        const __m512 r = _mm512_div_ps(p, q);
        _mm512_storeu_ps(v + k, _mm512_max_ps(_mm512_min_ps(r, one), _mm512_sub_ps(_mm512_setzero_ps(), one)));
    }
    re_tanh_scalar(v + k, n - k);
}

AVX2 void re_tanh_avx2(float *v, int n)
{
    const __m256 lim = _mm256_set1_ps(9.0f), nlim = _mm256_set1_ps(-9.0f);
    const __m256 one = _mm256_set1_ps(1.0f), none = _mm256_set1_ps(-1.0f);
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 x = _mm256_max_ps(_mm256_min_ps(_mm256_loadu_ps(v + k), lim), nlim);
        const __m256 x2 = _mm256_mul_ps(x, x);
        __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(A13), x2, _mm256_set1_ps(A11));
        p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(A9));
        p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(A7));
        p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(A5));
        p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(A3));
        p = _mm256_mul_ps(_mm256_fmadd_ps(p, x2, _mm256_set1_ps(A1)), x);
        __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(B6), x2, _mm256_set1_ps(B4));
        q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(B2));
        q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(B0));
        _mm256_storeu_ps(v + k, _mm256_max_ps(_mm256_min_ps(_mm256_div_ps(p, q), one), none));
    }
    re_tanh_scalar(v + k, n - k);
}
#endif

#if defined(__aarch64__)
#include <arm_neon.h>

void re_tanh_neon(float *v, int n)
{
    const float32x4_t lim = vdupq_n_f32(9.0f), nlim = vdupq_n_f32(-9.0f);
    const float32x4_t one = vdupq_n_f32(1.0f), none = vdupq_n_f32(-1.0f);
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        const float32x4_t x = vmaxq_f32(vminq_f32(vld1q_f32(v + k), lim), nlim);
        const float32x4_t x2 = vmulq_f32(x, x);
        float32x4_t p = vfmaq_f32(vdupq_n_f32(A11), vdupq_n_f32(A13), x2);
        p = vfmaq_f32(vdupq_n_f32(A9), p, x2);
        p = vfmaq_f32(vdupq_n_f32(A7), p, x2);
        p = vfmaq_f32(vdupq_n_f32(A5), p, x2);
        p = vfmaq_f32(vdupq_n_f32(A3), p, x2);
        p = vmulq_f32(vfmaq_f32(vdupq_n_f32(A1), p, x2), x);
        float32x4_t q = vfmaq_f32(vdupq_n_f32(B4), vdupq_n_f32(B6), x2);
        q = vfmaq_f32(vdupq_n_f32(B2), q, x2);
        q = vfmaq_f32(vdupq_n_f32(B0), q, x2);
        vst1q_f32(v + k, vmaxq_f32(vminq_f32(vdivq_f32(p, q), one), none));
    }
    re_tanh_scalar(v + k, n - k);
}
#endif
