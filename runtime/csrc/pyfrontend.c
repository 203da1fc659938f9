/* pyfrontend.c - the compiled front end (frontend.h) in rnnedge.runtime._kernel; #included by pymod.c so
 * that push_step can step a Stream in the same C call.
 *
 *   f = _kernel.Frontend(win, hop, n_fft, n_mels, n_out, log_floor, preemphasis, window, mel, dct|None)
 *   k = f.push(pcm, feats)             pcm int16 or float32 buffer -> feats (>= k, n_out) float32
 *   k = f.push_step(stream, pcm, ys)   the same, then stream.step on each new frame -> ys (>= k, O)
 *   f.reset()
 * One call per push (not per frame); the GIL is released while it works. The caller sizes the output for
 * max_frames(n) = (n + win_length) / hop_length + 1 rows; a smaller one raises before anything changes.
 */
#include "frontend.h"

typedef struct {
    PyObject_HEAD re_frontend *f;
    int win, hop, n_out;
    float *feat; /* (n_out,) scratch for push_step */
} FrontendObject;

static void frontend_dealloc(FrontendObject *self)
{
    re_frontend_free(self->f);
    PyMem_Free(self->feat);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int frontend_init(FrontendObject *self, PyObject *args, PyObject *kw)
{
    re_frontend_desc d = {0};
    PyObject *window, *mel, *dct;
    if (!PyArg_ParseTuple(args, "iiiiiffOOO", &d.win_length, &d.hop_length, &d.n_fft, &d.n_mels, &d.n_out,
                          &d.log_floor, &d.preemphasis, &window, &mel, &dct))
        return -1;
    if (d.n_fft < 16 || d.n_fft > (1 << 16) || d.n_mels < 1 || d.n_out < 1 || d.win_length < 1) {
        PyErr_SetString(PyExc_ValueError, "Frontend: bad sizes");
        return -1;
    }
    Py_buffer wv, mv, dv;
    int held_d = 0, rc = -1;
    if (get_array(window, &wv, d.win_length, 4, "window") != 1) return -1;
    if (get_array(mel, &mv, (Py_ssize_t)d.n_mels * (d.n_fft / 2 + 1), 4, "mel") != 1) goto free_w;
    if ((held_d = get_array(dct, &dv, (Py_ssize_t)d.n_out * d.n_mels, 4, "dct")) < 0) goto free_m;
    d.window = wv.buf, d.mel = mv.buf, d.dct = held_d ? dv.buf : NULL;
    const char *err = NULL;
    re_frontend_free(self->f);
    PyMem_Free(self->feat);
    self->f = re_frontend_new(&d, &err);
    self->feat = PyMem_Malloc(sizeof(float) * (size_t)d.n_out);
    if (!self->f || !self->feat) {
        PyErr_SetString(PyExc_ValueError, err ? err : "out of memory");
    } else {
        self->win = d.win_length, self->hop = d.hop_length, self->n_out = d.n_out;
        rc = 0;
    }
    if (held_d) PyBuffer_Release(&dv);
free_m:
    PyBuffer_Release(&mv);
free_w:
    PyBuffer_Release(&wv);
    return rc;
}

/* pcm: a 1-D int16 ('h') or finite float32 ('f') buffer -> (data, n, kind); -1 raised */
static int pcm_buffer(PyObject *o, Py_buffer *v, int *kind)
{
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *fmt = v->format ? v->format : "B";
    if (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@') fmt++;
    if (v->itemsize == 2 && fmt[0] == 'h' && !fmt[1]) {
        *kind = RE_PCM_S16;
        return 0;
    }
    if (v->itemsize == 4 && fmt[0] == 'f' && !fmt[1]) {
        *kind = RE_PCM_F32;
        if (all_finite(v->buf, v->len / 4)) return 0;
        PyErr_SetString(PyExc_ValueError, "PCM samples contain NaN/Inf");
    } else {
        PyErr_Format(PyExc_TypeError, "PCM samples must be int16 or float32, got format '%s'", v->format);
    }
    PyBuffer_Release(v);
    return -1;
}

/* the shared body of push and push_step: stream NULL = write features, else step it and write outputs */
static PyObject *frontend_run(FrontendObject *self, StreamObject *stream, PyObject *pcm, PyObject *out)
{
    Py_buffer pv, ov;
    int kind;
    if (pcm_buffer(pcm, &pv, &kind) < 0) return NULL;
    if (PyObject_GetBuffer(out, &ov, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return PyBuffer_Release(&pv), NULL;
    const Py_ssize_t n = pv.len / pv.itemsize, width = stream ? stream->model->O : self->n_out;
    const Py_ssize_t bound = (n + self->win) / self->hop + 1;
    if (ov.len < bound * width * 4) {
        PyBuffer_Release(&pv), PyBuffer_Release(&ov);
        return PyErr_Format(PyExc_ValueError, "push: the output needs room for %zd rows of %zd floats", bound, width);
    }
    const char *x = pv.buf;
    float *y = ov.buf;
    Py_ssize_t used = 0, k = 0;
    re_stream *s = stream ? stream->s : NULL;
    Py_BEGIN_ALLOW_THREADS while (used < n)
    {
        int ready;
        used += (Py_ssize_t)re_frontend_feed(self->f, x + used * pv.itemsize, (size_t)(n - used), kind,
                                             s ? self->feat : y + k * width, &ready);
        if (ready) {
            if (s) re_step(s, self->feat, y + k * width);
            k++;
        }
    }
    Py_END_ALLOW_THREADS if (stream) stream->steps += k;
    PyBuffer_Release(&pv), PyBuffer_Release(&ov);
    return PyLong_FromSsize_t(k);
}

static PyObject *frontend_push(FrontendObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "push(pcm, feats)");
    return frontend_run(self, NULL, args[0], args[1]);
}

static PyObject *frontend_push_step(FrontendObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) return PyErr_Format(PyExc_TypeError, "push_step(stream, pcm, ys)");
    if (!PyObject_TypeCheck(args[0], &StreamType)) return PyErr_Format(PyExc_TypeError, "push_step: not a Stream");
    StreamObject *s = (StreamObject *)args[0];
    if (s->model->I != self->n_out)
        return PyErr_Format(PyExc_ValueError, "push_step: the front end gives %d values, the model takes %d",
                            self->n_out, s->model->I);
    return frontend_run(self, s, args[1], args[2]);
}

static PyObject *frontend_reset(FrontendObject *self, PyObject *unused)
{
    re_frontend_reset(self->f);
    Py_RETURN_NONE;
}

static PyMethodDef frontend_methods[] = {
    {"push", (PyCFunction)(void (*)(void))frontend_push, METH_FASTCALL, "push(pcm, feats) -> frames written"},
    {"push_step", (PyCFunction)(void (*)(void))frontend_push_step, METH_FASTCALL,
     "push_step(stream, pcm, ys) -> steps taken"},
    {"reset", (PyCFunction)frontend_reset, METH_NOARGS, "forget the samples of the unfinished frame"},
    {NULL}};

static PyTypeObject FrontendType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rnnedge.runtime._kernel.Frontend",
    .tp_basicsize = sizeof(FrontendObject),
    .tp_dealloc = (destructor)frontend_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Frontend(win, hop, n_fft, n_mels, n_out, log_floor, preemphasis, window, mel, dct): log-mel / MFCC",
    .tp_methods = frontend_methods,
    .tp_init = (initproc)frontend_init,
    .tp_new = PyType_GenericNew,
};

static int add_frontend_type(PyObject *m)
{
    if (PyType_Ready(&FrontendType) < 0) return -1;
    Py_INCREF(&FrontendType);
    return PyModule_AddObject(m, "Frontend", (PyObject *)&FrontendType);
}
