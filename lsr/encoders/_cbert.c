/*
 * lsr C kernels of one text's BERT forward (lsr/encoders/bert_body.py): token ids -> the states a BERT
 * masked-LM head feeds its vocabulary projection (embeddings, post-LayerNorm encoder layers, the head's
 * transform), float32, for a single text without padding; and the float32 max logits of screened terms.
 *
 * Why by hand: a search query is a batch of one of a few tokens. On a 2-layer model (SPLADE-tiny) the
 * arithmetic is ~0.4 M multiply-adds per token, while torch spends ~15 us of dispatch per operator (~60 of
 * them: 0.5-0.7 ms a query, most of single-query latency). Here the whole forward is one call without the GIL.
 * The dense layers run an AVX2+FMA register-blocked kernel (a target attribute, picked at run time) or a plain
 * C loop elsewhere; both sum in a different order than torch's BLAS, so the states agree with the model's to
 * float32 rounding (the Python side checks them against the model before using this route).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_cpu.h"

static int allow_avx2 = 1; /* set_simd("none") turns the AVX2 kernels off (tests compare both) */

static int use_avx2(void) { return allow_avx2 && cpu_avx2_fma(); }

/* ---- y (rows x n_out) = x (rows x n_in) @ w (n_in x n_out, the torch weight transposed) + b ---- */

static void dense_plain(const float *x, Py_ssize_t rows, Py_ssize_t n_in, const float *w, const float *b,
                        Py_ssize_t n_out, float *y) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        float *out = y + r * n_out;
        memcpy(out, b, n_out * sizeof(float));
        for (Py_ssize_t i = 0; i < n_in; i++) {
            float xi = x[r * n_in + i];
            const float *wi = w + i * n_out;
            for (Py_ssize_t o = 0; o < n_out; o++) out[o] += xi * wi[o];
        }
    }
}

#ifdef HAVE_X86
/* Blocks of DENSE_ROWS rows x 16 outputs: 12 accumulators, each weight pair loaded once per block and met by
 * every row's broadcast value. Needs n_out % 16 == 0 (the caller checks). */
#define DENSE_ROWS 6
/* nr (<= DENSE_ROWS) is a constant at each call site below, so the accumulators stay in registers */
__attribute__((target("avx2,fma"), always_inline)) static inline void dense_block(
    const float *xr, Py_ssize_t n_in, const float *w, Py_ssize_t n_out, Py_ssize_t o, __m256 b0, __m256 b1,
    float *yr, const int nr) {
    __m256 acc[DENSE_ROWS][2];
    for (int r = 0; r < nr; r++) { acc[r][0] = b0; acc[r][1] = b1; }
    for (Py_ssize_t i = 0; i < n_in; i++) {
        __m256 w0 = _mm256_loadu_ps(w + i * n_out + o), w1 = _mm256_loadu_ps(w + i * n_out + o + 8);
        for (int r = 0; r < nr; r++) {
            __m256 xi = _mm256_broadcast_ss(xr + r * n_in + i);
            acc[r][0] = _mm256_fmadd_ps(xi, w0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(xi, w1, acc[r][1]);
        }
    }
    for (int r = 0; r < nr; r++) {
        _mm256_storeu_ps(yr + r * n_out + o, acc[r][0]);
        _mm256_storeu_ps(yr + r * n_out + o + 8, acc[r][1]);
    }
}

__attribute__((target("avx2,fma"))) static void dense_avx2(const float *x, Py_ssize_t rows, Py_ssize_t n_in,
                                                           const float *w, const float *b, Py_ssize_t n_out,
                                                           float *y) {
    /* outputs outermost: one block's weight columns (n_in x 64 bytes) stay in L1 across the row blocks */
    for (Py_ssize_t o = 0; o < n_out; o += 16) {
        __m256 b0 = _mm256_loadu_ps(b + o), b1 = _mm256_loadu_ps(b + o + 8);
        for (Py_ssize_t r0 = 0; r0 < rows; r0 += DENSE_ROWS) {
            const float *xr = x + r0 * n_in;
            float *yr = y + r0 * n_out;
            switch (rows - r0 < DENSE_ROWS ? rows - r0 : DENSE_ROWS) {
            case 1: dense_block(xr, n_in, w, n_out, o, b0, b1, yr, 1); break;
            case 2: dense_block(xr, n_in, w, n_out, o, b0, b1, yr, 2); break;
            case 3: dense_block(xr, n_in, w, n_out, o, b0, b1, yr, 3); break;
            case 4: dense_block(xr, n_in, w, n_out, o, b0, b1, yr, 4); break;
            case 5: dense_block(xr, n_in, w, n_out, o, b0, b1, yr, 5); break;
            default: dense_block(xr, n_in, w, n_out, o, b0, b1, yr, 6); break;
            }
        }
    }
}
#endif

static void dense(const float *x, Py_ssize_t rows, Py_ssize_t n_in, const float *w, const float *b,
                  Py_ssize_t n_out, float *y) {
#ifdef HAVE_X86
    if (n_out % 16 == 0 && use_avx2()) {
        dense_avx2(x, rows, n_in, w, b, n_out, y);
        return;
    }
#endif
    dense_plain(x, rows, n_in, w, b, n_out, y);
}

/* ---- elementwise pieces ---- */

/* a . b over n floats in 8 independent partial sums (vectorised by the compiler, no reassociation needed) */
static float dot(const float *a, const float *b, Py_ssize_t n) {
    float lane[8] = {0};
    Py_ssize_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int l = 0; l < 8; l++) lane[l] += a[c + l] * b[c + l];
    float s = 0;
    for (; c < n; c++) s += a[c] * b[c];
    for (int l = 0; l < 8; l++) s += lane[l];
    return s;
}

/* x = LayerNorm(x + residual) per row (residual may be NULL), as torch: biased variance, eps inside the root */
static void layer_norm(float *x, const float *residual, Py_ssize_t rows, Py_ssize_t h, const float *gamma,
                       const float *beta, float eps) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        float *v = x + r * h;
        if (residual)
            for (Py_ssize_t j = 0; j < h; j++) v[j] += residual[r * h + j];
        double mean = 0, var = 0;
        for (Py_ssize_t j = 0; j < h; j++) mean += v[j];
        mean /= h;
        for (Py_ssize_t j = 0; j < h; j++) var += (v[j] - mean) * (v[j] - mean);
        float inv = (float)(1.0 / sqrt(var / h + eps));
        for (Py_ssize_t j = 0; j < h; j++) v[j] = (float)((v[j] - mean) * inv) * gamma[j] + beta[j];
    }
}

/* the erf GELU of BERT's "gelu": x / 2 (1 + erf(x / sqrt 2)) */
static void gelu_plain(float *x, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

#ifdef HAVE_X86
/* exp of 8 floats: n = round(x log2 e), exp(x - n ln 2) by Cephes' expf polynomial (~1 ulp), times 2^n;
 * x clamped to [-87.3, 88.3] (exp of the lower end is the smallest normal float) */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 exp8(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-87.3365478515625f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(scale));
}

/* erf by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7, the formula torch's own vectorised erf uses):
 * 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1 / (1 + p |x|), with the sign of x */
__attribute__((target("avx2,fma"))) static void gelu_avx2(float *x, Py_ssize_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), z = _mm256_mul_ps(v, _mm256_set1_ps((float)M_SQRT1_2));
        __m256 a = _mm256_andnot_ps(sign, z);
        __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, one));
        __m256 poly = _mm256_set1_ps(1.061405429f);
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
        poly = _mm256_mul_ps(poly, t);
        __m256 erf_abs = _mm256_fnmadd_ps(poly, exp8(_mm256_mul_ps(_mm256_xor_ps(a, sign), a)), one);
        __m256 erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, sign));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, erf)));
    }
    gelu_plain(x + i, n - i);
}
#endif

static void gelu(float *x, Py_ssize_t n) {
#ifdef HAVE_X86
    if (use_avx2()) {
        gelu_avx2(x, n);
        return;
    }
#endif
    gelu_plain(x, n);
}

/* multi-head self-attention of one unpadded text: qkv (t x 3h, heads side by side) -> ctx (t x h) */
static void attention(const float *qkv, Py_ssize_t t, Py_ssize_t h, Py_ssize_t heads, float *scores, float *ctx) {
    Py_ssize_t d = h / heads;
    float scale = 1.0f / sqrtf((float)d);
    for (Py_ssize_t head = 0; head < heads; head++) {
        for (Py_ssize_t i = 0; i < t; i++) {
            const float *q = qkv + i * 3 * h + head * d;
            float top = -INFINITY;
            for (Py_ssize_t j = 0; j < t; j++) {
                const float *k = qkv + j * 3 * h + h + head * d;
                scores[j] = dot(q, k, d) * scale;
                top = scores[j] > top ? scores[j] : top;
            }
            float total = 0;
            for (Py_ssize_t j = 0; j < t; j++) total += scores[j] = expf(scores[j] - top);
            float *out = ctx + i * h + head * d;
            memset(out, 0, d * sizeof(float));
            for (Py_ssize_t j = 0; j < t; j++) {
                const float *v = qkv + j * 3 * h + 2 * h + head * d;
                float p = scores[j] / total;
                for (Py_ssize_t c = 0; c < d; c++) out[c] += p * v[c];
            }
        }
    }
}

/* ---- the forward. Packed float32 parameters, in order (dense weights transposed to n_in x n_out):
 *   position (max_positions x h), token type 0 (h), embedding LayerNorm gamma, beta (h, h);
 *   per layer: query|key|value (h x 3h), their biases (3h), attention output (h x h), bias (h), LayerNorm (h, h),
 *              intermediate (h x inter), bias (inter), output (inter x h), bias (h), LayerNorm (h, h);
 *   head transform: dense (h x h), bias (h), LayerNorm (h, h). ---- */

static Py_ssize_t packed_size(Py_ssize_t h, Py_ssize_t inter, Py_ssize_t layers, Py_ssize_t positions) {
    Py_ssize_t layer = h * 3 * h + 3 * h + h * h + h + 2 * h + h * inter + inter + inter * h + h + 2 * h;
    return positions * h + 3 * h + layers * layer + h * h + 3 * h;
}

static int forward(const int64_t *ids, Py_ssize_t t, const float *words, Py_ssize_t vocab, const float *p,
                   Py_ssize_t h, Py_ssize_t inter, Py_ssize_t layers, Py_ssize_t heads, Py_ssize_t positions,
                   float eps, float *x) {
    float *qkv = malloc(sizeof(float) * (t * 3 * h + t * h + t * inter + t));
    if (!qkv) return -1;
    float *ctx = qkv + t * 3 * h, *mid = ctx + t * h, *scores = mid + t * inter;
    const float *position = p, *type0 = p + positions * h;
    p = type0 + h;
    for (Py_ssize_t i = 0; i < t; i++)
        for (Py_ssize_t j = 0; j < h; j++) x[i * h + j] = words[ids[i] * h + j] + type0[j] + position[i * h + j];
    layer_norm(x, NULL, t, h, p, p + h, eps);
    p += 2 * h;
    for (Py_ssize_t layer = 0; layer < layers; layer++) {
        const float *w_qkv = p, *b_qkv = w_qkv + h * 3 * h, *w_out = b_qkv + 3 * h, *b_out = w_out + h * h;
        const float *ln1 = b_out + h, *w_mid = ln1 + 2 * h, *b_mid = w_mid + h * inter, *w_down = b_mid + inter;
        const float *b_down = w_down + inter * h, *ln2 = b_down + h;
        p = ln2 + 2 * h;
        dense(x, t, h, w_qkv, b_qkv, 3 * h, qkv);
        attention(qkv, t, h, heads, scores, ctx);
        dense(ctx, t, h, w_out, b_out, h, qkv);  /* qkv is free again: the attention output */
        layer_norm(qkv, x, t, h, ln1, ln1 + h, eps);
        memcpy(x, qkv, sizeof(float) * t * h);
        dense(x, t, h, w_mid, b_mid, inter, mid);
        gelu(mid, t * inter);
        dense(mid, t, inter, w_down, b_down, h, qkv);
        layer_norm(qkv, x, t, h, ln2, ln2 + h, eps);
        memcpy(x, qkv, sizeof(float) * t * h);
    }
    dense(x, t, h, p, p + h * h, h, qkv);
    gelu(qkv, t * h);
    layer_norm(qkv, NULL, t, h, p + h * h + h, p + h * h + 2 * h, eps);
    memcpy(x, qkv, sizeof(float) * t * h);
    free(qkv);
    (void)vocab;
    return 0;
}

static void release(Py_buffer *const *bufs, int n) {
    for (int i = 0; i < n; i++) PyBuffer_Release(bufs[i]);
}

static int need(Py_buffer *buf, Py_ssize_t items, Py_ssize_t itemsize, const char *what) {
    if (buf->itemsize != itemsize || buf->len < items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: need %zd items of %zd bytes, got %zd bytes of items of %zd", what,
                     items, itemsize, buf->len, buf->itemsize);
        return 0;
    }
    return 1;
}

static PyObject *py_bert_forward(PyObject *self, PyObject *args) {
    Py_buffer ids, words, params, out;
    Py_ssize_t h, inter, layers, heads, positions;
    float eps;
    if (!PyArg_ParseTuple(args, "y*y*y*w*nnnnnf", &ids, &words, &params, &out, &h, &inter, &layers, &heads,
                          &positions, &eps))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t t = ids.len / (Py_ssize_t)sizeof(int64_t), vocab = h > 0 ? words.len / (h * 4) : 0;
    if (h <= 0 || inter <= 0 || layers < 0 || heads <= 0 || h % heads || positions <= 0) {
        PyErr_SetString(PyExc_ValueError, "bert_forward: bad sizes");
        goto done;
    }
    if (t < 1 || t > positions) {
        PyErr_Format(PyExc_ValueError, "bert_forward: %zd tokens, the model holds 1 to %zd", t, positions);
        goto done;
    }
    if (!need(&ids, t, 8, "ids") || !need(&words, vocab * h, 4, "word embeddings") ||
        !need(&params, packed_size(h, inter, layers, positions), 4, "parameters") || !need(&out, t * h, 4, "out"))
        goto done;
    const int64_t *id = ids.buf;
    for (Py_ssize_t i = 0; i < t; i++)
        if (id[i] < 0 || id[i] >= vocab) {
            PyErr_Format(PyExc_ValueError, "bert_forward: token id %lld outside the vocabulary (%zd)",
                         (long long)id[i], vocab);
            goto done;
        }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = forward(id, t, words.buf, vocab, params.buf, h, inter, layers, heads, positions, eps, out.buf);
    Py_END_ALLOW_THREADS
    if (rc) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    release((Py_buffer *const[]){&ids, &words, &params, &out}, 4);
    return result;
}

static PyObject *py_packed_size(PyObject *self, PyObject *args) {
    Py_ssize_t h, inter, layers, positions;
    if (!PyArg_ParseTuple(args, "nnnn", &h, &inter, &layers, &positions)) return NULL;
    return PyLong_FromSsize_t(packed_size(h, inter, layers, positions));
}

/* ---- one text's float32 max logits of the screened terms: out[j] = max over rows of x_r . w[terms[j]] +
 * bias[terms[j]] (the bias after the max, as pooling.exact_max_logits) ---- */
static PyObject *py_max_logits(PyObject *self, PyObject *args) {
    Py_buffer x, w, bias, terms, out;
    Py_ssize_t h;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*n", &x, &w, &bias, &terms, &out, &h)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t rows = h > 0 ? x.len / (h * 4) : 0, vocab = bias.len / 4, n = terms.len / 8;
    if (h <= 0 || !need(&x, rows * h, 4, "x") || !need(&w, vocab * h, 4, "weight") || !need(&bias, vocab, 4, "bias")
        || !need(&terms, n, 8, "terms") || !need(&out, n, 4, "out"))
        goto done;
    const int64_t *term = terms.buf;
    for (Py_ssize_t j = 0; j < n; j++)
        if (term[j] < 0 || term[j] >= vocab) {
            PyErr_SetString(PyExc_ValueError, "max_logits: a term outside the vocabulary");
            goto done;
        }
    /* the selected rows gathered as a (h x n16) matrix, so that the dense kernel multiplies them out */
    Py_ssize_t n16 = (n + 15) / 16 * 16;
    float *wt = calloc(h * n16 + n16 + rows * n16 + 1, sizeof(float));
    if (!wt) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const float *ws = w.buf, *bs = bias.buf;
    float *zero = wt + h * n16, *y = zero + n16, *o = out.buf;
    for (Py_ssize_t j = 0; j < n; j++)
        for (Py_ssize_t c = 0; c < h; c++) wt[c * n16 + j] = ws[term[j] * h + c];
    dense(x.buf, rows, h, wt, zero, n16, y);
    for (Py_ssize_t j = 0; j < n; j++) {
        float best = -INFINITY;
        for (Py_ssize_t r = 0; r < rows; r++) best = y[r * n16 + j] > best ? y[r * n16 + j] : best;
        o[j] = best + bs[term[j]];
    }
    Py_END_ALLOW_THREADS
    free(wt);
    result = Py_None;
    Py_INCREF(result);
done:
    release((Py_buffer *const[]){&x, &w, &bias, &terms, &out}, 5);
    return result;
}

static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    const char *level;
    if (!PyArg_ParseTuple(args, "s", &level)) return NULL;
    if (strcmp(level, "avx2") && strcmp(level, "none")) {
        PyErr_Format(PyExc_ValueError, "set_simd: level %s is not one of avx2, none", level);
        return NULL;
    }
    allow_avx2 = strcmp(level, "avx2") == 0;
    return PyUnicode_FromString(use_avx2() ? "avx2" : "none");
}

static PyMethodDef methods[] = {
    {"set_simd", py_set_simd, METH_VARARGS,
     "set_simd(level) -> the level in use: 'avx2' (where the CPU has AVX2 and FMA) or 'none' (plain C)"},
    {"bert_forward", py_bert_forward, METH_VARARGS,
     "bert_forward(ids, words, params, out, hidden, intermediate, layers, heads, positions, eps) -> None: one "
     "unpadded text's BERT head input (tokens x hidden) into out"},
    {"packed_size", py_packed_size, METH_VARARGS,
     "packed_size(hidden, intermediate, layers, positions) -> float32 items bert_forward's params must hold"},
    {"max_logits", py_max_logits, METH_VARARGS,
     "max_logits(x, weight, bias, terms, out, hidden) -> None: per term, max over x's rows of the product with "
     "its weight row, plus its bias"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cbert", "lsr C kernels: one text's BERT forward",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cbert(void) { return PyModule_Create(&module); }
