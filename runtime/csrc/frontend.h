/* frontend.h - the compiled audio front end: PCM in, one log-mel (or MFCC) vector per hop out.
 *
 *   re_frontend *f = re_frontend_new(&desc, &err);   // tables from runtime/frontend.py (one definition)
 *   used = re_frontend_feed(f, pcm, n, RE_PCM_S16, feat, &ready);   // stops after one completed frame
 *
 * Per frame (runtime/frontend.py is the reference): x[n] -= preemphasis * x[n-1]; frame of win_length
 * samples every hop_length; P = |rfft(frame * window, n_fft)|^2; mel = W P (W sparse: each band's non-zero
 * bins); out = ln(max(mel, log_floor)), then out = D out if a DCT is given.
 * The real FFT of n_fft points is a complex FFT of n_fft/2 points (radix-2, split re/im arrays, per-stage
 * twiddle tables) plus one combining pass. Everything is allocated in re_frontend_new: feeding allocates
 * nothing. C11, no third-party code.
 */
#ifndef RNNEDGE_FRONTEND_H
#define RNNEDGE_FRONTEND_H

#include <stddef.h>

enum re_pcm { RE_PCM_F32 = 0, RE_PCM_S16 = 1 };

typedef struct {
    int win_length, hop_length, n_fft, n_mels, n_out; /* n_out: n_mels (log-mel) or the DCT rows (MFCC) */
    float log_floor, preemphasis;
    const float *window; /* (win_length,) */
    const float *mel;    /* (n_mels, n_fft / 2 + 1), dense; kept sparse */
    const float *dct;    /* (n_out, n_mels) or NULL */
} re_frontend_desc;

typedef struct re_frontend re_frontend;

re_frontend *re_frontend_new(const re_frontend_desc *d, const char **err);
void re_frontend_free(re_frontend *f);
void re_frontend_reset(re_frontend *f);
int re_frontend_out_size(const re_frontend *f);

/* Take samples from x (n of them, int16 or float32 per `pcm`) until one frame completes or x runs out.
 * Returns how many samples were taken; *ready = 1 if a frame completed and feat (n_out,) holds it. */
size_t re_frontend_feed(re_frontend *f, const void *x, size_t n, int pcm, float *feat, int *ready);

/* The features of one frame of win_length raw samples (after pre-emphasis), without touching the stream. */
void re_frontend_frame(re_frontend *f, const float *frame, float *feat);

#endif
