/*
 * lsr C kernels of the exact int8 screen of the vocabulary projection (lsr/encoders/int8_screen.py): per
 * text and vocabulary term, the max over the text's token states of an integer dot product (screen_i8), and
 * for one text (a query) the terms whose proven bound can be positive (select_i8).
 *
 * Why by hand: the float32 projection of every token onto a 30k vocabulary is most of a SPLADE encode on
 * CPUs without fast bfloat16, and BLAS has no integer max-pooled product. AVX2 multiplies 32 byte pairs per
 * vpmaddubsw against 8 float pairs per FMA; the AVX2 kernel is compiled for that ISA alone (a target
 * attribute, not a global -mavx2) and picked at run time when the CPU has it; elsewhere a plain C loop
 * computes the same integers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_cpu.h"

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

#ifdef HAVE_X86
/* AVX-512 VNNI: one vpdpbusd adds 4 byte products into each of 16 int32 lanes (the three AVX2 instructions'
 * work for twice the terms), the same exact integers (no saturation). Two panels side by side make the 16
 * terms; an odd last panel goes to the AVX2 kernel. Up to VNNI_ROWS rows share each panel load. */
#define VNNI_ROWS 8
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline __m512i vnni_block(
    const uint8_t *x, Py_ssize_t stride, Py_ssize_t hidden4, const int8_t *lo, const int8_t *hi, const int nr,
    __m512i best) {
    __m512i acc[VNNI_ROWS];
    for (int i = 0; i < nr; i++) acc[i] = _mm512_setzero_si512();
    for (Py_ssize_t g = 0; g < hidden4; g++) {
        __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(lo + g * 32))),
                                       _mm256_loadu_si256((const __m256i *)(hi + g * 32)), 1);
        for (int i = 0; i < nr; i++) {
            int32_t four;
            memcpy(&four, x + i * stride + g * 4, 4);
            acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_set1_epi32(four), q);
        }
    }
    for (int i = 0; i < nr; i++) best = _mm512_max_epi32(best, acc[i]);
    return best;
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void screen_i8_vnni(
    const uint8_t *x, const int64_t *offsets, Py_ssize_t n_texts, Py_ssize_t hidden4, const int8_t *panels,
    Py_ssize_t n_panels, Py_ssize_t first, Py_ssize_t last, int32_t *out) {
    Py_ssize_t width = n_panels * SCREEN_TERMS, stride = hidden4 * 4, size = hidden4 * SCREEN_TERMS * 4;
    Py_ssize_t p = first;
    for (; p + 2 <= last; p += 2) {
        const int8_t *lo = panels + p * size, *hi = lo + size;
        for (Py_ssize_t t = 0; t < n_texts; t++) {
            __m512i best = _mm512_set1_epi32(INT32_MIN);
            int64_t r = offsets[t], end = offsets[t + 1];
            for (; r + VNNI_ROWS <= end; r += VNNI_ROWS)
                best = vnni_block(x + r * stride, stride, hidden4, lo, hi, VNNI_ROWS, best);
            switch (end - r) { /* the last 1-7 rows, each count its own inlined copy */
            case 7: best = vnni_block(x + r * stride, stride, hidden4, lo, hi, 7, best); break;
            case 6: best = vnni_block(x + r * stride, stride, hidden4, lo, hi, 6, best); break;
            case 5: best = vnni_block(x + r * stride, stride, hidden4, lo, hi, 5, best); break;
            case 4: best = vnni_block(x + r * stride, stride, hidden4, lo, hi, 4, best); break;
            case 3: best = vnni_block(x + r * stride, stride, hidden4, lo, hi, 3, best); break;
            case 2: best = vnni_block(x + r * stride, stride, hidden4, lo, hi, 2, best); break;
            case 1: best = vnni_block(x + r * stride, stride, hidden4, lo, hi, 1, best); break;
            default: break;
            }
            _mm512_storeu_si512((void *)(out + t * width + p * SCREEN_TERMS), best);
        }
    }
    if (p < last) screen_i8_avx2(x, offsets, n_texts, hidden4, panels, n_panels, p, last, out);
}
#endif

static int use_avx2(void) { return cpu_avx2_fma(); }

static int use_vnni(void) { return cpu_avx512_vnni(); }

static const char *type_name(const char *format) {
    switch (format[0]) {
    case 'f': return "float32";
    case 'd': return "float64";
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


/* Whether offsets (n_texts + 1 int64 row offsets, text t holding rows offsets[t] .. offsets[t + 1]) is long
 * enough, starts at >= 0 and never decreases; the end of its last text in *rows. */
static int offsets_ok(const Py_buffer *offsets, Py_ssize_t n_texts, int64_t *rows) {
    const int64_t *off = offsets->buf;
    if (offsets->len < (n_texts + 1) * 8 || (n_texts > 0 && off[0] < 0)) return 0;
    for (Py_ssize_t t = 0; t < n_texts; t++)
        if (off[t + 1] < off[t]) return 0;
    *rows = n_texts > 0 ? off[n_texts] : 0;
    return 1;
}

/* screen_i8(x, offsets, panels, out, n_texts, hidden4, n_panels, first, last, isa): isa "auto" (the widest
 * kernel this CPU runs: AVX-512 VNNI, AVX2, plain C), "avx2" (no wider) or "plain"; for the terms of panels
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
    int64_t rows = 0;
    int ok = offsets_ok(&offsets, n_texts, &rows) && panels.len >= n_panels * hidden4 * SCREEN_TERMS * 4 &&
             out.len >= n_texts * n_panels * SCREEN_TERMS * 4 && rows * hidden4 * 4 <= x.len;
    if (ok) {
        int avx2 = strcmp(isa, "plain") != 0 && use_avx2();
        int vnni = avx2 && strcmp(isa, "avx2") != 0 && use_vnni();
        Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_X86
        if (vnni)
            screen_i8_vnni(x.buf, off, n_texts, hidden4, panels.buf, n_panels, first, last, out.buf);
        else if (avx2)
            screen_i8_avx2(x.buf, off, n_texts, hidden4, panels.buf, n_panels, first, last, out.buf);
        else
#endif
            screen_i8_plain(x.buf, off, n_texts, hidden4, panels.buf, n_panels, first, last, out.buf);
        Py_END_ALLOW_THREADS
        (void)avx2;
        (void)vnni;
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

/* quantise_i8(x, offsets, out, stats, n_texts, hidden, hidden4): the token states of consecutive texts (float32
 * rows; text t holds rows offsets[t] .. offsets[t + 1]) as the screen's u8 rows (xq + 128, padding dimensions
 * 128, i.e. xq = 0), with per text, in float64: a = max |x| / 127 (1 for a text without rows or all zeros),
 * xq = rint(x / a) clipped to [-127, 127], and stats[t] = (a, max_t a |xq_t|, max_t |x_t - a xq_t|,
 * max_t |x_t|) -- what int8_screen.py's bound needs. numpy's passes over a query's few rows cost more than
 * the screen's product. */
static void quantise_rows(const float *x, const int64_t *offsets, Py_ssize_t n_texts, Py_ssize_t hidden,
                          Py_ssize_t hidden4, uint8_t *out, double *stats) {
    for (Py_ssize_t t = 0; t < n_texts; t++) {
        double largest = 0, quantised = 0, error = 0, norm = 0;
        for (int64_t r = offsets[t]; r < offsets[t + 1]; r++)
            for (Py_ssize_t k = 0; k < hidden; k++) largest = fmax(largest, fabs((double)x[r * hidden + k]));
        double a = largest > 0 ? largest / 127.0 : 1.0;
        for (int64_t r = offsets[t]; r < offsets[t + 1]; r++) {
            double q2 = 0, e2 = 0, x2 = 0;
            for (Py_ssize_t k = 0; k < hidden4 * 4; k++) {
                double v = k < hidden ? (double)x[r * hidden + k] : 0.0;
                double xq = fmin(fmax(rint(v / a), -127.0), 127.0), e = v - xq * a;
                out[r * hidden4 * 4 + k] = (uint8_t)(xq + 128.0);
                q2 += xq * xq; e2 += e * e; x2 += v * v;
            }
            quantised = fmax(quantised, a * sqrt(q2));
            error = fmax(error, sqrt(e2));
            norm = fmax(norm, sqrt(x2));
        }
        stats[4 * t] = a; stats[4 * t + 1] = quantised; stats[4 * t + 2] = error; stats[4 * t + 3] = norm;
    }
}

static PyObject *py_quantise_i8(PyObject *self, PyObject *args) {
    PyObject *xo, *fo, *oo, *so;
    Py_ssize_t n_texts, hidden, hidden4;
    if (!PyArg_ParseTuple(args, "OOOOnnn", &xo, &fo, &oo, &so, &n_texts, &hidden, &hidden4)) return NULL;
    if (n_texts < 0 || hidden < 1 || hidden4 * 4 < hidden) {
        PyErr_SetString(PyExc_ValueError, "n_texts >= 0 and 1 <= hidden <= 4 hidden4, please");
        return NULL;
    }
    Py_buffer x, offsets, out, stats;
    if (get_typed(xo, &x, 0, "f", "x")) return NULL;
    if (get_typed(fo, &offsets, 0, "l", "offsets")) goto release_x;
    if (get_typed(oo, &out, 1, "B", "out")) goto release_offsets;
    if (get_typed(so, &stats, 1, "d", "stats")) goto release_out;
    const int64_t *off = offsets.buf;
    int64_t rows = 0;
    int ok = offsets_ok(&offsets, n_texts, &rows) && stats.len >= n_texts * 4 * 8 && rows * hidden * 4 <= x.len &&
             rows * hidden4 * 4 <= out.len;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        quantise_rows(x.buf, off, n_texts, hidden, hidden4, out.buf, stats.buf);
        Py_END_ALLOW_THREADS
    } else {
        PyErr_SetString(PyExc_ValueError, "x, offsets, out or stats is shorter than the sizes say");
    }
    PyBuffer_Release(&stats);
release_out:
    PyBuffer_Release(&out);
release_offsets:
    PyBuffer_Release(&offsets);
release_x:
    PyBuffer_Release(&x);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* select_i8(maxima, terms, out, dim, a, coef_r, coef_n) -> count: for one text, the terms j < dim (ascending,
 * into out) whose bound
 *     est_j + b_j + coef_r r_j + coef_n n_j + 1e-9 (|est_j| + |b_j|),   est_j = a s_j (M_j - 128 Q_j)
 * is positive, in float64: M_j = maxima[j] (screen_i8 of the text's u8 states; 128 Q_j undoes their +128),
 * terms = the rows (s, b, r, n, 128 Q) over the vocabulary: the term rows' scales, biases, residual norms and
 * norms. int8_screen.py derives the bound and calls this for every text, batched or alone. In C because
 * numpy's passes over the 30k terms cost a query more than the screen; the bounds of a chunk are computed first (a loop the compiler vectorises: the integers are exact
 * in float64), then the chunk's passing terms are written out. */
#define SELECT_CHUNK 256
static Py_ssize_t select_terms(const int32_t *maxima, const double *terms, Py_ssize_t dim, double a,
                               double coef_r, double coef_n, int64_t *out) {
    const double *s = terms, *b = terms + dim, *r = terms + 2 * dim, *w = terms + 3 * dim, *q128 = terms + 4 * dim;
    double bound[SELECT_CHUNK];
    Py_ssize_t n = 0;
    for (Py_ssize_t j0 = 0; j0 < dim; j0 += SELECT_CHUNK) {
        Py_ssize_t m = dim - j0 < SELECT_CHUNK ? dim - j0 : SELECT_CHUNK;
        for (Py_ssize_t i = 0; i < m; i++) {
            Py_ssize_t j = j0 + i;
            double est = a * s[j] * ((double)maxima[j] - q128[j]);
            bound[i] = est + b[j] + coef_r * r[j] + coef_n * w[j] + 1e-9 * (fabs(est) + fabs(b[j]));
        }
        for (Py_ssize_t i = 0; i < m; i++) {
            out[n] = j0 + i;
            n += bound[i] > 0; /* branch-free: a few per cent of the terms pass */
        }
    }
    return n;
}

static PyObject *py_select_i8(PyObject *self, PyObject *args) {
    PyObject *mo, *to, *oo;
    Py_ssize_t dim, n = -1;
    double a, coef_r, coef_n;
    if (!PyArg_ParseTuple(args, "OOOnddd", &mo, &to, &oo, &dim, &a, &coef_r, &coef_n)) return NULL;
    if (dim < 0) {
        PyErr_SetString(PyExc_ValueError, "dim >= 0, please");
        return NULL;
    }
    Py_buffer maxima, terms, out;
    if (get_typed(mo, &maxima, 0, "i", "maxima")) return NULL;
    if (get_typed(to, &terms, 0, "d", "terms")) goto release_maxima;
    if (get_typed(oo, &out, 1, "l", "out")) goto release_terms;
    if (maxima.len >= dim * 4 && terms.len == dim * 5 * 8 && out.len >= dim * 8) {
        Py_BEGIN_ALLOW_THREADS
        n = select_terms(maxima.buf, terms.buf, dim, a, coef_r, coef_n, out.buf);
        Py_END_ALLOW_THREADS
    } else {
        PyErr_SetString(PyExc_ValueError, "maxima or out is shorter than dim, or terms is not 5 x dim");
    }
    PyBuffer_Release(&out);
release_terms:
    PyBuffer_Release(&terms);
release_maxima:
    PyBuffer_Release(&maxima);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(n);
}

static PyObject *py_has_avx2(PyObject *self, PyObject *args) { return PyBool_FromLong(use_avx2()); }

static PyObject *py_has_vnni(PyObject *self, PyObject *args) { return PyBool_FromLong(use_vnni()); }

static PyMethodDef methods[] = {
    {"screen_i8", py_screen_i8, METH_VARARGS,
     "screen_i8(x, offsets, panels, out, n_texts, hidden4, n_panels, first, last, isa) -> None: per text, max over its rows of "
     "the integer products of u8 rows and int8 term panels"},
    {"quantise_i8", py_quantise_i8, METH_VARARGS,
     "quantise_i8(x, offsets, out, stats, n_texts, hidden, hidden4) -> None: float32 rows as the screen's u8 rows, "
     "per text (a, max a|xq|, max |x - a xq|, max |x|)"},
    {"select_i8", py_select_i8, METH_VARARGS,
     "select_i8(maxima, terms, out, dim, a, coef_r, coef_n) -> count: one text's terms whose bound is > 0"},
    {"has_avx2", py_has_avx2, METH_NOARGS, "whether the AVX2 kernel runs on this CPU"},
    {"has_vnni", py_has_vnni, METH_NOARGS, "whether the AVX-512 VNNI screen runs on this CPU (isa 'auto')"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cproject", "lsr C kernels: the exact int8 screen of the vocabulary projection",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cproject(void) { return PyModule_Create(&module); }
