/* alloc_probe.c - proves that a step allocates nothing: links the C core with malloc/calloc/aligned_alloc/
 * free wrapped (-Wl,--wrap=...), builds a model and a stream, then counts calls during 1000 steps.
 * Prints "allocations_per_1000_steps N" for every cell (GRU_LBR0 and an LSTM with proj_size included) x
 * quantisation. Built and run by tests/test_kernel.py. */
#include <stdio.h>
#include <stdlib.h>

#include "rnnedge.h"

static long calls;
void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_aligned_alloc(size_t a, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n) { return calls++, __real_malloc(n); }
void *__wrap_calloc(size_t a, size_t b) { return calls++, __real_calloc(a, b); }
void *__wrap_aligned_alloc(size_t a, size_t n) { return calls++, __real_aligned_alloc(a, n); }
void __wrap_free(void *p) { calls++, __real_free(p); }

int main(void)
{
    enum { I = 7, H = 24, L = 2, O = 3, P = 9 };
    static float w[4 * H * H], b[4 * H], s[4 * H];
    static int8_t q[4 * H * H];
    for (int i = 0; i < 4 * H * H; i++) w[i] = (float)((i * 37) % 17 - 8) / 40.0f, q[i] = (int8_t)((i * 37) % 255 - 127);
    for (int i = 0; i < 4 * H; i++) b[i] = 0.01f * (float)(i % 5), s[i] = 0.002f;
    float x[I] = {0.5f, -1.0f, 2.0f, 0.0f, 1.5f, -0.25f, 3.0f}, y[O];
    int failed = 0;
    for (int variant = RE_RNN_TANH; variant <= RE_GRU_LBR0 + 1; variant++) /* the last: LSTM, proj_size P */
        for (int quant = RE_F32; quant <= RE_Q8_WEIGHT; quant++) {
            const int cell = variant > RE_GRU_LBR0 ? RE_LSTM : variant, proj = variant > RE_GRU_LBR0 ? P : 0;
            re_model_desc d = {cell, quant, I, H, L, O, {{0}}, {{0}}, {0}, proj, {{0}}, {0}};
            const re_matrix_desc m = {quant == RE_F32 ? w : NULL, quant == RE_F32 ? NULL : q, s, b, 0.05f};
            for (int l = 0; l < L; l++) d.ih[l] = d.hh[l] = d.hr[l] = m, d.inner_scale[l] = 0.05f;
            d.head = m;
            const char *err;
            re_model *model = re_model_new(&d, &err);
            re_stream *st = model ? re_stream_new(model) : NULL;
            if (!st) {
                printf("cannot build cell %d quant %d: %s\n", cell, quant, model ? "stream" : err);
                return 2;
            }
            re_step(st, x, y); /* warm */
            const long before = calls;
            for (int t = 0; t < 1000; t++) re_step(st, x, y);
            printf("cell %d proj %d quant %d isa %s allocations_per_1000_steps %ld\n", cell, proj, quant,
                   re_model_isa(model), calls - before);
            failed |= calls != before;
            re_stream_free(st);
            re_model_free(model);
        }
    return failed;
}
