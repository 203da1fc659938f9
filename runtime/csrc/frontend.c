/* frontend.c - see frontend.h. */
#include "frontend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double PI = 3.14159265358979323846;

struct re_frontend {
    re_frontend_desc d;
    int M;              /* complex FFT size, n_fft / 2 */
    float *buf;         /* (win_length,) samples of the frame being filled */
    int fill, skip;     /* samples in buf; samples still to drop (hop > win) */
    float last;         /* previous raw sample (pre-emphasis) */
    float *window;      /* (win_length,) */
    int *rev;           /* (M,) bit reversal */
    float *tw_re, *tw_im; /* per stage: stage with half-size h has its h twiddles at offset h - 1 */
    float *rot_re, *rot_im; /* (M + 1,) exp(-2 pi i k / n_fft): the real-FFT combining pass */
    float *re, *im;     /* (M,) work */
    float *padded;      /* (n_fft,) windowed frame; [win_length, n_fft) stays zero */
    float *power;       /* (M + 1,) */
    int *band_start, *band_len, *band_off; /* sparse mel: band j = weights[off .. off + len) on bins start.. */
    float *weights;
    float *logmel;      /* (n_mels,) */
    float *dct;         /* (n_out, n_mels) or NULL */
};

static void *zalloc(size_t n) { return calloc(1, n ? n : 1); }

void re_frontend_free(re_frontend *f)
{
    if (!f) return;
    free(f->buf), free(f->window), free(f->rev), free(f->tw_re), free(f->tw_im), free(f->rot_re);
    free(f->rot_im), free(f->re), free(f->im), free(f->padded), free(f->power), free(f->band_start), free(f->band_len);
    free(f->band_off), free(f->weights), free(f->logmel), free(f->dct);
    free(f);
}

re_frontend *re_frontend_new(const re_frontend_desc *d, const char **err)
{
    const int N = d->n_fft, M = N / 2, B = N / 2 + 1;
    if (N < 16 || (N & (N - 1)) || d->win_length < 1 || d->win_length > N || d->hop_length < 1 || d->n_mels < 1 ||
        d->n_out < 1 || (!d->dct && d->n_out != d->n_mels) || !d->window || !d->mel || !(d->log_floor > 0)) {
        *err = "bad front end description (n_fft a power of two >= 16, 1 <= win_length <= n_fft, hop >= 1)";
        return NULL;
    }
    re_frontend *f = zalloc(sizeof *f);
    if (!f) return *err = "out of memory", NULL;
    f->d = *d;
    f->M = M;
    int nnz = 0;
    for (int j = 0; j < d->n_mels; j++)
        for (int b = 0; b < B; b++) nnz += d->mel[(size_t)j * B + b] != 0.0f;
    f->buf = zalloc(sizeof(float) * d->win_length);
    f->window = zalloc(sizeof(float) * d->win_length);
    f->rev = zalloc(sizeof(int) * M);
    f->tw_re = zalloc(sizeof(float) * M), f->tw_im = zalloc(sizeof(float) * M);
    f->rot_re = zalloc(sizeof(float) * (M + 1)), f->rot_im = zalloc(sizeof(float) * (M + 1));
    f->re = zalloc(sizeof(float) * M), f->im = zalloc(sizeof(float) * M);
    f->padded = zalloc(sizeof(float) * N);
    f->power = zalloc(sizeof(float) * B);
    f->band_start = zalloc(sizeof(int) * d->n_mels), f->band_len = zalloc(sizeof(int) * d->n_mels);
    f->band_off = zalloc(sizeof(int) * d->n_mels);
    f->weights = zalloc(sizeof(float) * (nnz + B)); /* a band's span may hold interior zeros */
    f->logmel = zalloc(sizeof(float) * d->n_mels);
    if (d->dct) f->dct = zalloc(sizeof(float) * d->n_out * d->n_mels);
    if (!f->buf || !f->window || !f->rev || !f->tw_re || !f->tw_im || !f->rot_re || !f->rot_im || !f->re || !f->im || !f->padded ||
        !f->power || !f->band_start || !f->band_len || !f->band_off || !f->weights || !f->logmel ||
        (d->dct && !f->dct)) {
        re_frontend_free(f);
        return *err = "out of memory", NULL;
    }
    memcpy(f->window, d->window, sizeof(float) * d->win_length);
    if (d->dct) memcpy(f->dct, d->dct, sizeof(float) * d->n_out * d->n_mels);
    f->d.window = f->window, f->d.mel = NULL, f->d.dct = f->dct;
    int bits = 0;
    while ((1 << bits) < M) bits++;
    for (int k = 0; k < M; k++) {
        int r = 0;
        for (int b = 0; b < bits; b++) r |= ((k >> b) & 1) << (bits - 1 - b);
        f->rev[k] = r;
    }
    for (int h = 1; h < M; h *= 2) /* stage of half-size h: W_{2h}^j = exp(-pi i j / h), j < h */
        for (int j = 0; j < h; j++) {
            const double a = -PI * j / h;
            f->tw_re[h - 1 + j] = (float)cos(a), f->tw_im[h - 1 + j] = (float)sin(a);
        }
    for (int k = 0; k <= M; k++) {
        const double a = -2.0 * PI * k / N;
        f->rot_re[k] = (float)cos(a), f->rot_im[k] = (float)sin(a);
    }
    int off = 0;
    for (int j = 0; j < d->n_mels; j++) {
        const float *row = d->mel + (size_t)j * B;
        int lo = 0, hi = B;
        while (lo < B && row[lo] == 0.0f) lo++;
        while (hi > lo && row[hi - 1] == 0.0f) hi--;
        f->band_start[j] = lo, f->band_len[j] = hi - lo, f->band_off[j] = off;
        memcpy(f->weights + off, row + lo, sizeof(float) * (hi - lo));
        off += hi - lo;
    }
    re_frontend_reset(f);
    return f;
}

void re_frontend_reset(re_frontend *f)
{
    f->fill = 0, f->skip = 0, f->last = 0.0f;
}

int re_frontend_out_size(const re_frontend *f) { return f->d.n_out; }

/* 4 floats in one register: SSE on x86-64, NEON on aarch64, plain code elsewhere (GCC / clang vector
 * extension); memcpy loads and stores need no alignment */
typedef float v4 __attribute__((vector_size(16)));
static inline v4 ld(const float *p)
{
    v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void st(float *p, v4 v) { memcpy(p, &v, sizeof v); }

/* x86-64: one AVX2 build of the hot loops beside the portable one, picked at load time (ifunc) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RE_NO_CLONES)
#define RE_HOT __attribute__((target_clones("avx2", "default")))
#else
#define RE_HOT
#endif

/* In-place complex FFT of M points, input in bit-reversed order (decimation in time). Two radix-2 stages
 * (half-sizes h and 2h) are done in one pass over the data, as a radix-4 butterfly: a quarter of the twiddle
 * products are a multiply by -i, and there are half as many passes. */
RE_HOT static void fft(const re_frontend *f, float *restrict re, float *restrict im)
{
    const int M = f->M;
    int h = 1;
    if (M >= 4) { /* half-sizes 1 and 2: every twiddle is 1 or -i, so no products */
        for (int s = 0; s < M; s += 4) {
            const float b0r = re[s] + re[s + 1], b0i = im[s] + im[s + 1];
            const float b1r = re[s] - re[s + 1], b1i = im[s] - im[s + 1];
            const float b2r = re[s + 2] + re[s + 3], b2i = im[s + 2] + im[s + 3];
            const float b3r = re[s + 2] - re[s + 3], b3i = im[s + 2] - im[s + 3];
            re[s] = b0r + b2r, im[s] = b0i + b2i, re[s + 2] = b0r - b2r, im[s + 2] = b0i - b2i;
            re[s + 1] = b1r + b3i, im[s + 1] = b1i - b3r, re[s + 3] = b1r - b3i, im[s + 3] = b1i + b3r;
        }
        h = 4;
    }
    for (; 4 * h <= M; h *= 4) { /* h >= 4 here: 4 butterflies per vector */
        const float *w1r = f->tw_re + h - 1, *w1i = f->tw_im + h - 1;         /* W_2h^j */
        const float *w2r = f->tw_re + 2 * h - 1, *w2i = f->tw_im + 2 * h - 1; /* W_4h^j */
        for (int s = 0; s < M; s += 4 * h) {
            float *r0 = re + s, *r1 = r0 + h, *r2 = r1 + h, *r3 = r2 + h;
            float *i0 = im + s, *i1 = i0 + h, *i2 = i1 + h, *i3 = i2 + h;
            for (int j = 0; j < h; j += 4) {
                const v4 ar_ = ld(r1 + j), ai_ = ld(i1 + j), cr_ = ld(r3 + j), ci_ = ld(i3 + j);
                const v4 wr = ld(w1r + j), wi = ld(w1i + j), xr = ld(w2r + j), xi = ld(w2i + j);
                const v4 ar = wr * ar_ - wi * ai_, ai = wr * ai_ + wi * ar_;
                const v4 cr = wr * cr_ - wi * ci_, ci = wr * ci_ + wi * cr_;
                const v4 p0r = ld(r0 + j), p0i = ld(i0 + j), p2r = ld(r2 + j), p2i = ld(i2 + j);
                const v4 b0r = p0r + ar, b0i = p0i + ai, b1r = p0r - ar, b1i = p0i - ai;
                const v4 b2r = p2r + cr, b2i = p2i + ci, b3r = p2r - cr, b3i = p2i - ci;
                const v4 ur = xr * b2r - xi * b2i, ui = xr * b2i + xi * b2r;
                const v4 vr = xr * b3i + xi * b3r, vi = xi * b3i - xr * b3r; /* W_4h^(j+h) = -i W_4h^j */
                st(r0 + j, b0r + ur), st(i0 + j, b0i + ui), st(r2 + j, b0r - ur), st(i2 + j, b0i - ui);
                st(r1 + j, b1r + vr), st(i1 + j, b1i + vi), st(r3 + j, b1r - vr), st(i3 + j, b1i - vi);
            }
        }
    }
    if (h < M) { /* log2 M odd: one radix-2 stage of half-size h = M / 2 >= 4 remains */
        const float *wr_ = f->tw_re + h - 1, *wi_ = f->tw_im + h - 1;
        for (int j = 0; j < h; j += 4) {
            const v4 wr = ld(wr_ + j), wi = ld(wi_ + j), br = ld(re + h + j), bi = ld(im + h + j);
            const v4 tr = wr * br - wi * bi, ti = wr * bi + wi * br, ar = ld(re + j), ai = ld(im + j);
            st(re + h + j, ar - tr), st(im + h + j, ai - ti), st(re + j, ar + tr), st(im + j, ai + ti);
        }
    }
}

/* X[k] = E[k] + exp(-2 pi i k / N) O[k], E = (Z[k] + conj Z[M-k]) / 2, O = -i (Z[k] - conj Z[M-k]) / 2;
 * P[k] = |X[k]|^2 for k = 0..M (Z[M] = Z[0]) */
RE_HOT static void real_power(const re_frontend *f, const float *restrict re, const float *restrict im,
                              float *restrict P)
{
    const int M = f->M;
    const float *restrict wr = f->rot_re, *restrict wi = f->rot_im;
    P[0] = (re[0] + im[0]) * (re[0] + im[0]);
    P[M] = (re[0] - im[0]) * (re[0] - im[0]);
    for (int k = 1; k < M; k++) {
        const float zr = re[k], zi = im[k], cr = re[M - k], ci = -im[M - k];
        const float er = 0.5f * (zr + cr), ei = 0.5f * (zi + ci);
        const float or_ = 0.5f * (zi - ci), oi = -0.5f * (zr - cr);
        const float xr = er + wr[k] * or_ - wi[k] * oi, xi = ei + wr[k] * oi + wi[k] * or_;
        P[k] = xr * xr + xi * xi;
    }
}

void re_frontend_frame(re_frontend *f, const float *frame, float *feat)
{
    const int M = f->M, W = f->d.win_length;
    float *re = f->re, *im = f->im, *P = f->power;
    /* z[k] = x[2k] + i x[2k+1] (windowed, zero-padded to n_fft: padded's tail stays zero), loaded in
     * bit-reversed order */
    float *restrict x = f->padded;
    for (int n = 0; n < W; n++) x[n] = frame[n] * f->window[n];
    for (int k = 0; k < M; k++) {
        const int r = f->rev[k];
        re[k] = x[2 * r], im[k] = x[2 * r + 1];
    }
    fft(f, re, im);
    real_power(f, re, im, P);
    const int nm = f->d.n_mels;
    float *out = f->dct ? f->logmel : feat;
    for (int j = 0; j < nm; j++) {
        const float *w = f->weights + f->band_off[j], *p = P + f->band_start[j];
        float acc = 0.0f;
        for (int b = 0; b < f->band_len[j]; b++) acc += w[b] * p[b];
        out[j] = logf(acc > f->d.log_floor ? acc : f->d.log_floor);
    }
    if (f->dct)
        for (int i = 0; i < f->d.n_out; i++) {
            const float *row = f->dct + (size_t)i * nm;
            float acc = 0.0f;
            for (int j = 0; j < nm; j++) acc += row[j] * f->logmel[j];
            feat[i] = acc;
        }
}

size_t re_frontend_feed(re_frontend *f, const void *x, size_t n, int pcm, float *feat, int *ready)
{
    const int W = f->d.win_length, H = f->d.hop_length;
    const float a = f->d.preemphasis;
    const short *x16 = x;
    const float *x32 = x;
    size_t i = 0;
    *ready = 0;
    while (i < n && f->skip > 0) { /* hop > win: samples between frames still pass through pre-emphasis */
        f->last = pcm == RE_PCM_S16 ? x16[i] * (1.0f / 32768.0f) : x32[i];
        i++, f->skip--;
    }
    while (i < n && f->fill < W) {
        const float v = pcm == RE_PCM_S16 ? x16[i] * (1.0f / 32768.0f) : x32[i];
        f->buf[f->fill++] = a != 0.0f ? v - a * f->last : v;
        f->last = v;
        i++;
    }
    if (f->fill < W) return i;
    re_frontend_frame(f, f->buf, feat);
    *ready = 1;
    if (H < W) {
        memmove(f->buf, f->buf + H, sizeof(float) * (W - H));
        f->fill = W - H;
    } else {
        f->fill = 0, f->skip = H - W;
    }
    return i;
}
