/* pymod.c - rnnedge.runtime._kernel: a thin CPython layer over the C core (rnnedge.h).
 *
 *   m = _kernel.Model(cell, quant, I, H, L, O, mats[, P, inner_scales])
 *                                                      mats: [(f32, q8, scale, bias, act_scale)] for
 *                                                      ih_0, hh_0, ih_1, hh_1, ..., head (buffers or None),
 *                                                      then hr_0 .. hr_{L-1} when P (LSTM proj_size) > 0;
 *                                                      inner_scales: int8-static scales of the products
 *                                                      inside the cells (o tanh(c) | r h), one per layer
 *   s = m.stream();  y = s.step(x)                     x (I,) float32 -> new (O,) array; checked here
 *                                                      (an earlier output nobody references may be reused)
 *   s.run(seq, out)                                    (T, I) -> out (T, O), one call, GIL released
 *   s.state_view(layer, kind)                          writable memoryview of h (0, (P or H,)) or c (1, (H,))
 *   b = m.batch(n); b.step(X, Y)                       n streams, (n, I) -> (n, O)
 *
 * A sample that is not a finite float32 (I,) (or (1, I)) array goes to the Python checker configured with
 * _kernel.configure(coerce, not_finite, empty, dtype('float32')): coerce(x, I) converts or raises InputError with the runtime's own
 * messages, before any state changes. No numpy headers: arrays come from numpy.empty, data via buffers.
 * A step whose output or new state is not finite (overflowing weights or state) puts the state back as it
 * was before the call and raises through bad_output(what) (the runtime's OutputError): a stream never
 * carries NaN/Inf on.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "rnnedge.h"

/* set once by configure(); read-only afterwards */
static PyObject *coerce_fn, *not_finite_fn, *empty_fn, *float32, *bad_output_fn;

/* ==================================================================================================== */
/* Model */

typedef struct {
    PyObject_HEAD re_model *m;
    int I, O, H, L, cell;
    PyObject *keep; /* the weight buffers' owners (packing copies them, but keep the API honest) */
} ModelObject;

static void model_dealloc(ModelObject *self)
{
    re_model_free(self->m);
    Py_XDECREF(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* a C-contiguous buffer of `want` items of `itemsize` bytes, or None */
static int get_array(PyObject *o, Py_buffer *v, Py_ssize_t want, Py_ssize_t itemsize, const char *what)
{
    if (o == Py_None) return 0;
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (v->len != want * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", what, want * itemsize, v->len);
        PyBuffer_Release(v);
        return -1;
    }
    return 1;
}

static int model_init(ModelObject *self, PyObject *args, PyObject *kw)
{
    int cell, quant, I, H, L, O, P = 0;
    PyObject *mats, *inner = NULL;
    if (!PyArg_ParseTuple(args, "iiiiiiO!|iO", &cell, &quant, &I, &H, &L, &O, &PyList_Type, &mats, &P, &inner))
        return -1;
    const int n = 2 * L + 1 + (P ? L : 0);
    if (L < 1 || L > RE_MAX_LAYERS || P < 0 || P >= H || PyList_GET_SIZE(mats) != n) {
        PyErr_SetString(PyExc_ValueError, "mats must list ih, hh per layer, the head, then hr per layer if P");
        return -1;
    }
    re_model_desc d = {cell, quant, I, H, L, O, {{0}}, {{0}}, {0}, P, {{0}}, {0}};
    if (inner && inner != Py_None) {
        PyObject *seq = PySequence_Fast(inner, "inner_scales must be a sequence");
        if (!seq) return -1;
        const int bad = PySequence_Fast_GET_SIZE(seq) != L;
        for (int l = 0; l < L && !bad; l++) d.inner_scale[l] = (float)PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, l));
        Py_DECREF(seq);
        if (bad) return PyErr_SetString(PyExc_ValueError, "inner_scales needs one scale per layer"), -1;
        if (PyErr_Occurred()) return -1;
    }
    Py_buffer views[(3 * RE_MAX_LAYERS + 1) * 4];
    int held[(3 * RE_MAX_LAYERS + 1) * 4] = {0};
    const int G = (cell == RE_LSTM ? 4 : cell >= RE_GRU ? 3 : 1) * H; /* GRU_LBR0: 3H too */
    const int S = P ? P : H; /* the size of h */
    int rc = -1;
    for (int i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(mats, i);
        PyObject *f32, *q8, *scale, *bias;
        double act = 0.0;
        if (!PyArg_ParseTuple(t, "OOOOd", &f32, &q8, &scale, &bias, &act)) goto done;
        const int hr = i > 2 * L, head = i == 2 * L;
        const Py_ssize_t rows = hr ? P : head ? O : G, cols = hr ? H : (i == 0 ? I : S);
        re_matrix_desc *md = hr ? &d.hr[i - 2 * L - 1] : head ? &d.head : (i % 2 ? &d.hh[i / 2] : &d.ih[i / 2]);
        Py_buffer *v = views + 4 * i;
        int r;
        if ((r = get_array(f32, v + 0, rows * cols, 4, "f32")) < 0) goto done;
        held[4 * i + 0] = r, md->f32 = r ? v[0].buf : NULL;
        if ((r = get_array(q8, v + 1, rows * cols, 1, "q8")) < 0) goto done;
        held[4 * i + 1] = r, md->q8 = r ? v[1].buf : NULL;
        if ((r = get_array(scale, v + 2, rows, 4, "scale")) < 0) goto done;
        held[4 * i + 2] = r, md->scale = r ? v[2].buf : NULL;
        if ((r = get_array(bias, v + 3, rows, 4, "bias")) < 0) goto done;
        held[4 * i + 3] = r, md->bias = r ? v[3].buf : NULL;
        md->act_scale = (float)act;
    }
    const char *err = NULL;
    re_model *m = re_model_new(&d, &err);
    if (!m) {
        PyErr_Format(PyExc_ValueError, "cannot build the compiled model: %s", err);
        goto done;
    }
    re_model_free(self->m);
    self->m = m, self->I = I, self->O = O, self->H = H, self->L = L, self->cell = cell;
    rc = 0;
done:
    for (int i = 0; i < n * 4; i++)
        if (held[i]) PyBuffer_Release(&views[i]);
    return rc;
}

static PyObject *model_isa(ModelObject *self, void *c) { return PyUnicode_FromString(re_model_isa(self->m)); }
static PyObject *model_bytes(ModelObject *self, void *c) { return PyLong_FromSize_t(re_model_bytes(self->m)); }

static PyObject *new_stream(ModelObject *model);
static PyObject *new_batch(ModelObject *model, Py_ssize_t n);

static PyObject *model_stream(ModelObject *self, PyObject *unused) { return new_stream(self); }

static PyObject *model_batch(ModelObject *self, PyObject *arg)
{
    const Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > (1 << 20)) return PyErr_Format(PyExc_ValueError, "batch size must be 1..2**20, got %zd", n);
    return new_batch(self, n);
}

static PyObject *model_tanh(ModelObject *self, PyObject *arg) /* tests: this CPU's tanh, in place */
{
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS re_tanh(self->m, v.buf, (int)(v.len / 4));
    Py_END_ALLOW_THREADS PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

static PyMethodDef model_methods[] = {
    {"stream", (PyCFunction)model_stream, METH_NOARGS, "a new stream (zero state)"},
    {"batch", (PyCFunction)model_batch, METH_O, "batch(n): n streams stepped together"},
    {"tanh_inplace", (PyCFunction)model_tanh, METH_O, "apply this CPU's tanh to a float32 buffer"},
    {NULL}};
static PyGetSetDef model_getset[] = {{"isa", (getter)model_isa, NULL, "instruction set in use", NULL},
                                     {"weight_bytes", (getter)model_bytes, NULL, "packed weight bytes", NULL},
                                     {NULL}};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rnnedge.runtime._kernel.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_dealloc = (destructor)model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(cell, quant, I, H, L, O, mats[, P, inner_scales]): packed weights, shared by its streams",
    .tp_methods = model_methods,
    .tp_getset = model_getset,
    .tp_init = (initproc)model_init,
    .tp_new = PyType_GenericNew,
};

/* ==================================================================================================== */
/* input checking: the fast path in C, everything else through the Python checker */

static int all_finite(const float *v, Py_ssize_t n)
{
    for (Py_ssize_t k = 0; k < n; k++)
        if (!isfinite(v[k])) return 0;
    return 1;
}

/* a float32 buffer of exactly `n` floats ((n,) or (1, n)); 0 = not that (view released) */
static int fast_sample(PyObject *x, Py_buffer *v, Py_ssize_t n)
{
    if (PyObject_GetBuffer(x, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        return 0;
    }
    const int shape_ok = (v->ndim == 1 && v->shape[0] == n) || (v->ndim == 2 && v->shape[0] == 1 && v->shape[1] == n);
    if (shape_ok && v->itemsize == 4 && v->format && v->format[0] == 'f' && v->format[1] == 0) return 1;
    PyBuffer_Release(v);
    return 0;
}

/* x -> a checked (n,) float32 buffer in v; returns the object that owns it (new ref) or NULL (raised) */
static PyObject *checked_sample(PyObject *x, Py_buffer *v, Py_ssize_t n)
{
    Py_INCREF(x);
    if (!fast_sample(x, v, n)) {
        if (!coerce_fn) return Py_DECREF(x), PyErr_Format(PyExc_RuntimeError, "_kernel.configure() not called");
        PyObject *size = PyLong_FromSsize_t(n);
        PyObject *c = size ? PyObject_CallFunctionObjArgs(coerce_fn, x, size, NULL) : NULL; /* or raises */
        Py_XDECREF(size);
        Py_DECREF(x);
        if (!c) return NULL;
        x = c;
        if (!fast_sample(x, v, n)) return Py_DECREF(x), PyErr_Format(PyExc_TypeError, "coerce returned a bad array");
    }
    if (!all_finite(v->buf, n)) {
        PyBuffer_Release(v);
        PyObject *r = PyObject_CallOneArg(not_finite_fn, x); /* raises InputError naming the bad value */
        Py_XDECREF(r);
        Py_DECREF(x);
        if (r) PyErr_SetString(PyExc_ValueError, "sample is not finite");
        return NULL;
    }
    return x;
}

/* numpy.empty(shape, float32) and its buffer; shape is a tuple (a dtype instance and a tuple: half the cost of
 * numpy.empty(n, numpy.float32), whose arguments numpy converts on every call) */
static PyObject *new_array(PyObject *shape, Py_buffer *v)
{
    PyObject *args[2] = {shape, float32};
    PyObject *a = PyObject_Vectorcall(empty_fn, args, 2, NULL);
    if (!a) return NULL;
    if (PyObject_GetBuffer(a, v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return Py_DECREF(a), NULL;
    return a;
}

/* An output array only this module holds (no other reference, no weak reference) is unobservable, so a stream
 * may hand it out again instead of allocating. Its buffer is requested again, with shape and format, because
 * a caller may have resized or reshaped it in place (or changed its dtype) before dropping it. */
static int reusable(PyObject *a, Py_buffer *v, Py_ssize_t n)
{
    if (!a || Py_REFCNT(a) != 1) return 0;
    const Py_ssize_t wl = Py_TYPE(a)->tp_weaklistoffset;
    if (wl > 0 && *(PyObject **)((char *)a + wl) != NULL) return 0;
    if (PyObject_GetBuffer(a, v, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return PyErr_Clear(), 0;
    if (v->ndim == 1 && v->shape[0] == n && v->itemsize == 4 && v->format && v->format[0] == 'f' && !v->format[1])
        return 1;
    PyBuffer_Release(v);
    return 0;
}

/* ==================================================================================================== */
/* Stream */

typedef struct {
    PyObject_HEAD ModelObject *model;
    re_stream *s;
    long long steps;
    PyObject *shape; /* (O,) */
    PyObject *out[2]; /* the last two outputs: `y = s.step(x)` in a loop drops the older one before the next step */
    float *backup; /* (state_floats,) the state before the current call, for the roll-back */
} StreamObject;

/* ---- the non-finite output roll-back: the state is saved before a call and put back if it went bad */

static Py_ssize_t state_floats(const ModelObject *m) { return (Py_ssize_t)m->L * m->H * (m->cell == RE_LSTM ? 2 : 1); }

static void save_state(re_stream *s, const ModelObject *m, float *to)
{
    const int kinds = m->cell == RE_LSTM ? 2 : 1;
    for (int l = 0; l < m->L; l++)
        for (int k = 0; k < kinds; k++, to += m->H) memcpy(to, re_state(s, l, k), sizeof(float) * (size_t)m->H);
}

static void load_state(re_stream *s, const ModelObject *m, const float *from)
{
    const int kinds = m->cell == RE_LSTM ? 2 : 1;
    for (int l = 0; l < m->L; l++)
        for (int k = 0; k < kinds; k++, from += m->H) memcpy(re_state(s, l, k), from, sizeof(float) * (size_t)m->H);
}

static int state_finite(re_stream *s, const ModelObject *m)
{
    const int kinds = m->cell == RE_LSTM ? 2 : 1;
    for (int l = 0; l < m->L; l++)
        for (int k = 0; k < kinds; k++)
            if (!all_finite(re_state(s, l, k), m->H)) return 0;
    return 1;
}

static PyObject *raise_bad_output(const char *what)
{
    if (!bad_output_fn) return PyErr_Format(PyExc_ArithmeticError, "%s: non-finite output; state rolled back", what);
    PyObject *r = PyObject_CallFunction(bad_output_fn, "s", what); /* raises OutputError */
    Py_XDECREF(r);
    if (r) PyErr_SetString(PyExc_ArithmeticError, "non-finite output");
    return NULL;
}

static void stream_dealloc(StreamObject *self)
{
    PyMem_Free(self->backup);
    Py_XDECREF(self->shape);
    Py_XDECREF(self->out[0]);
    Py_XDECREF(self->out[1]);
    re_stream_free(self->s);
    Py_XDECREF(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject StreamType;

static PyObject *new_stream(ModelObject *model)
{
    StreamObject *self = PyObject_New(StreamObject, &StreamType);
    if (!self) return NULL;
    self->s = re_stream_new(model->m);
    self->steps = 0;
    self->backup = PyMem_Malloc(sizeof(float) * (size_t)state_floats(model));
    self->out[0] = self->out[1] = NULL;
    self->shape = Py_BuildValue("(n)", (Py_ssize_t)model->O);
    Py_INCREF(model);
    self->model = model;
    if (!self->shape) return Py_DECREF(self), NULL;
    if (!self->s || !self->backup) return Py_DECREF(self), PyErr_NoMemory();
    return (PyObject *)self;
}

/* a (O,) float32 array for this step's output: a reusable earlier one, else a new one (kept for reuse) */
static PyObject *output_array(StreamObject *self, Py_buffer *v)
{
    for (int i = 0; i < 2; i++)
        if (reusable(self->out[i], v, self->model->O)) return Py_NewRef(self->out[i]);
    PyObject *a = new_array(self->shape, v);
    if (a) Py_XSETREF(self->out[self->steps & 1], Py_NewRef(a)); /* alternate slots: keep the newest two */
    return a;
}

static PyObject *stream_step(StreamObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) return PyErr_Format(PyExc_TypeError, "step(x) takes one sample");
    Py_buffer xv, yv;
    PyObject *owner = checked_sample(args[0], &xv, self->model->I);
    if (!owner) return NULL;
    PyObject *y = output_array(self, &yv);
    int ok = 1;
    if (y) {
        save_state(self->s, self->model, self->backup);
        re_step(self->s, xv.buf, yv.buf);
        ok = all_finite(yv.buf, self->model->O) && state_finite(self->s, self->model);
        if (ok) self->steps++;
        else load_state(self->s, self->model, self->backup);
        PyBuffer_Release(&yv);
    }
    PyBuffer_Release(&xv);
    Py_DECREF(owner);
    if (!ok) return Py_DECREF(y), raise_bad_output("step");
    return y;
}

/* run(seq, out): seq (T, I) float32 C-contiguous and finite (the caller checks), out (T, O) float32 */
static PyObject *stream_run(StreamObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "run(seq, out)");
    Py_buffer sv, ov;
    if (PyObject_GetBuffer(args[0], &sv, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &ov, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return PyBuffer_Release(&sv), NULL;
    const Py_ssize_t I = self->model->I, O = self->model->O, T = sv.len / (4 * I);
    if (sv.len != T * I * 4 || ov.len != T * O * 4) {
        PyBuffer_Release(&sv), PyBuffer_Release(&ov);
        return PyErr_Format(PyExc_ValueError, "run: seq must be (T, %zd) and out (T, %zd) float32", I, O);
    }
    const float *x = sv.buf;
    float *y = ov.buf;
    re_stream *s = self->s;
    int ok = 1;
    save_state(s, self->model, self->backup);
    Py_BEGIN_ALLOW_THREADS for (Py_ssize_t t = 0; t < T && ok; t++)
    {
        re_step(s, x + t * I, y + t * O);
        ok = all_finite(y + t * O, O);
    }
    Py_END_ALLOW_THREADS ok = ok && state_finite(s, self->model);
    if (ok) self->steps += T;
    else load_state(s, self->model, self->backup);
    PyBuffer_Release(&sv), PyBuffer_Release(&ov);
    if (!ok) return raise_bad_output("run");
    Py_RETURN_NONE;
}

/* time_steps(x, n) -> seconds for n steps on the same x in a pure C loop (benchmarks: the Python overhead) */
static PyObject *stream_time_steps(StreamObject *self, PyObject *args)
{
    PyObject *x;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "On", &x, &n)) return NULL;
    Py_buffer xv;
    PyObject *owner = checked_sample(x, &xv, self->model->I);
    if (!owner) return NULL;
    float *y = PyMem_Malloc(sizeof(float) * (size_t)self->model->O);
    if (!y) return PyBuffer_Release(&xv), Py_DECREF(owner), PyErr_NoMemory();
    struct timespec t0, t1;
    re_stream *s = self->s;
    Py_BEGIN_ALLOW_THREADS clock_gettime(CLOCK_MONOTONIC, &t0);
    for (Py_ssize_t i = 0; i < n; i++) re_step(s, xv.buf, y);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    Py_END_ALLOW_THREADS PyMem_Free(y);
    PyBuffer_Release(&xv);
    Py_DECREF(owner);
    self->steps += n;
    return PyFloat_FromDouble((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
}

static PyObject *stream_reset(StreamObject *self, PyObject *unused)
{
    re_reset(self->s);
    self->steps = 0;
    Py_RETURN_NONE;
}

static PyObject *state_memoryview(float *p, int H)
{
    if (!p) return PyErr_Format(PyExc_IndexError, "no such state");
    return PyMemoryView_FromMemory((char *)p, (Py_ssize_t)H * 4, PyBUF_WRITE);
}

static PyObject *stream_state_view(StreamObject *self, PyObject *args)
{
    int layer, kind;
    if (!PyArg_ParseTuple(args, "ii", &layer, &kind)) return NULL;
    return state_memoryview(re_state(self->s, layer, kind), re_state_size(self->model->m, kind));
}

static PyObject *stream_get_steps(StreamObject *self, void *c) { return PyLong_FromLongLong(self->steps); }
static int stream_set_steps(StreamObject *self, PyObject *v, void *c)
{
    const long long n = v ? PyLong_AsLongLong(v) : -1;
    if (n == -1 && PyErr_Occurred()) return -1;
    self->steps = n;
    return 0;
}

static PyMethodDef stream_methods[] = {
    {"step", (PyCFunction)(void (*)(void))stream_step, METH_FASTCALL, "step(x) -> y: one checked sample"},
    {"run", (PyCFunction)(void (*)(void))stream_run, METH_FASTCALL, "run(seq, out): a checked sequence"},
    {"reset", (PyCFunction)stream_reset, METH_NOARGS, "zero the state"},
    {"time_steps", (PyCFunction)stream_time_steps, METH_VARARGS, "time_steps(x, n) -> seconds (C loop)"},
    {"state_view", (PyCFunction)stream_state_view, METH_VARARGS, "state_view(layer, kind) -> memoryview"},
    {NULL}};
static PyGetSetDef stream_getset[] = {
    {"steps", (getter)stream_get_steps, (setter)stream_set_steps, "samples since the last reset", NULL}, {NULL}};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rnnedge.runtime._kernel.Stream",
    .tp_basicsize = sizeof(StreamObject),
    .tp_dealloc = (destructor)stream_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "one stream's state on a compiled Model",
    .tp_methods = stream_methods,
    .tp_getset = stream_getset,
};

/* ==================================================================================================== */
/* Batch: n streams stepped together (one matrix-matrix product per layer) */

typedef struct {
    PyObject_HEAD ModelObject *model;
    Py_ssize_t n;
    re_stream **s;
    float *backup; /* (n, state_floats) */
} BatchObject;

static void batch_dealloc(BatchObject *self)
{
    if (self->s)
        for (Py_ssize_t j = 0; j < self->n; j++) re_stream_free(self->s[j]);
    PyMem_Free(self->s);
    PyMem_Free(self->backup);
    Py_XDECREF(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject BatchType;

static PyObject *new_batch(ModelObject *model, Py_ssize_t n)
{
    BatchObject *self = PyObject_New(BatchObject, &BatchType);
    if (!self) return NULL;
    Py_INCREF(model);
    self->model = model, self->n = n;
    self->s = PyMem_Calloc((size_t)n, sizeof(re_stream *));
    self->backup = PyMem_Malloc(sizeof(float) * (size_t)n * (size_t)state_floats(model));
    if (!self->s || !self->backup) return Py_DECREF(self), PyErr_NoMemory();
    for (Py_ssize_t j = 0; j < n; j++)
        if (!(self->s[j] = re_stream_new(model->m))) return Py_DECREF(self), PyErr_NoMemory();
    return (PyObject *)self;
}

/* step(X, Y): X (n, I) float32 C-contiguous and finite (the caller checks), Y (n, O) */
static PyObject *batch_step(BatchObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "step(X, Y)");
    Py_buffer xv, yv;
    if (PyObject_GetBuffer(args[0], &xv, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &yv, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return PyBuffer_Release(&xv), NULL;
    const Py_ssize_t n = self->n, I = self->model->I, O = self->model->O;
    if (xv.len != n * I * 4 || yv.len != n * O * 4) {
        PyBuffer_Release(&xv), PyBuffer_Release(&yv);
        return PyErr_Format(PyExc_ValueError, "step: X must be (%zd, %zd) and Y (%zd, %zd) float32", n, I, n, O);
    }
    re_stream **s = self->s;
    const re_model *m = self->model->m;
    const Py_ssize_t F = state_floats(self->model);
    for (Py_ssize_t j = 0; j < n; j++) save_state(s[j], self->model, self->backup + j * F);
    Py_BEGIN_ALLOW_THREADS re_step_many(m, s, (int)n, xv.buf, yv.buf);
    Py_END_ALLOW_THREADS int ok = all_finite(yv.buf, n * O);
    for (Py_ssize_t j = 0; j < n && ok; j++) ok = state_finite(s[j], self->model);
    if (!ok) /* one tick of every stream is one call: all of them go back */
        for (Py_ssize_t j = 0; j < n; j++) load_state(s[j], self->model, self->backup + j * F);
    PyBuffer_Release(&xv), PyBuffer_Release(&yv);
    if (!ok) return raise_bad_output("step");
    Py_RETURN_NONE;
}

static PyObject *batch_reset(BatchObject *self, PyObject *args)
{
    Py_ssize_t j = -1;
    if (!PyArg_ParseTuple(args, "|n", &j)) return NULL;
    if (j >= self->n) return PyErr_Format(PyExc_IndexError, "stream %zd of %zd", j, self->n);
    for (Py_ssize_t k = 0; k < self->n; k++)
        if (j < 0 || k == j) re_reset(self->s[k]);
    Py_RETURN_NONE;
}

static PyObject *batch_state_view(BatchObject *self, PyObject *args)
{
    Py_ssize_t j;
    int layer, kind;
    if (!PyArg_ParseTuple(args, "nii", &j, &layer, &kind)) return NULL;
    if (j < 0 || j >= self->n) return PyErr_Format(PyExc_IndexError, "stream %zd of %zd", j, self->n);
    return state_memoryview(re_state(self->s[j], layer, kind), re_state_size(self->model->m, kind));
}

static PyMethodDef batch_methods[] = {
    {"step", (PyCFunction)(void (*)(void))batch_step, METH_FASTCALL, "step(X, Y): every stream, one sample"},
    {"reset", (PyCFunction)batch_reset, METH_VARARGS, "reset([j]): zero one stream's state, or all"},
    {"state_view", (PyCFunction)batch_state_view, METH_VARARGS, "state_view(j, layer, kind) -> memoryview"},
    {NULL}};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "rnnedge.runtime._kernel.Batch",
    .tp_basicsize = sizeof(BatchObject),
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "n streams of one compiled Model, stepped together",
    .tp_methods = batch_methods,
};

/* ==================================================================================================== */
/* the compiled front end (pyfrontend.c: one call pushes PCM and steps a Stream per completed hop) */

#include "pyfrontend.c"

/* ==================================================================================================== */
/* module */

static PyObject *configure(PyObject *mod, PyObject *args)
{
    PyObject *c, *nf, *e, *f, *bad = NULL;
    if (!PyArg_ParseTuple(args, "OOOO|O", &c, &nf, &e, &f, &bad)) return NULL;
    if (bad) Py_XSETREF(bad_output_fn, Py_NewRef(bad));
    Py_XSETREF(coerce_fn, Py_NewRef(c));
    Py_XSETREF(not_finite_fn, Py_NewRef(nf));
    Py_XSETREF(empty_fn, Py_NewRef(e));
    Py_XSETREF(float32, Py_NewRef(f));
    Py_RETURN_NONE;
}

/* Loading reads the bundle and builds numpy copies of its tensors, then packs them: the transient copies are
 * freed, but glibc keeps freed heap pages resident. Returning them once per load keeps a loaded model's
 * resident memory near its packed bytes (benchmarks/coldstart_rss.py: LSTM H=256 int8 792 -> 488 KiB). */
static PyObject *trim_heap(PyObject *mod, PyObject *unused)
{
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS, "configure(coerce, not_finite, numpy.empty, numpy.dtype('float32')[, bad_output])"},
    {"trim_heap", trim_heap, METH_NOARGS, "return freed heap pages to the OS (glibc; a no-op elsewhere)"},
    {NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", "rnnedge's compiled streaming core", -1,
                                    module_methods};

PyMODINIT_FUNC PyInit__kernel(void)
{
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&StreamType) < 0 || PyType_Ready(&BatchType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ModelType);
    PyModule_AddObject(m, "Model", (PyObject *)&ModelType);
    PyModule_AddIntConstant(m, "LSTM", RE_LSTM);
    PyModule_AddIntConstant(m, "GRU", RE_GRU);
    PyModule_AddIntConstant(m, "GRU_LBR0", RE_GRU_LBR0);
    PyModule_AddIntConstant(m, "RNN_TANH", RE_RNN_TANH);
    PyModule_AddIntConstant(m, "RNN_RELU", RE_RNN_RELU);
    PyModule_AddIntConstant(m, "F32", RE_F32);
    PyModule_AddIntConstant(m, "Q8_DYNAMIC", RE_Q8_DYNAMIC);
    PyModule_AddIntConstant(m, "Q8_STATIC", RE_Q8_STATIC);
    PyModule_AddIntConstant(m, "Q8_WEIGHT", RE_Q8_WEIGHT);
    PyModule_AddIntConstant(m, "MAX_LAYERS", RE_MAX_LAYERS);
    if (add_frontend_type(m) < 0) return NULL;
    return m;
}
