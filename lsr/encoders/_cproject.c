/*
 * lsr C kernel for the vocabulary projection of a *few* token states (a query): per vocabulary term, the max
 * over the tokens of x_t . w_j, before the bias (lsr/encoders/single_text.py adds it and the activation).
 *
 * Why by hand: BLAS libraries tune their sgemm for many rows. With 5-25 rows (one query) and 30k vocabulary
 * columns, MKL and OpenBLAS reach a third of the core's FMA rate or less, and the logits they write
 * (rows x vocab floats) are reread for the max. Here the weight is stored once in panels of PANEL
 * consecutive terms, each panel (hidden x PANEL floats) contiguous, so the whole product streams the weight
 * in order; a block of 4 tokens x 24 terms lives in 12 AVX2 registers, and only the per-term max is written.
 *
 * The AVX2+FMA kernel is compiled for that ISA alone (a target attribute, not a global -mavx2) and picked at
 * run time when the CPU has it; elsewhere a plain C loop of the same order computes the same thing. Both
 * accumulate each dot product in float32 in hidden order (FMA in the AVX2 kernel), so results equal a
 * float32 BLAS product to within float32 rounding, not bit for bit.
 *
 * The caller pads the vocabulary to a multiple of PANEL with zero columns (their maxima are ignored).
 *
 * max_logits_i8 is the same product over an int8 copy of the weight (one scale per term, w ~ scale * q): a
 * quarter of the bytes to stream, which is what bounds the float32 kernel on a query's few rows (15.6 MB of
 * SPLADE-tiny weight per call). Each panel is widened to float32 once, into a scratch panel in L1, and the
 * float32 block kernel runs on it; the maxima are multiplied by the term's scale (positive, so the max
 * commutes). The result is an estimate: single_text.py bounds its error and recomputes exactly, in float32,
 * every term the bound cannot rule out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

#define PANEL 24 /* terms per weight panel: 3 AVX2 registers */
#define TOKENS 4 /* tokens per block: 4 x 3 accumulators + 3 weights + 1 broadcast = 16 registers */

/* out[j] = max_t sum_k x[t][k] * panel(j)[k] for j < n_panels * PANEL (-inf without tokens). */
static void max_logits_plain(const float *x, Py_ssize_t n_tokens, Py_ssize_t hidden, const float *panels,
                             Py_ssize_t n_panels, float *out) {
    for (Py_ssize_t p = 0; p < n_panels; p++) {
        const float *panel = panels + p * hidden * PANEL;
        float best[PANEL];
        for (int c = 0; c < PANEL; c++) best[c] = -INFINITY;
        for (Py_ssize_t t = 0; t < n_tokens; t++) {
            float acc[PANEL] = {0};
            for (Py_ssize_t k = 0; k < hidden; k++) {
                float xv = x[t * hidden + k];
                for (int c = 0; c < PANEL; c++) acc[c] += xv * panel[k * PANEL + c];
            }
            for (int c = 0; c < PANEL; c++) best[c] = acc[c] > best[c] ? acc[c] : best[c];
        }
        for (int c = 0; c < PANEL; c++) out[p * PANEL + c] = best[c];
    }
}

/* The int8 panels widened into one float32 panel: the plain and the AVX2 route share the block kernels. */
static void widen_panel(const int8_t *panel, Py_ssize_t hidden, float *scratch) {
    for (Py_ssize_t i = 0; i < hidden * PANEL; i++) scratch[i] = (float)panel[i];
}

static void scale_maxima(float *out, const float *scale, Py_ssize_t n) {
    for (Py_ssize_t j = 0; j < n; j++) out[j] *= scale[j];
}

/* out[j] = scale[j] * max_t x_t . q_j over int8 panels q; scratch holds hidden * PANEL floats. */
static void max_logits_i8_plain(const float *x, Py_ssize_t n_tokens, Py_ssize_t hidden, const int8_t *panels,
                                const float *scale, Py_ssize_t n_panels, float *scratch, float *out) {
    for (Py_ssize_t p = 0; p < n_panels; p++) {
        widen_panel(panels + p * hidden * PANEL, hidden, scratch);
        max_logits_plain(x, n_tokens, hidden, scratch, 1, out + p * PANEL);
    }
    scale_maxima(out, scale, n_panels * PANEL);
}

#ifdef HAVE_X86
/* One panel x nt (1..TOKENS) tokens; inlined with a constant nt, so the accumulators stay in registers. */
__attribute__((target("avx2,fma"), always_inline)) static inline void panel_block(
    const float *x, Py_ssize_t hidden, const float *panel, int nt, __m256 *best0, __m256 *best1, __m256 *best2) {
    __m256 acc[TOKENS][3];
    for (int i = 0; i < nt; i++) acc[i][0] = acc[i][1] = acc[i][2] = _mm256_setzero_ps();
    for (Py_ssize_t k = 0; k < hidden; k++) {
        const float *w = panel + k * PANEL;
        __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8), w2 = _mm256_loadu_ps(w + 16);
        for (int i = 0; i < nt; i++) {
            __m256 s = _mm256_broadcast_ss(x + i * hidden + k);
            acc[i][0] = _mm256_fmadd_ps(s, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(s, w1, acc[i][1]);
            acc[i][2] = _mm256_fmadd_ps(s, w2, acc[i][2]);
        }
    }
    for (int i = 0; i < nt; i++) {
        *best0 = _mm256_max_ps(*best0, acc[i][0]);
        *best1 = _mm256_max_ps(*best1, acc[i][1]);
        *best2 = _mm256_max_ps(*best2, acc[i][2]);
    }
}

__attribute__((target("avx2,fma"))) static void max_logits_avx2(const float *x, Py_ssize_t n_tokens,
                                                                 Py_ssize_t hidden, const float *panels,
                                                                 Py_ssize_t n_panels, float *out) {
    for (Py_ssize_t p = 0; p < n_panels; p++) {
        const float *panel = panels + p * hidden * PANEL;
        __m256 best0 = _mm256_set1_ps(-INFINITY), best1 = best0, best2 = best0;
        Py_ssize_t t = 0;
        for (; t + TOKENS <= n_tokens; t += TOKENS)
            panel_block(x + t * hidden, hidden, panel, TOKENS, &best0, &best1, &best2);
        switch (n_tokens - t) { /* the last 1-3 tokens, each count its own inlined copy */
        case 3: panel_block(x + t * hidden, hidden, panel, 3, &best0, &best1, &best2); break;
        case 2: panel_block(x + t * hidden, hidden, panel, 2, &best0, &best1, &best2); break;
        case 1: panel_block(x + t * hidden, hidden, panel, 1, &best0, &best1, &best2); break;
        default: break;
        }
        _mm256_storeu_ps(out + p * PANEL, best0);
        _mm256_storeu_ps(out + p * PANEL + 8, best1);
        _mm256_storeu_ps(out + p * PANEL + 16, best2);
    }
}

__attribute__((target("avx2,fma"))) static void widen_panel_avx2(const int8_t *panel, Py_ssize_t hidden,
                                                                  float *scratch) {
    Py_ssize_t i = 0, n = hidden * PANEL;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(scratch + i, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(panel + i)))));
    for (; i < n; i++) scratch[i] = (float)panel[i];
}

__attribute__((target("avx2,fma"))) static void max_logits_i8_avx2(const float *x, Py_ssize_t n_tokens,
                                                                    Py_ssize_t hidden, const int8_t *panels,
                                                                    const float *scale, Py_ssize_t n_panels,
                                                                    float *scratch, float *out) {
    for (Py_ssize_t p = 0; p < n_panels; p++) {
        widen_panel_avx2(panels + p * hidden * PANEL, hidden, scratch);
        max_logits_avx2(x, n_tokens, hidden, scratch, 1, out + p * PANEL);
    }
    scale_maxima(out, scale, n_panels * PANEL);
}
#endif

/* ---- The batched int8 screen (pooling.py): per text and term, max over the text's rows of the integer dot
 * product of u8 token states (x + 128, x quantised to [-127, 127]) with 7-bit term rows q ([-63, 63]).
 * AVX2 multiplies 32 byte pairs per vpmaddubsw: pairs sum to at most 2 * 255 * 63 = 32130, inside int16, so
 * nothing saturates and the sums are exact integers. Layout: term panels of SCREEN_TERMS terms, each
 * (hidden / 4) groups of SCREEN_TERMS x 4 bytes (4 consecutive dimensions of each term), so one 32-byte load
 * holds 8 terms x 4 dimensions and a broadcast of 4 bytes of a row meets all 8 terms. ---- */
#define SCREEN_TERMS 8
#define SCREEN_ROWS 4

static void screen_i8_plain(const uint8_t *x, const int64_t *offsets, Py_ssize_t n_texts, Py_ssize_t hidden4,
                            const int8_t *panels, Py_ssize_t n_panels, Py_ssize_t first, Py_ssize_t last,
                            int32_t *out) {
    Py_ssize_t width = n_panels * SCREEN_TERMS, stride = hidden4 * 4;
    for (Py_ssize_t p = first; p < last; p++) {
        const int8_t *panel = panels + p * hidden4 * SCREEN_TERMS * 4;
        for (Py_ssize_t t = 0; t < n_texts; t++) {
            int32_t best[SCREEN_TERMS];
            for (int c = 0; c < SCREEN_TERMS; c++) best[c] = INT32_MIN;
            for (int64_t r = offsets[t]; r < offsets[t + 1]; r++) {
                int32_t acc[SCREEN_TERMS] = {0};
                for (Py_ssize_t g = 0; g < hidden4; g++)
                    for (int c = 0; c < SCREEN_TERMS; c++)
                        for (int i = 0; i < 4; i++)
                            acc[c] += (int32_t)x[r * stride + g * 4 + i] * panel[(g * SCREEN_TERMS + c) * 4 + i];
                for (int c = 0; c < SCREEN_TERMS; c++) best[c] = acc[c] > best[c] ? acc[c] : best[c];
            }
            memcpy(out + t * width + p * SCREEN_TERMS, best, sizeof best);
        }
    }
}

#ifdef HAVE_X86
__attribute__((target("avx2"), always_inline)) static inline __m256i screen_block(
    const uint8_t *x, Py_ssize_t stride, Py_ssize_t hidden4, const int8_t *panel, int nr, __m256i best) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc[SCREEN_ROWS];
    for (int i = 0; i < nr; i++) acc[i] = _mm256_setzero_si256();
    for (Py_ssize_t g = 0; g < hidden4; g++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(panel + g * SCREEN_TERMS * 4));
        for (int i = 0; i < nr; i++) {
            int32_t four;
            memcpy(&four, x + i * stride + g * 4, 4);
            __m256i pairs = _mm256_maddubs_epi16(_mm256_set1_epi32(four), q);
            acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(pairs, ones));
        }
    }
    for (int i = 0; i < nr; i++) best = _mm256_max_epi32(best, acc[i]);
    return best;
}

__attribute__((target("avx2"))) static void screen_i8_avx2(const uint8_t *x, const int64_t *offsets,
                                                            Py_ssize_t n_texts, Py_ssize_t hidden4,
                                                            const int8_t *panels, Py_ssize_t n_panels,
                                                            Py_ssize_t first, Py_ssize_t last, int32_t *out) {
    Py_ssize_t width = n_panels * SCREEN_TERMS, stride = hidden4 * 4;
    for (Py_ssize_t p = first; p < last; p++) {
        const int8_t *panel = panels + p * hidden4 * SCREEN_TERMS * 4;
        for (Py_ssize_t t = 0; t < n_texts; t++) {
            __m256i best = _mm256_set1_epi32(INT32_MIN);
            int64_t r = offsets[t], end = offsets[t + 1];
            for (; r + SCREEN_ROWS <= end; r += SCREEN_ROWS)
                best = screen_block(x + r * stride, stride, hidden4, panel, SCREEN_ROWS, best);
            switch (end - r) { /* the last 1-3 rows, each count its own inlined copy */
            case 3: best = screen_block(x + r * stride, stride, hidden4, panel, 3, best); break;
            case 2: best = screen_block(x + r * stride, stride, hidden4, panel, 2, best); break;
            case 1: best = screen_block(x + r * stride, stride, hidden4, panel, 1, best); break;
            default: break;
            }
            _mm256_storeu_si256((__m256i *)(out + t * width + p * SCREEN_TERMS), best);
        }
    }
}
#endif

static int use_avx2(void) {
#ifdef HAVE_X86
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return known;
#else
    return 0;
#endif
}

static const char *type_name(const char *format) {
    switch (format[0]) {
    case 'f': return "float32";
    case 'b': return "int8";
    case 'B': return "uint8";
    case 'i': return "int32";
    default: return "int64";
    }
}

/* A C-contiguous buffer of one item type ("f" float32, "b" int8, "B" uint8, "i" int32, "l" / "q" int64: both
 * spellings of int64 are taken for "l"), or -1 with a ValueError naming it. */
static int get_typed(PyObject *obj, Py_buffer *view, int writable, const char *format, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    int int64 = format[0] == 'l' && view->itemsize == 8 && view->format != NULL &&
                (strcmp(view->format, "l") == 0 || strcmp(view->format, "q") == 0);
    if (!int64 && (view->format == NULL || strcmp(view->format, format) != 0)) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s must be contiguous %s", name, type_name(format));
        return -1;
    }
    return 0;
}

static int get_f32(PyObject *obj, Py_buffer *view, int writable, const char *name) {
    return get_typed(obj, view, writable, "f", name);
}

/* max_logits(x, panels, out, n_tokens, hidden, n_panels, isa) with isa "auto" or "plain" */
static PyObject *py_max_logits(PyObject *self, PyObject *args) {
    PyObject *xo, *po, *oo;
    Py_ssize_t n_tokens, hidden, n_panels;
    const char *isa;
    if (!PyArg_ParseTuple(args, "OOOnnns", &xo, &po, &oo, &n_tokens, &hidden, &n_panels, &isa)) return NULL;
    if (n_tokens < 0 || hidden < 1 || n_panels < 0) {
        PyErr_SetString(PyExc_ValueError, "n_tokens >= 0, hidden >= 1 and n_panels >= 0, please");
        return NULL;
    }
    Py_buffer x, panels, out;
    if (get_f32(xo, &x, 0, "x")) return NULL;
    if (get_f32(po, &panels, 0, "panels")) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (get_f32(oo, &out, 1, "out")) {
        PyBuffer_Release(&x);
        PyBuffer_Release(&panels);
        return NULL;
    }
    int ok = x.len >= n_tokens * hidden * 4 && panels.len >= n_panels * hidden * PANEL * 4 &&
             out.len >= n_panels * PANEL * 4;
    if (ok) {
        int avx2 = strcmp(isa, "plain") != 0 && use_avx2();
        Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_X86
        if (avx2)
            max_logits_avx2(x.buf, n_tokens, hidden, panels.buf, n_panels, out.buf);
        else
#endif
            max_logits_plain(x.buf, n_tokens, hidden, panels.buf, n_panels, out.buf);
        Py_END_ALLOW_THREADS
        (void)avx2;
    } else {
        PyErr_SetString(PyExc_ValueError, "x, panels or out is shorter than the sizes say");
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&panels);
    PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* max_logits_i8(x, panels, scale, out, n_tokens, hidden, n_panels, isa): out[j] = scale[j] * max_t x_t . q_j */
static PyObject *py_max_logits_i8(PyObject *self, PyObject *args) {
    PyObject *xo, *po, *so, *oo;
    Py_ssize_t n_tokens, hidden, n_panels;
    const char *isa;
    if (!PyArg_ParseTuple(args, "OOOOnnns", &xo, &po, &so, &oo, &n_tokens, &hidden, &n_panels, &isa)) return NULL;
    if (n_tokens < 0 || hidden < 1 || n_panels < 0) {
        PyErr_SetString(PyExc_ValueError, "n_tokens >= 0, hidden >= 1 and n_panels >= 0, please");
        return NULL;
    }
    Py_buffer x, panels, scale, out;
    if (get_f32(xo, &x, 0, "x")) return NULL;
    if (get_typed(po, &panels, 0, "b", "panels")) goto release_x;
    if (get_f32(so, &scale, 0, "scale")) goto release_panels;
    if (get_f32(oo, &out, 1, "out")) goto release_scale;
    int ok = x.len >= n_tokens * hidden * 4 && panels.len >= n_panels * hidden * PANEL &&
             scale.len >= n_panels * PANEL * 4 && out.len >= n_panels * PANEL * 4;
    float *scratch = ok ? malloc(sizeof(float) * hidden * PANEL) : NULL;
    if (ok && scratch == NULL) {
        PyErr_NoMemory();
    } else if (ok) {
        int avx2 = strcmp(isa, "plain") != 0 && use_avx2();
        Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_X86
        if (avx2)
            max_logits_i8_avx2(x.buf, n_tokens, hidden, panels.buf, scale.buf, n_panels, scratch, out.buf);
        else
#endif
            max_logits_i8_plain(x.buf, n_tokens, hidden, panels.buf, scale.buf, n_panels, scratch, out.buf);
        Py_END_ALLOW_THREADS
        (void)avx2;
    } else {
        PyErr_SetString(PyExc_ValueError, "x, panels, scale or out is shorter than the sizes say");
    }
    free(scratch);
    PyBuffer_Release(&out);
release_scale:
    PyBuffer_Release(&scale);
release_panels:
    PyBuffer_Release(&panels);
release_x:
    PyBuffer_Release(&x);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* screen_i8(x, offsets, panels, out, n_texts, hidden4, n_panels, first, last, isa): for the terms of panels
 * [first, last), out[t][j] = max over rows r of text t (offsets[t] <= r < offsets[t + 1]) of
 * sum_k x[r][k] * q_j[k]; INT32_MIN for a text without rows. Callers split the panels over threads. */
static PyObject *py_screen_i8(PyObject *self, PyObject *args) {
    PyObject *xo, *fo, *po, *oo;
    Py_ssize_t n_texts, hidden4, n_panels, first, last;
    const char *isa;
    if (!PyArg_ParseTuple(args, "OOOOnnnnns", &xo, &fo, &po, &oo, &n_texts, &hidden4, &n_panels, &first, &last,
                          &isa))
        return NULL;
    if (n_texts < 0 || hidden4 < 1 || n_panels < 0 || first < 0 || last < first || last > n_panels) {
        PyErr_SetString(PyExc_ValueError, "n_texts >= 0, hidden4 >= 1 and 0 <= first <= last <= n_panels, please");
        return NULL;
    }
    Py_buffer x, offsets, panels, out;
    if (get_typed(xo, &x, 0, "B", "x")) return NULL;
    if (get_typed(fo, &offsets, 0, "l", "offsets")) goto release_x;
    if (get_typed(po, &panels, 0, "b", "panels")) goto release_offsets;
    if (get_typed(oo, &out, 1, "i", "out")) goto release_panels;
    const int64_t *off = offsets.buf;
    int ok = offsets.len >= (n_texts + 1) * 8 && panels.len >= n_panels * hidden4 * SCREEN_TERMS * 4 &&
             out.len >= n_texts * n_panels * SCREEN_TERMS * 4 && (n_texts == 0 || off[0] >= 0);
    for (Py_ssize_t t = 0; ok && t < n_texts; t++) ok = off[t + 1] >= off[t];
    ok = ok && (n_texts == 0 || off[n_texts] * hidden4 * 4 <= x.len);
    if (ok) {
        int avx2 = strcmp(isa, "plain") != 0 && use_avx2();
        Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_X86
        if (avx2)
            screen_i8_avx2(x.buf, off, n_texts, hidden4, panels.buf, n_panels, first, last, out.buf);
        else
#endif
            screen_i8_plain(x.buf, off, n_texts, hidden4, panels.buf, n_panels, first, last, out.buf);
        Py_END_ALLOW_THREADS
        (void)avx2;
    } else {
        PyErr_SetString(PyExc_ValueError, "x, offsets, panels or out is shorter than the sizes say");
    }
    PyBuffer_Release(&out);
release_panels:
    PyBuffer_Release(&panels);
release_offsets:
    PyBuffer_Release(&offsets);
release_x:
    PyBuffer_Release(&x);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *py_has_avx2(PyObject *self, PyObject *args) { return PyBool_FromLong(use_avx2()); }

static PyMethodDef methods[] = {
    {"max_logits", py_max_logits, METH_VARARGS,
     "max_logits(x, panels, out, n_tokens, hidden, n_panels, isa) -> None: out[j] = max_t x_t . w_j"},
    {"max_logits_i8", py_max_logits_i8, METH_VARARGS,
     "max_logits_i8(x, panels, scale, out, n_tokens, hidden, n_panels, isa) -> None: "
     "out[j] = scale[j] * max_t x_t . q_j over int8 panels"},
    {"screen_i8", py_screen_i8, METH_VARARGS,
     "screen_i8(x, offsets, panels, out, n_texts, hidden4, n_panels, first, last, isa) -> None: per text, max over its rows of "
     "the integer products of u8 rows and int8 term panels"},
    {"has_avx2", py_has_avx2, METH_NOARGS, "whether the AVX2+FMA kernel runs on this CPU"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cproject", "lsr C kernel: few-row vocabulary projection",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cproject(void) { return PyModule_Create(&module); }
