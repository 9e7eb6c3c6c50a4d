/* ScannerNet's per-line step as one compiled call: both ConvLSTM1d layers and the 1x1 head.
 *
 * Why it exists: in numpy a line costs an im2col copy, two BLAS products and about twenty small
 * ufunc calls, each reading and writing whole gate arrays.  Here each layer is a direct 'same'
 * convolution over the padded rows, blocked so that the gate sums of 2 hidden channels x BLOCK
 * pixels stay in vector registers; the LSTM gate math runs on those registers before anything is
 * written.  No im2col, no gate arrays, one call per line.  A line of THREAD_MIN_WIDTH pixels or
 * more runs without the GIL and may be split into pixel ranges over threads; a narrower one keeps
 * the GIL, since giving it up and taking it back costs more than such a line (in a process with
 * other busy Python threads, a wait of up to the interpreter's switch interval).
 *
 * Portable C (GCC/Clang vector extensions): the vector width and register blocking follow the
 * instruction set the compiler targets (AVX-512, AVX, SSE, NEON).
 *
 * The line comes in as the sensor gave it (uint8, uint16 or float32, any strides) with a gain and
 * an offset per band; standardising it is the first thing the call does.
 *
 * Layout (set up by scannernet_ros/stepper.py, checked here):
 *   buf      (bands + F1 + F2, S) rows [x; h1; h2], S = Wp + k - 1, Wp = width rounded up to BLOCK;
 *            row column p + w holds pixel w (p = k / 2); everything else stays zero.
 *   c1, c2   (F, width) cell states.
 *   scratch  (max(F1, F2) + 1, Wp): new h rows before they replace the old ones, then the logits.
 *   w1, w2   packed gate weights (F / 2, channels, k, 8): for each pair of hidden channels, per
 *            input channel and tap, the 8 gate rows i0 i1 f0 f1 o0 o1 g0 g1; the i, f, o rows
 *            pre-halved so that sigmoid(z) = (1 + tanh(z')) / 2.
 *   b1, b2   packed biases (F / 2, 8), halved likewise.
 *   head     F2 weights then the bias.
 *   out      (width,) logits, or probabilities when asked.
 * The call returns whether the new cell states and the output are all finite.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#if defined(__aarch64__)
#include <arm_neon.h>
#elif defined(__SSE__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VL 16
#define NV 3
#elif defined(__aarch64__)
#define VL 4
#define NV 3
#elif defined(__AVX__)
#define VL 8
#define NV 1
#else
#define VL 4
#define NV 1
#endif
#define G 2                /* hidden channels per register block: 4 * G gate rows */
#define ROWS (4 * G)
#define BLOCK (VL * NV)    /* pixels per register block */
#define MAX_THREADS 64
#define THREAD_MIN_WIDTH 2048   /* narrower lines stay on one thread: starting one costs more */

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int vi __attribute__((vector_size(VL * sizeof(float))));

/* a in every lane (a - 0 is a for every a, -0 and NaN included, so the compiler drops it) */
static inline vf splat(float a) { return a - (vf){0}; }

static inline vf loadu(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }

static inline void storeu(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* a where mask, else b (mask lanes are all ones or all zeros) */
static inline vf select_(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }

/* x limited to [-limit, limit], NaN kept: the instruction set's min and max where it has them
 * (x86 min/max return their second operand when one is NaN, NEON's return NaN), else selects. */
static inline vf clamp(vf x, float limit)
{
#if defined(__AVX512F__)
    return (vf)_mm512_max_ps(_mm512_set1_ps(-limit), _mm512_min_ps(_mm512_set1_ps(limit), (__m512)x));
#elif defined(__aarch64__)
    return (vf)vmaxq_f32(vdupq_n_f32(-limit), vminq_f32(vdupq_n_f32(limit), (float32x4_t)x));
#elif defined(__AVX__)
    return (vf)_mm256_max_ps(_mm256_set1_ps(-limit), _mm256_min_ps(_mm256_set1_ps(limit), (__m256)x));
#elif defined(__SSE__)
    return (vf)_mm_max_ps(_mm_set1_ps(-limit), _mm_min_ps(_mm_set1_ps(limit), (__m128)x));
#else
    const vf hi = splat(limit), lo = splat(-limit);
    x = select_(x > hi, hi, x);
    return select_(x < lo, lo, x);
#endif
}

/* tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= 9 (tanh(9) = 1 - 3e-8), P and Q of degree 4, Q(0) = 1:
 * a least-squares fit of x P - tanh(x) Q, reweighted towards equal ripple.  In float32 the
 * absolute error stays below 4e-7 over the whole line, the relative error below 3e-7 near 0
 * (against double-precision tanh); it costs 13 vector operations and one division, against ~25
 * for tanh through expm1.  The steps' agreement with torch (test_streaming, test_linestep)
 * bounds what it does to the state.  NaN stays NaN (the clamp keeps it), which is how a
 * poisoned state is noticed. */
static inline vf v_tanh(vf x)
{
    x = clamp(x, 9.0f);
    vf s = x * x;
    vf p = splat(1.3183354247706522e-08f);
    p = p * s + splat(2.04712893457333e-05f);
    p = p * s + splat(0.003486554130203991f);
    p = p * s + splat(0.1337317643989956f);
    p = p * s + splat(0.9999999068123455f);
    vf q = splat(7.702330712577073e-07f);
    q = q * s + splat(0.00032713361101574116f);
    q = q * s + splat(0.025841879914100505f);
    q = q * s + splat(0.46706473438506024f);
    q = q * s + splat(1.0f);
    return x * p / q;
}

static inline vf v_sigmoid_halved(vf z) { return splat(0.5f) + splat(0.5f) * v_tanh(z); }

/* Valid pixels of vector v of the block starting at w0 (0..VL). */
static inline int lanes(int width, int w0, int v)
{
    int m = width - (w0 + v * VL);
    return m < 0 ? 0 : (m > VL ? VL : m);
}

static inline vf load_part(const float *p, int m)
{
    if (m == VL)
        return loadu(p);
    float tmp[VL] = {0};
    memcpy(tmp, p, (size_t)m * sizeof(float));
    return loadu(tmp);
}

static inline void store_part(float *p, vf v, int m)
{
    if (m == VL) {
        storeu(p, v);
        return;
    }
    float tmp[VL];
    storeu(tmp, v);
    memcpy(p, tmp, (size_t)m * sizeof(float));
}

/* Lanes of v that are NaN or infinite (x - x is 0 only for finite x). */
static inline vi nonfinite(vf v) { return (vi)((v - v) != splat(0.0f)); }

/* Whether no lane of an accumulated nonfinite() mask is set. */
static inline int none_set(vi bad)
{
    for (int l = 0; l < VL; l++)
        if (bad[l])
            return 0;
    return 1;
}

/* One ConvLSTM1d layer over the pixels [begin, end) (whole blocks).  src: first input row,
 * column 0 = pixel -p.  Writes h into hout (stride wp, whole blocks); updates c (stride width,
 * valid pixels only).  With head != NULL also adds head . h to logits (stride wp).  Sets finite
 * to whether every new c is finite (h is bounded by |tanh| when c is), so the caller needs no
 * second pass over the state.  Pixel ranges share nothing but their inputs: threads may take
 * one each. */
typedef struct {
    const float *src, *w, *b, *head;
    float *c, *hout, *logits;
    ptrdiff_t stride, wp;
    int channels, k, hidden, width, begin, end, finite;
} Layer;

static void layer_run(Layer *L)
{
    const ptrdiff_t wstep = (ptrdiff_t)L->channels * L->k * ROWS;
    const int width = L->width, end = L->end < width ? L->end : width;
    vi bad = {0};
    for (int w0 = L->begin; w0 < end; w0 += BLOCK) {
        for (int g0 = 0; g0 < L->hidden; g0 += G) {
            const float *wg = L->w + (g0 / G) * wstep;
            const float *bg = L->b + (g0 / G) * ROWS;
            vf acc[ROWS][NV];
            for (int r = 0; r < ROWS; r++)
                for (int v = 0; v < NV; v++)
                    acc[r][v] = splat(bg[r]);
            for (int ch = 0; ch < L->channels; ch++) {
                const float *row = L->src + ch * L->stride + w0;
                for (int j = 0; j < L->k; j++, wg += ROWS) {
                    vf xv[NV];
                    for (int v = 0; v < NV; v++)
                        xv[v] = loadu(row + j + v * VL);
                    for (int r = 0; r < ROWS; r++) {
                        vf wr = splat(wg[r]);
                        for (int v = 0; v < NV; v++)
                            acc[r][v] += wr * xv[v];
                    }
                }
            }
            for (int v = 0; v < NV; v++) {
                int m = lanes(width, w0, v);
                if (m == 0)
                    break;
                int col = w0 + v * VL;
                vf out = splat(0.0f);
                for (int n = 0; n < G; n++) {
                    vf i = v_sigmoid_halved(acc[0 * G + n][v]);
                    vf f = v_sigmoid_halved(acc[1 * G + n][v]);
                    vf o = v_sigmoid_halved(acc[2 * G + n][v]);
                    vf g = v_tanh(acc[3 * G + n][v]);
                    float *cp = L->c + (ptrdiff_t)(g0 + n) * width + col;
                    vf cv = f * load_part(cp, m) + i * g;
                    store_part(cp, cv, m);
                    bad |= nonfinite(cv);
                    vf h = o * v_tanh(cv);
                    storeu(L->hout + (ptrdiff_t)(g0 + n) * L->wp + col, h);
                    if (L->head)
                        out += splat(L->head[g0 + n]) * h;
                }
                if (L->head)
                    storeu(L->logits + col, loadu(L->logits + col) + out);
            }
        }
    }
    L->finite = none_set(bad);
}

static void *layer_thread(void *job)
{
    layer_run(job);
    return NULL;
}

/* The layer split into `threads` pixel ranges of whole blocks, the calling thread taking the first.
 * Threads are started per call: at the widths where a split pays (THREAD_MIN_WIDTH and up) a
 * layer takes hundreds of microseconds, starting one tens.  A thread that cannot be started is
 * run here instead.  Returns whether every new c is finite. */
static int layer(const Layer *proto, int threads)
{
    Layer jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    const int blocks = (proto->width + BLOCK - 1) / BLOCK;
    if (threads > blocks)
        threads = blocks;
    for (int t = 0; t < threads; t++) {
        jobs[t] = *proto;
        jobs[t].begin = (int)((long long)blocks * t / threads) * BLOCK;
        jobs[t].end = (int)((long long)blocks * (t + 1) / threads) * BLOCK;
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tid[t], NULL, layer_thread, &jobs[t]) == 0;
    layer_run(&jobs[0]);
    int finite = jobs[0].finite;
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            layer_run(&jobs[t]);
        finite &= jobs[t].finite;
    }
    return finite;
}

/* The new h rows replace the old ones in the padded buffer, valid pixels only (the padding
 * columns must stay zero). */
static void commit(float *rows, ptrdiff_t stride, const float *h, ptrdiff_t wp, int hidden, int width)
{
    for (int n = 0; n < hidden; n++)
        memcpy(rows + n * stride, h + n * wp, (size_t)width * sizeof(float));
}

/* Standardise the raw line into the x rows of buf: x = gain[b] * sample + offset[b]. */
static int load_line(Py_buffer *in, const float *gain, const float *offset, float *rows, ptrdiff_t stride,
                     int bands, int width)
{
    const char *fmt = in->format ? in->format : "B";
    if (*fmt == '@' || *fmt == '=' || (*fmt == '<' && PY_LITTLE_ENDIAN))
        fmt++;
    char kind = fmt[1] == '\0' ? fmt[0] : '?';
    if (in->ndim != 2 || in->shape[0] != bands || in->shape[1] != width
        || !((kind == 'B' && in->itemsize == 1) || (kind == 'H' && in->itemsize == 2) || (kind == 'f' && in->itemsize == 4))) {
        PyErr_Format(PyExc_ValueError, "samples: expected (%d, %d) uint8, uint16 or float32 in native byte order",
                     bands, width);
        return 0;
    }
    for (int b = 0; b < bands; b++) {
        const char *src = (const char *)in->buf + b * in->strides[0];
        float *dst = rows + b * stride;
        const float g = gain[b], o = offset[b];
        const Py_ssize_t step = in->strides[1];
        if (kind == 'H')
            for (int w = 0; w < width; w++) {
                unsigned short v;
                memcpy(&v, src + w * step, sizeof v);
                dst[w] = g * (float)v + o;
            }
        else if (kind == 'B')
            for (int w = 0; w < width; w++)
                dst[w] = g * (float)(unsigned char)src[w * step] + o;
        else
            for (int w = 0; w < width; w++) {
                float v;
                memcpy(&v, src + w * step, sizeof v);
                dst[w] = g * v + o;
            }
    }
    return 1;
}

/* What one line's step reads and writes (see the layout at the top). */
typedef struct {
    const float *w1, *b1, *w2, *b2, *head;
    float *c1, *c2, *rows, *h, *logits, *out;
    int bands, f1, f2, k, width, probabilities;
    ptrdiff_t wp;
} Step;

/* Both layers, the head and the output of a line whose x rows are in place; returns whether the
 * new states and the output are all finite.  Touches no Python object (it may run without the GIL). */
static int run_line(const Step *s, int threads)
{
    const int bands = s->bands, f1 = s->f1, f2 = s->f2, k = s->k, p = k / 2, width = s->width;
    const ptrdiff_t wp = s->wp, stride = wp + k - 1;
    float *rows = s->rows, *logits = s->logits;
    Layer one = {.src = rows, .w = s->w1, .b = s->b1, .head = NULL, .c = s->c1, .hout = s->h, .logits = NULL,
                 .stride = stride, .wp = wp, .channels = bands + f1, .k = k, .hidden = f1, .width = width};
    int finite = layer(&one, threads);
    commit(rows + bands * stride + p, stride, s->h, wp, f1, width);
    for (ptrdiff_t i = 0; i < wp; i++)
        logits[i] = s->head[f2];
    Layer two = {.src = rows + bands * stride, .w = s->w2, .b = s->b2, .head = s->head, .c = s->c2, .hout = s->h,
                 .logits = logits, .stride = stride, .wp = wp, .channels = f1 + f2, .k = k, .hidden = f2,
                 .width = width};
    finite &= layer(&two, threads);
    commit(rows + (bands + f1) * stride + p, stride, s->h, wp, f2, width);
    vi bad = {0};
    for (ptrdiff_t i = 0; i < wp; i += VL)   /* lanes past the width hold finite values from zeros */
        bad |= nonfinite(loadu(logits + i));
    finite &= none_set(bad);
    if (s->probabilities) {
        for (int w0 = 0; w0 < width; w0 += VL) {
            int m = width - w0 < VL ? width - w0 : VL;
            store_part(s->out + w0, v_sigmoid_halved(splat(0.5f) * loadu(logits + w0)), m);
        }
    } else {
        memcpy(s->out, logits, (size_t)width * sizeof(float));
    }
    return finite;
}

static int expect(Py_buffer *view, Py_ssize_t floats, const char *name)
{
    if (view->len != floats * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd float32 values, got %zd bytes", name, floats, view->len);
        return 0;
    }
    return 1;
}

static PyObject *step(PyObject *self, PyObject *args)
{
    Py_buffer buf, c1, c2, scratch, w1, b1, w2, b2, head, out, gain, offset, in = {0};
    PyObject *samples;
    int bands, f1, f2, k, width, probabilities, threads = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oy*y*w*w*w*w*y*y*y*y*y*w*iiiiip|i", &samples, &gain, &offset, &buf, &c1, &c2,
                          &scratch, &w1, &b1, &w2, &b2, &head, &out, &bands, &f1, &f2, &k, &width, &probabilities,
                          &threads))
        return NULL;
    PyObject *result = NULL;
    if (PyObject_GetBuffer(samples, &in, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        goto done;
    const Py_ssize_t wp = ((Py_ssize_t)width + BLOCK - 1) / BLOCK * BLOCK, stride = wp + k - 1;
    const int p = k / 2, fmax = f1 > f2 ? f1 : f2;
    int finite = 0;
    if (bands < 1 || f1 < G || f2 < G || f1 % G || f2 % G || k < 1 || k % 2 == 0 || width < 1) {
        PyErr_SetString(PyExc_ValueError, "step: bad dimensions");
        goto done;
    }
    if (threads < 1 || threads > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "step: threads must be 1 to %d, got %d", MAX_THREADS, threads);
        goto done;
    }
    if (!(expect(&buf, (bands + f1 + f2) * stride, "buf") && expect(&c1, (Py_ssize_t)f1 * width, "c1")
          && expect(&c2, (Py_ssize_t)f2 * width, "c2") && expect(&scratch, (fmax + 1) * wp, "scratch")
          && expect(&w1, (Py_ssize_t)4 * f1 * (bands + f1) * k, "w1") && expect(&b1, 4 * f1, "b1")
          && expect(&w2, (Py_ssize_t)4 * f2 * (f1 + f2) * k, "w2") && expect(&b2, 4 * f2, "b2")
          && expect(&head, f2 + 1, "head") && expect(&out, width, "out") && expect(&gain, bands, "gain")
          && expect(&offset, bands, "offset")))
        goto done;
    float *rows = buf.buf, *h = scratch.buf, *logits = h + fmax * wp;
    if (!load_line(&in, gain.buf, offset.buf, rows + p, stride, bands, width))
        goto done;
    const Step one_line = {.w1 = w1.buf, .b1 = b1.buf, .w2 = w2.buf, .b2 = b2.buf, .head = head.buf,
                           .c1 = c1.buf, .c2 = c2.buf, .rows = rows, .h = h, .logits = logits, .out = out.buf,
                           .bands = bands, .f1 = f1, .f2 = f2, .k = k, .width = width, .wp = wp,
                           .probabilities = probabilities};
    if (width >= THREAD_MIN_WIDTH) {  /* long enough for other Python threads to use the wait */
        Py_BEGIN_ALLOW_THREADS
        finite = run_line(&one_line, threads);
        Py_END_ALLOW_THREADS
    } else {                          /* releasing the GIL and taking it back would cost more */
        finite = run_line(&one_line, 1);
    }
    result = PyBool_FromLong(finite);
done:
    PyBuffer_Release(&buf); PyBuffer_Release(&c1); PyBuffer_Release(&c2); PyBuffer_Release(&scratch);
    PyBuffer_Release(&w1); PyBuffer_Release(&b1); PyBuffer_Release(&w2); PyBuffer_Release(&b2);
    PyBuffer_Release(&head); PyBuffer_Release(&out); PyBuffer_Release(&gain); PyBuffer_Release(&offset);
    if (in.obj)
        PyBuffer_Release(&in);
    return result;
}

static PyMethodDef methods[] = {
    {"step", step, METH_VARARGS,
     "step(samples, gain, offset, buf, c1, c2, scratch, w1, b1, w2, b2, head, out, bands, f1, f2, k, width,\n"
     "     probabilities, threads=1)\n"
     "One ScannerNet line: standardises samples into buf, updates h1, h2 (in buf), c1, c2; writes out.\n"
     "Returns whether the new cell states and out are all finite."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_linestep", NULL, -1, methods};

PyMODINIT_FUNC PyInit__linestep(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "BLOCK", BLOCK) < 0 || PyModule_AddIntConstant(m, "GROUP", G) < 0
              || PyModule_AddIntConstant(m, "LANES", VL) < 0 || PyModule_AddIntConstant(m, "MAX_THREADS", MAX_THREADS) < 0
              || PyModule_AddIntConstant(m, "THREAD_MIN_WIDTH", THREAD_MIN_WIDTH) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
