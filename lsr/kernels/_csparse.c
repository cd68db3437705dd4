/*
 * lsr C kernels: exact top-k of sparse queries over one segment's term-major postings.
 *
 *   taat_topk      exhaustive term-at-a-time accumulation + bounded heap
 *   blockmax_topk  block-max pruning: per-term maxima over blocks of consecutive doc ids bound each block's
 *                  scores; the best-bounded blocks seed the top k, then every block whose bound can still
 *                  beat the k-th score is scored, by decreasing bound; exact when alpha == 1
 *   mass_prune, rescore_topk
 *                  the two steps of two-step search (approximate): a query's heaviest terms, and the exact
 *                  scores of candidate documents on the forward index
 *
 * The same algorithms as lsr/kernels/_numba.py, line for line (two-step's pruning is numpy there), and the
 * same result as the scipy oracle (lsr/kernels/reference.py): score = sum over query terms, in query order,
 * of q * w in float32; ties broken by ascending document id; hits with score <= 0 or deleted are never
 * returned.
 *
 * Arrays come in through the buffer protocol (numpy arrays and memory maps, no copies). Every length is
 * checked before the loop and every id read from an array is bounds-checked inside it: bad input raises
 * ValueError, never a crash. The GIL is released around the loops; results go into preallocated output
 * arrays, and a call handles the query range [q_start, q_end) so Python threads can split a batch.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9
#define HAVE_SIMD_TERM 1 /* GCC: per-function AVX2 / AVX-512 code, chosen at run time (dense_*_avx*) */
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------------------------ buffers */
typedef enum { W_F32, W_U8, W_U16 } wtype_t;

typedef struct {
    Py_buffer view;
    int held;
} buf_t;

static void release_all(buf_t *bufs, int n) {
    for (int i = 0; i < n; i++) {
        if (bufs[i].held) {
            PyBuffer_Release(&bufs[i].view);
            bufs[i].held = 0;
        }
    }
}

/* kind: 'i' int32, 'I' uint32, 'q' int64, 'f' float32, 'w' weights (float32/uint8/uint16), 'u' uint8,
 * 'b' block ids (int32, or uint16 where a segment has at most 65,536 blocks) */
static int get_buf(PyObject *obj, buf_t *b, char kind, int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s array", name, writable ? " writable" : "");
        return -1;
    }
    b->held = 1;
    const char *f = b->view.format ? b->view.format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    Py_ssize_t size = b->view.itemsize;
    int ok;
    switch (kind) {
        case 'i': ok = size == 4 && (*f == 'i' || *f == 'l'); break;
        case 'q': ok = size == 8 && (*f == 'q' || *f == 'l'); break;
        case 'f': ok = size == 4 && *f == 'f'; break;
        case 'u': ok = size == 1 && (*f == 'B' || *f == '?' || *f == 'b'); break;
        case 'I': ok = size == 4 && (*f == 'I' || *f == 'L'); break;
        case 'b': ok = (size == 4 && (*f == 'i' || *f == 'l')) || (size == 2 && *f == 'H'); break;
        case 'w': ok = (size == 4 && *f == 'f') || (size == 1 && *f == 'B') || (size == 2 && *f == 'H'); break;
        default: ok = 0;
    }
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s has dtype format '%s' (itemsize %zd), which this kernel does not take",
                     name, f, size);
        return -1;
    }
    return 0;
}

static inline Py_ssize_t n_items(const buf_t *b) { return b->view.len / b->view.itemsize; }

static wtype_t weight_type(const buf_t *b) {
    if (b->view.itemsize == 1) return W_U8;
    if (b->view.itemsize == 2) return W_U16;
    return W_F32;
}

static inline float weight_at(const void *w, wtype_t t, int64_t p) {
    switch (t) {
        case W_U8: return (float)((const uint8_t *)w)[p];
        case W_U16: return (float)((const uint16_t *)w)[p];
        default: return ((const float *)w)[p];
    }
}

/* ------------------------------------------------------------------------------------------ heap */
/* A min-heap on rank of capacity k: the root is the worst hit kept. (s_a, d_a) ranks below (s_b, d_b)
 * when it has a lower score, or the same score and a larger id. */
static inline int worse(float sa, int64_t da, float sb, int64_t db) { return sa < sb || (sa == sb && da > db); }

static inline __attribute__((always_inline)) void sift_down(float *hs, int64_t *hd, int64_t size, int64_t pos) {
    for (;;) {
        int64_t left = 2 * pos + 1, child;
        if (left >= size) return;
        child = left;
        if (left + 1 < size && worse(hs[left + 1], hd[left + 1], hs[left], hd[left])) child = left + 1;
        if (!worse(hs[child], hd[child], hs[pos], hd[pos])) return;
        float ts = hs[pos]; hs[pos] = hs[child]; hs[child] = ts;
        int64_t td = hd[pos]; hd[pos] = hd[child]; hd[child] = td;
        pos = child;
    }
}

static inline __attribute__((always_inline)) int64_t heap_offer(float *hs, int64_t *hd, int64_t size, int64_t k, float s, int64_t d) {
    if (size < k) {
        int64_t pos = size;
        hs[pos] = s; hd[pos] = d;
        while (pos > 0) {
            int64_t parent = (pos - 1) / 2;
            if (!worse(hs[pos], hd[pos], hs[parent], hd[parent])) break;
            float ts = hs[pos]; hs[pos] = hs[parent]; hs[parent] = ts;
            int64_t td = hd[pos]; hd[pos] = hd[parent]; hd[parent] = td;
            pos = parent;
        }
        return size + 1;
    }
    if (worse(hs[0], hd[0], s, d)) {
        hs[0] = s; hd[0] = d;
        sift_down(hs, hd, size, 0);
    }
    return size;
}

static void heap_drain(float *hs, int64_t *hd, int64_t size, int64_t *out_ids, float *out_scores, int64_t id_base) {
    while (size > 0) {
        size--;
        out_scores[size] = hs[0];
        out_ids[size] = hd[0] + id_base;
        hs[0] = hs[size]; hd[0] = hd[size];
        sift_down(hs, hd, size, 0);
    }
}

/* ------------------------------------------------------------------------------------------ shared checks */
/* A segment's postings: term t's weights are [offsets[t], offsets[t+1]); which documents they belong to is
 * coded in the term's block entries [b_offsets[t], b_offsets[t+1]): entry e covers block ids[e] (documents
 * ids[e] * block_size ...), and bit r of byte i of its mask (masks[e * mask_bytes + i]) is one posting, of
 * document ids[e] * block_size + 8 i + r, taking the next weight of the term (see lsr/kernels/_arrays.py). */
typedef struct {
    const int64_t *offsets; int64_t dim;
    const void *weights; wtype_t wtype; int64_t n_postings;
    const int64_t *b_offsets; const void *ids; int ids16; const uint8_t *masks; int64_t n_entries;
    int64_t block_size, mask_bytes, n_blocks;
    const int64_t *q_indptr; const int32_t *q_indices; const float *q_values; int64_t n_queries;
    const uint8_t *deleted; int64_t n_docs; int64_t k;
    int64_t *out_ids; float *out_scores;
    int64_t q_start, q_end, id_base;
} job_t;

static int check_common(job_t *j, buf_t *b_off, buf_t *b_w, buf_t *b_boff, buf_t *b_ids, buf_t *b_masks,
                        buf_t *b_qp, buf_t *b_qi, buf_t *b_qv, buf_t *b_del, buf_t *b_oi, buf_t *b_os) {
    j->offsets = b_off->view.buf; j->dim = n_items(b_off) - 1;
    j->weights = b_w->view.buf; j->wtype = weight_type(b_w);
    j->n_postings = n_items(b_w);
    j->b_offsets = b_boff->view.buf; j->ids = b_ids->view.buf; j->ids16 = b_ids->view.itemsize == 2; j->masks = b_masks->view.buf;
    j->n_entries = n_items(b_ids);
    j->q_indptr = b_qp->view.buf; j->q_indices = b_qi->view.buf; j->q_values = b_qv->view.buf;
    j->n_queries = n_items(b_qp) - 1;
    j->deleted = n_items(b_del) ? b_del->view.buf : NULL;
    j->out_ids = b_oi->view.buf; j->out_scores = b_os->view.buf;
    if (j->dim < 0 || j->n_queries < 0) { PyErr_SetString(PyExc_ValueError, "offsets and q_indptr need >= 1 entry"); return -1; }
    if (j->offsets[0] != 0 || j->offsets[j->dim] != j->n_postings) {
        PyErr_SetString(PyExc_ValueError, "offsets must start at 0 and end at the number of postings"); return -1;
    }
    if (j->block_size < 1 || j->block_size > (1 << 16)) {
        PyErr_SetString(PyExc_ValueError, "block_size must be in [1, 65536]"); return -1;
    }
    j->mask_bytes = (j->block_size + 7) / 8;
    j->n_blocks = j->n_docs >= 0 ? (j->n_docs + j->block_size - 1) / j->block_size : 0;
    if (n_items(b_boff) != j->dim + 1 || j->b_offsets[0] != 0 || j->b_offsets[j->dim] != j->n_entries) {
        PyErr_SetString(PyExc_ValueError, "block_offsets must have dim + 1 entries spanning the blocks"); return -1;
    }
    if (n_items(b_masks) != j->n_entries * j->mask_bytes) {
        PyErr_SetString(PyExc_ValueError, "masks must have n_entries x mask_bytes entries"); return -1;
    }
    int64_t q_nnz = n_items(b_qi);
    if (n_items(b_qv) != q_nnz || j->q_indptr[0] != 0 || j->q_indptr[j->n_queries] != q_nnz) {
        PyErr_SetString(PyExc_ValueError, "q_indptr, q_indices and q_values are inconsistent"); return -1;
    }
    for (int64_t q = 0; q < j->n_queries; q++)
        if (j->q_indptr[q + 1] < j->q_indptr[q]) { PyErr_SetString(PyExc_ValueError, "q_indptr must be non-decreasing"); return -1; }
    /* every query term's posting range must lie inside the postings: what the loops rely on. (The index's
     * other offsets are checked the same way, per query term, where they are used: O(query), not O(dim).) */
    for (int64_t i = 0; i < q_nnz; i++) {
        int32_t t = j->q_indices[i];
        if (t < 0 || t >= j->dim) {
            PyErr_Format(PyExc_ValueError, "query term id %d is outside [0, %lld)", t, (long long)j->dim);
            return -1;
        }
        if (j->offsets[t] < 0 || j->offsets[t] > j->offsets[t + 1] || j->offsets[t + 1] > j->n_postings ||
            j->b_offsets[t] < 0 || j->b_offsets[t] > j->b_offsets[t + 1] || j->b_offsets[t + 1] > j->n_entries) {
            PyErr_SetString(PyExc_ValueError, "offsets of a query term are out of order or range (corrupt index?)");
            return -1;
        }
    }
    if (j->n_docs < 0 || j->k < 1) { PyErr_SetString(PyExc_ValueError, "n_docs must be >= 0 and k >= 1"); return -1; }
    if (j->deleted && n_items(b_del) != j->n_docs) { PyErr_SetString(PyExc_ValueError, "deleted mask length != n_docs"); return -1; }
    if (j->q_start < 0 || j->q_end > j->n_queries || j->q_start > j->q_end) {
        PyErr_SetString(PyExc_ValueError, "query range outside the batch"); return -1;
    }
    if (n_items(b_oi) != j->n_queries * j->k || n_items(b_os) != j->n_queries * j->k) {
        PyErr_SetString(PyExc_ValueError, "outputs must have n_queries x k entries"); return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ scratch */
/* Per-thread buffers kept between calls: a one-query call must not allocate and zero n_docs floats.
 * Buffers marked "zeroed" are handed out all zero and every kernel leaves them all zero again (it resets
 * exactly what it touched); on an error path they are freed instead. */
typedef struct { void *p; size_t bytes; } tl_buf_t;

static __thread tl_buf_t tl_acc, tl_seen, tl_touched, tl_ub, tl_cand, tl_local, tl_seed_s, tl_seed_b, tl_hs, tl_hd,
    tl_qtable;

/* Buffers of 2 MiB and more are 2 MiB-aligned and asked to be backed by huge pages (where the kernel's
 * transparent huge pages are on "madvise", the common default, memory is only backed so when asked): a
 * query's terms each walk the whole accumulator, which at 1M documents spans a thousand 4 KiB pages. */
#define HUGE_PAGE ((size_t)2 << 20)

static void *alloc_buffer(size_t bytes, int zeroed) {
#ifdef __linux__
    if (bytes >= HUGE_PAGE) {
        void *p = NULL;
        size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        if (posix_memalign(&p, HUGE_PAGE, rounded) != 0) return NULL;
        madvise(p, rounded, MADV_HUGEPAGE); /* advice only: without it the buffer is merely slower */
        if (zeroed) memset(p, 0, bytes);
        return p;
    }
#endif
    return zeroed ? calloc(bytes, 1) : malloc(bytes);
}

static void *tl_get(tl_buf_t *b, size_t bytes, int zeroed) {
    if (bytes == 0) bytes = 1;
    if (b->bytes < bytes) {
        free(b->p);
        b->p = alloc_buffer(bytes, zeroed);
        b->bytes = b->p ? bytes : 0;
    }
    return b->p;
}

static void tl_drop(tl_buf_t *b) { free(b->p); b->p = NULL; b->bytes = 0; }

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* The scoring entry points are compiled twice, for x86-64-v3 (AVX2, BMI2, LZCNT, POPCNT: x86 CPUs since
 * 2013-2015) and for baseline x86-64, and the dynamic loader picks the clone that the CPU runs (ifunc).
 * The extension stays portable (no -march=native), and the common CPU gets vector code: decoding a mask
 * byte's doc ids is one vector store, and format 4's exhaustive search ran 25% slower without it. GCC 12
 * knows the x86-64-v3 level by name; other compilers build the baseline only. */
#if defined(__x86_64__) && defined(__linux__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__has_attribute)
#if __has_attribute(target_clones)
#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
#endif
#ifndef HOT
#define HOT
#endif

/* returns 0, -1 (out of memory) or -2 (a doc id out of range). `wt` is a compile-time constant at each call
 * site below, so the weight-type switch in weight_at folds away: one specialised loop per stored type. */
typedef struct { float *acc; uint8_t *seen; int32_t *touched; } taat_scratch_t;

/* floats of the accumulator past the last document: the AVX2 dense step reads and writes back 8 scores at once */
#define ACC_PAD 8

static int taat_scratch_get(taat_scratch_t *ts, int64_t n_docs) {
    ts->acc = tl_get(&tl_acc, sizeof(float) * (size_t)(n_docs + ACC_PAD), 1);
    ts->seen = tl_get(&tl_seen, (size_t)n_docs, 1);
    ts->touched = tl_get(&tl_touched, sizeof(int32_t) * (size_t)n_docs, 0);
    return ts->acc && ts->seen && ts->touched ? 0 : -1;
}

/* after an error the zeroed buffers may hold garbage: drop them */
static void taat_scratch_drop(void) { tl_drop(&tl_acc); tl_drop(&tl_seen); }

/* Block id of entry e (the branch goes the same way for a whole segment). */
static inline int32_t block_id(const job_t *j, int64_t e) {
    return j->ids16 ? (int32_t)((const uint16_t *)j->ids)[e] : ((const int32_t *)j->ids)[e];
}

/* Offer a hit unless it cannot enter the full heap: the common case costs one comparison, no call. */
#define OFFER(hs, hd, size, k, s, d) \
    do { if ((size) < (k) || worse((hs)[0], (hd)[0], (s), (d))) (size) = heap_offer((hs), (hd), (size), (k), (s), (d)); } while (0)

/* A query touching at least n_docs / DENSE_SCAN_RATIO postings accumulates without bookkeeping and then
 * scans the whole accumulator: cheaper than recording each newly touched document (measured on
 * enwiki-100k, where a 16-term query touches twice as many postings as there are documents). */
#define DENSE_SCAN_RATIO 4

/* BIT_POS[m]: the positions of the set bits of byte m, ascending, then zeros (filled at module init). */
static uint8_t BIT_POS[256][8];

static void init_bit_pos(void) {
    for (int m = 0; m < 256; m++)
        for (int r = 0, n = 0; r < 8; r++)
            if (m >> r & 1) BIT_POS[m][n++] = (uint8_t)r;
}

/* Doc ids decoded per pass of taat_term: 8 KiB of stack, in L1 while they are accumulated. (Accumulating
 * a large collection window by window, every term's postings of an L2-sized range of documents at a time,
 * was tried and ran 13% slower at 1M documents, and 1.33x slower when tried again on format 4 with 128k-document
 * windows: a term's adds walk the accumulator in ascending order, which the hardware prefetcher follows, so the
 * 4 MiB accumulator costs little beyond L2, while sixteen terms' posting streams read in turn defeat it. A
 * software prefetch of acc[docs[i + 16..64]] in the loop below also ran 7-15% slower.) */
#define DECODE_CHUNK 2048

/* Dense accumulation of one term with vector steps: each mask byte's postings are added to its documents'
 * scores in one step -- the byte's weights loaded as 8 consecutive values, spread over the lanes of its set
 * bits, multiplied by w and added under the mask -- instead of decoding doc ids and adding one posting at a
 * time (measured on this project's Intel Xeon at k = 1000: 0.80x exhaustive scoring's time on enwiki-100k,
 * 0.70x on a synthetic 1M collection). Two variants, picked at run time by CPU: AVX-512 F+VL (x86 since
 * 2017-2019) spreads with vpexpandd and touches only the set lanes (masked loads and stores); AVX2 (x86 since
 * 2013-2015) spreads with a permutation from SPREAD[m], adds to all 8 lanes and keeps the unset lanes' old
 * values by a blend, so it reads and writes back up to 7 scores past the last document (the accumulator has
 * ACC_PAD floats of slack). Every set lane computes w x weight and adds it to the same score as the scalar
 * loop, so the sums are bit for bit the same. The 8 consecutive weights may reach past the term's postings
 * (into the next term's, read but not used), never past the weights array: entries within 8 postings of its
 * end take the scalar step. Returns 1 for corrupt postings, as taat_term. For block sizes up to 8 (one mask
 * byte per entry; 8 is the default). */

enum { SIMD_NONE, SIMD_AVX2, SIMD_AVX512 };
static const char *const SIMD_NAMES[] = {"none", "avx2", "avx512"};
static int simd_cap = SIMD_AVX512; /* set_simd() lowers it (tests, benchmarks of an older CPU) */

static int cpu_simd(void) {
    static int known = -1;
    if (known < 0) {
        known = SIMD_NONE;
#ifdef HAVE_SIMD_TERM
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2")) known = SIMD_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) known = SIMD_AVX512;
#endif
    }
    return known;
}

static int simd_level(void) { int c = cpu_simd(); return c < simd_cap ? c : simd_cap; }

#ifdef HAVE_SIMD_TERM
/* SPREAD[m][r]: for a set bit r of m, its rank among m's set bits (the weight that lane r takes) */
static int32_t SPREAD[256][8];

static void init_spread(void) {
    for (int m = 0; m < 256; m++)
        for (int r = 0, n = 0; r < 8; r++) SPREAD[m][r] = m >> r & 1 ? n++ : 0;
}

/* one entry's vector step, or its scalar step near the end of the weights array */
#define DENSE_TERM(name, TARGET, STEP)                                                                       \
    __attribute__((target(TARGET), noinline)) static int name(const job_t *j, int32_t term, float w, float *acc) { \
        const int64_t n_docs = j->n_docs, n_blocks = j->n_blocks, bs = j->block_size, vec_end = j->n_postings - 8; \
        int64_t p = j->offsets[term], p_end = j->offsets[term + 1];                                       \
        const __m256 wv = _mm256_set1_ps(w);                                                              \
        for (int64_t e = j->b_offsets[term], e_end = j->b_offsets[term + 1]; e < e_end; e++) {             \
            int32_t b = block_id(j, e);                                                                   \
            if ((uint32_t)b >= (uint64_t)n_blocks) return 1;                                              \
            unsigned m = j->masks[e];                                                                     \
            int64_t base = (int64_t)b * bs;                                                               \
            if (m && base + 31 - __builtin_clz(m) >= n_docs) return 1;                                   \
            if (p <= vec_end) {                                                                           \
                STEP;                                                                                     \
            } else {                                                                                      \
                for (int64_t q = p, r = 0; r < 8; r++)                                                    \
                    if (m >> r & 1) acc[base + r] += w * weight_at(j->weights, j->wtype, q++);            \
            }                                                                                             \
            p += __builtin_popcount(m);                                                                   \
        }                                                                                                 \
        return p != p_end;                                                                                \
    }

#define LOAD8_F32 _mm256_loadu_ps((const float *)j->weights + p)
#define LOAD8_U8 _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)j->weights + p))))
#define LOAD8_U16 _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)j->weights + p))))

#define STEP_AVX512(LOAD8)                                                                                \
    __m256 a = _mm256_maskz_loadu_ps((__mmask8)m, acc + base);                                            \
    a = _mm256_add_ps(a, _mm256_mul_ps(wv, _mm256_maskz_expand_ps((__mmask8)m, LOAD8)));                   \
    _mm256_mask_storeu_ps(acc + base, (__mmask8)m, a)

/* the weights are converted before they are permuted: the conversion is exact, and an unset lane's garbage
 * is discarded by the blend */
#define STEP_AVX2(LOAD8)                                                                                  \
    __m256 x = _mm256_permutevar8x32_ps(LOAD8, _mm256_loadu_si256((const __m256i *)SPREAD[m]));            \
    __m256i bits = _mm256_and_si256(_mm256_set1_epi32((int)m), _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128)); \
    __m256 set = _mm256_castsi256_ps(_mm256_cmpeq_epi32(bits, _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128))); \
    __m256 a = _mm256_loadu_ps(acc + base);                                                               \
    _mm256_storeu_ps(acc + base, _mm256_blendv_ps(a, _mm256_add_ps(a, _mm256_mul_ps(wv, x)), set))

DENSE_TERM(dense_f32_avx512, "avx512f,avx512vl", STEP_AVX512(LOAD8_F32))
DENSE_TERM(dense_u8_avx512, "avx512f,avx512vl", STEP_AVX512(LOAD8_U8))
DENSE_TERM(dense_u16_avx512, "avx512f,avx512vl", STEP_AVX512(LOAD8_U16))
DENSE_TERM(dense_f32_avx2, "avx2", STEP_AVX2(LOAD8_F32))
DENSE_TERM(dense_u8_avx2, "avx2", STEP_AVX2(LOAD8_U8))
DENSE_TERM(dense_u16_avx2, "avx2", STEP_AVX2(LOAD8_U16))

/* query q's dense accumulation by vector steps at the given level (> SIMD_NONE) */
static int accumulate_simd(const job_t *j, int64_t q, float *acc, int level, const wtype_t wt) {
    int (*step)(const job_t *, int32_t, float, float *) =
        level == SIMD_AVX512 ? (wt == W_U8 ? dense_u8_avx512 : wt == W_U16 ? dense_u16_avx512 : dense_f32_avx512)
                             : (wt == W_U8 ? dense_u8_avx2 : wt == W_U16 ? dense_u16_avx2 : dense_f32_avx2);
    for (int64_t i = j->q_indptr[q]; i < j->q_indptr[q + 1]; i++)
        if (step(j, j->q_indices[i], j->q_values[i], acc)) return 1;
    return 0;
}
#endif

/* Add w x term's postings into acc (recording newly touched documents when track); returns 1 when the
 * term's entries name a block or document out of range or do not account for exactly its postings.
 * Decoding writes all 8 candidate ids of a mask byte and advances by its popcount, so it has no branch
 * that depends on the bits (a loop over the set bits mispredicts once per entry and ran at half speed);
 * then the accumulation is the plain loop over ids. mb is a constant where the caller passes one. */
ALWAYS_INLINE int taat_term(const job_t *j, int32_t term, float w, float *acc, uint8_t *seen, int32_t *touched,
                            int64_t *n_touched, const int track, const int64_t mb, const wtype_t wt) {
    const int64_t bs = j->block_size, n_docs = j->n_docs;
    int64_t p = j->offsets[term], p_end = j->offsets[term + 1];
    int32_t docs[DECODE_CHUNK + 8];
    int64_t x = j->b_offsets[term] * mb, x_end = j->b_offsets[term + 1] * mb; /* mask bytes */
    while (x < x_end) {
        int64_t n = 0;
        for (; x < x_end && n <= DECODE_CHUNK - 8; x++) {
            int64_t e = x / mb, c = x - e * mb;
            int32_t b = block_id(j, e);
            if ((uint32_t)b >= (uint64_t)j->n_blocks) return 1;
            unsigned m = j->masks[x];
            int64_t base = (int64_t)b * bs + 8 * c;
            if (m && base + 31 - __builtin_clz(m) >= n_docs) return 1;
            for (int r = 0; r < 8; r++) docs[n + r] = (int32_t)(base + BIT_POS[m][r]);
            n += __builtin_popcount(m);
        }
        if (n > p_end - p) return 1;
        for (int64_t i = 0; i < n; i++) {
            int32_t d = docs[i];
            if (track && !seen[d]) { seen[d] = 1; touched[(*n_touched)++] = d; }
            acc[d] += w * weight_at(j->weights, wt, p + i);
        }
        p += n;
    }
    return p != p_end;
}

/* Large k: the heap insertions are most of exhaustive scoring's top-k time, about k (1 + ln(N / k)) of them
 * over N scored documents (each offered hit beating the root: early on nearly every one). A threshold taken
 * from a strided sample of the scores -- its PREFILTER_RANK-th largest, with the stride set so that about
 * PREFILTER_SHARE x k documents are expected at or above it -- lets only those be offered, about
 * k (1 + ln PREFILTER_SHARE) insertions. Exact whatever the sample: when k or more documents reach the
 * threshold, every document of the true top k (ties with the k-th included) does; when fewer do, a second
 * pass offers the rest. Used for k >= PREFILTER_MIN_K over at least PREFILTER_MIN_RATIO x k documents. */
#define PREFILTER_MIN_K 64
#define PREFILTER_MIN_RATIO 3 /* (8 gave small collections at k = 1000 nothing; 3 took 25% off) */
#define PREFILTER_RANK 32
#define PREFILTER_SHARE 2

/* The PREFILTER_RANK-th largest positive score of every stride-th document (of touched, or of 0..n-1), or 0
 * when the sample holds fewer positive scores than that (no filtering). */
static float sampled_threshold(const float *acc, const int32_t *touched, int64_t n, int64_t k) {
    float top[PREFILTER_RANK]; /* a min-heap of the sample's largest scores */
    int64_t size = 0, stride = k * PREFILTER_SHARE / PREFILTER_RANK;
    for (int64_t i = 0; i < n; i += stride) {
        float s = acc[touched ? touched[i] : i];
        if (!(s > 0)) continue;
        if (size < PREFILTER_RANK) {
            int64_t pos = size++;
            top[pos] = s;
            while (pos > 0 && top[(pos - 1) / 2] > top[pos]) {
                float t = top[pos]; top[pos] = top[(pos - 1) / 2]; top[(pos - 1) / 2] = t;
                pos = (pos - 1) / 2;
            }
        } else if (s > top[0]) {
            top[0] = s;
            for (int64_t pos = 0;;) {
                int64_t c = 2 * pos + 1;
                if (c >= PREFILTER_RANK) break;
                if (c + 1 < PREFILTER_RANK && top[c + 1] < top[c]) c++;
                if (top[c] >= top[pos]) break;
                float t = top[pos]; top[pos] = top[c]; top[c] = t;
                pos = c;
            }
        }
    }
    return size == PREFILTER_RANK ? top[0] : 0.0f;
}

/* Whether the prefilter runs for top k over n scored documents (the one place that says so). */
static inline int prefilters(int64_t k, double n) {
    return k >= PREFILTER_MIN_K && n >= (double)PREFILTER_MIN_RATIO * (double)k;
}

/* The documents exhaustive scoring offers to the heap: all N scored, or about PREFILTER_SHARE x k of them
 * past the sampled threshold (the cost model's heap term). */
static inline double offered_docs(int64_t k, double scored) {
    return prefilters(k, scored) ? (double)(PREFILTER_SHARE * k) : scored;
}

/* The documents the prefilter's own pass reads (the cost model's prefilter_scan term): the scanned ones
 * where it applies, none elsewhere. */
static inline double prefilter_scan(int64_t k, double scanned) {
    return prefilters(k, scanned) ? scanned : 0.0;
}

/* Offer the scores of touched (or of 0..n-1) in [lo, hi) that are positive and not deleted. */
#define OFFER_RANGE(lo, hi)                                                                   \
    for (int64_t i = 0; i < n_scan; i++) {                                                   \
        int64_t d = dense ? i : ts->touched[i];                                               \
        float s = acc[d];                                                                     \
        if (s >= (lo) && s < (hi) && s > 0 && !(j->deleted && j->deleted[d])) OFFER(hs, hd, size, k, s, d); \
    }

/* The dense scans read the whole accumulator, most of whose scores cannot enter the heap once it is full:
 * they test SCAN_LANES scores at a time against the least score that can (128-bit vector compares through
 * GCC's vector extension: SSE2, so both clones have them unlowered -- a 512-bit type became scalar compares
 * on the AVX2 clone) and look at the scores one by one only in the rare groups that pass. The exhaustive
 * scan of a 1M-document accumulator was a fifth of a k = 1000 query's time at one comparison per document. */
#define SCAN_LANES 16
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

static inline int any_reaching(const float *a, float t) {   /* some a[r] >= t, r < SCAN_LANES */
    f32x4 x0, x1, x2, x3;
    memcpy(&x0, a, 16); memcpy(&x1, a + 4, 16); memcpy(&x2, a + 8, 16); memcpy(&x3, a + 12, 16);
    i32x4 m = (x0 >= t) | (x1 >= t) | (x2 >= t) | (x3 >= t);
    int64_t h[2];
    memcpy(h, &m, sizeof h);
    return (h[0] | h[1]) != 0;
}

/* Offer every score of acc[0 .. n_docs) that is positive, at least lo (0: no bound) and not deleted, and zero
 * the accumulator behind the scan; returns the heap size. Past the first k offers only scores >= the heap's
 * least can enter, so the group test (skipped until then: the heap fills within the first few groups) compares
 * with that. Zeroing each group while its line is in L1 replaced a memset after the scan: at 1M documents the
 * 4 MiB accumulator is past L2, and the second pass read it back from L3. */
ALWAYS_INLINE float at_least(float a, float b) { return a > b ? a : b; } /* fmaxf was a libm call per group */

ALWAYS_INLINE int64_t offer_dense(const job_t *j, float *acc, float lo, float *hs, int64_t *hd, int64_t size) {
    const int64_t n_docs = j->n_docs, k = j->k;
    for (int64_t d0 = 0; d0 < n_docs; d0 += SCAN_LANES) {
        int64_t d1 = d0 + SCAN_LANES < n_docs ? d0 + SCAN_LANES : n_docs;
        float least = size < k ? lo : at_least(lo, hs[0]);
        if (d1 - d0 < SCAN_LANES || !(least > 0) || any_reaching(acc + d0, least))
            for (int64_t d = d0; d < d1; d++) {
                float s = acc[d];
                if (s >= least && s > 0 && !(j->deleted && j->deleted[d])) {
                    OFFER(hs, hd, size, k, s, d);
                    least = size < k ? lo : at_least(lo, hs[0]);
                }
            }
        if (d1 - d0 == SCAN_LANES) memset(acc + d0, 0, sizeof(float) * SCAN_LANES); /* inlined: 2 stores */
        else memset(acc + d0, 0, sizeof(float) * (size_t)(d1 - d0));
    }
    return size;
}

/* Add query q's postings into the accumulator (recording the touched documents unless dense); returns 1 for
 * corrupt postings. */
ALWAYS_INLINE int accumulate(const job_t *j, int64_t q, taat_scratch_t *ts, int dense, int64_t *n_touched,
                             const wtype_t wt) {
    int bad = 0;
#ifdef HAVE_SIMD_TERM
    int level = dense && j->mask_bytes == 1 ? simd_level() : SIMD_NONE;
    if (level != SIMD_NONE) return accumulate_simd(j, q, ts->acc, level, wt);
#endif
    for (int64_t i = j->q_indptr[q]; i < j->q_indptr[q + 1] && !bad; i++) {
        int32_t term = j->q_indices[i];
        float w = j->q_values[i];
        if (j->mask_bytes == 1)
            bad = dense ? taat_term(j, term, w, ts->acc, NULL, NULL, NULL, 0, 1, wt)
                        : taat_term(j, term, w, ts->acc, ts->seen, ts->touched, n_touched, 1, 1, wt);
        else
            bad = dense ? taat_term(j, term, w, ts->acc, NULL, NULL, NULL, 0, j->mask_bytes, wt)
                        : taat_term(j, term, w, ts->acc, ts->seen, ts->touched, n_touched, 1, j->mask_bytes, wt);
    }
    return bad;
}

/* Exact top-k of query q by exhaustive accumulation into the heap (hs, hd); returns the heap size, or -2
 * for corrupt postings. The scratch is left zeroed for the next query. */
ALWAYS_INLINE int64_t taat_query(const job_t *j, int64_t q, taat_scratch_t *ts, float *hs, int64_t *hd,
                                 const wtype_t wt) {
    int64_t n_docs = j->n_docs, n_touched = 0, size = 0, k = j->k, postings = 0;
    float *acc = ts->acc;
    for (int64_t i = j->q_indptr[q]; i < j->q_indptr[q + 1]; i++)
        postings += j->offsets[j->q_indices[i] + 1] - j->offsets[j->q_indices[i]];
    int dense = postings * DENSE_SCAN_RATIO >= n_docs;
    int bad = accumulate(j, q, ts, dense, &n_touched, wt);
    int64_t n_scan = dense ? n_docs : n_touched;
    float tau = !bad && prefilters(k, (double)n_scan)
                    ? sampled_threshold(acc, dense ? NULL : ts->touched, n_scan, k) : 0.0f;
    if (dense) {
        /* only the test of what can enter the heap, and the clearing in the same pass: testing each score
         * for zero first mispredicted on a quarter to most of the documents and took a third of a short
         * enwiki-100k query's time at k = 10 */
        size = offer_dense(j, acc, tau, hs, hd, size);
        if (tau > 0 && size < k) {
            /* fewer than k documents reached the prefilter's threshold (rare: the sample's 32nd largest
             * score would have to rank below the k-th), and the scan has cleared the scores: score the
             * query again and offer every document */
            accumulate(j, q, ts, dense, &n_touched, wt);
            size = offer_dense(j, acc, 0.0f, hs, hd, 0);
        }
    } else if (tau > 0) { /* the prefilter: scores at or above tau first, the rest only if they are needed */
        OFFER_RANGE(tau, INFINITY)
        if (size < k) OFFER_RANGE(0.0f, tau)
        for (int64_t i = 0; i < n_touched; i++) { acc[ts->touched[i]] = 0.0f; ts->seen[ts->touched[i]] = 0; }
    } else {
        for (int64_t i = 0; i < n_touched; i++) {
            int32_t d = ts->touched[i];
            float s = acc[d];
            acc[d] = 0.0f; ts->seen[d] = 0;
            if (s > 0 && !(j->deleted && j->deleted[d])) OFFER(hs, hd, size, k, s, d);
        }
    }
    return bad ? -2 : size;
}

ALWAYS_INLINE int taat_impl(const job_t *j, const wtype_t wt) {
    taat_scratch_t ts;
    float *hs = tl_get(&tl_hs, sizeof(float) * (size_t)j->k, 0);
    int64_t *hd = tl_get(&tl_hd, sizeof(int64_t) * (size_t)j->k, 0);
    int status = taat_scratch_get(&ts, j->n_docs);
    if (!hs || !hd) status = -1;
    for (int64_t q = j->q_start; q < j->q_end && status == 0; q++) {
        int64_t size = taat_query(j, q, &ts, hs, hd, wt);
        if (size < 0) status = (int)size;
        else heap_drain(hs, hd, size, j->out_ids + q * j->k, j->out_scores + q * j->k, j->id_base);
    }
    if (status != 0) taat_scratch_drop();
    return status;
}

/* One query's exhaustive scoring for block-max's exhaustive route and fallback: called, not inlined there
 * (inlined into block-max's large function it compiled to code 12-18% slower than the same scoring in
 * taat_*; measured on SciFact and NFCorpus at k = 10) */
#define TAAT_QUERY_FOR(name, W) \
    HOT __attribute__((noinline)) static int64_t name(const job_t *j, int64_t q, taat_scratch_t *ts, float *hs, \
                                                      int64_t *hd) { return taat_query(j, q, ts, hs, hd, W); }
TAAT_QUERY_FOR(taat_query_f32, W_F32)
TAAT_QUERY_FOR(taat_query_u8, W_U8)
TAAT_QUERY_FOR(taat_query_u16, W_U16)

ALWAYS_INLINE int64_t taat_query_called(const job_t *j, int64_t q, taat_scratch_t *ts, float *hs, int64_t *hd,
                                        const wtype_t wt) {
    return wt == W_U8 ? taat_query_u8(j, q, ts, hs, hd) : wt == W_U16 ? taat_query_u16(j, q, ts, hs, hd)
                                                                      : taat_query_f32(j, q, ts, hs, hd);
}

HOT static int taat_f32(const job_t *j) { return taat_impl(j, W_F32); }
HOT static int taat_u8(const job_t *j) { return taat_impl(j, W_U8); }
HOT static int taat_u16(const job_t *j) { return taat_impl(j, W_U16); }

static int run_taat(const job_t *j) {
    return j->wtype == W_U8 ? taat_u8(j) : j->wtype == W_U16 ? taat_u16(j) : taat_f32(j);
}

/* ------------------------------------------------------------------------------------------ block-max */
/* The cost model (lsr/kernels/cost_model.py owns it and its fit; ARCHITECTURE.md explains it): predicted
 * time of exhaustive scoring and of block-max's parts, from counts known before a query is scored. */
enum { COST_POSTING, COST_SCAN_DOC, COST_TERM, COST_ENTRY, COST_ROW_BLOCK, COST_BLOCK, COST_BLOCK_TERM,
       COST_CAND_SORT, COST_SCORED_RATIO, COST_SCORED_EXPONENT, COST_GUARD, COST_HEAP,
       COST_BLOCKS_CONST, COST_BLOCKS_K, COST_BLOCKS_BLOCKS, COST_BLOCKS_TERMS, COST_BLOCKS_POSTINGS,
       COST_BLOCKS_K_BLOCKS, COST_BLOCKS_K_TERMS, COST_PREFILTER_SCAN, COST_BLOCK_TERM_LOG, COST_N };

/* auto's up-front guess of the blocks block-max will score (seeds and candidates), a log-linear function of
 * what is known before the bounds (k, B blocks, T terms, P postings; fitted by benchmarks/routes.py):
 * exp(c0 + c1 ln k + c2 ln B + c3 ln T + c4 ln P + c5 ln k ln B + c6 ln k ln T) */
static inline double predicted_blocks(const double *cm, int64_t k, int64_t n_blocks, int64_t n_terms, int64_t postings) {
    double lk = log((double)k), lb = log((double)(n_blocks > 1 ? n_blocks : 1));
    double lt = log((double)(n_terms > 1 ? n_terms : 1)), lp = log((double)(postings > 1 ? postings : 1));
    return exp(cm[COST_BLOCKS_CONST] + cm[COST_BLOCKS_K] * lk + cm[COST_BLOCKS_BLOCKS] * lb +
               cm[COST_BLOCKS_TERMS] * lt + cm[COST_BLOCKS_POSTINGS] * lp + cm[COST_BLOCKS_K_BLOCKS] * lk * lb +
               cm[COST_BLOCKS_K_TERMS] * lk * lt);
}

/* Expected heap insertions times their sift depth when `docs` scored documents meet a top-k heap in no
 * particular order: each of the first k enters, then the i-th does with probability k / i, about
 * k (1 + ln(docs / k)) in all (the heap term of exhaustive scoring: at k = 1000 it is most of the time on
 * a small collection). */
static inline double heap_work(int64_t k, double docs) {
    double depth = log2((double)(k > 2 ? k : 2));
    if (docs <= (double)k) return docs * depth;
    return (double)k * (1.0 + log(docs / (double)k)) * depth;
}

/* Block-max's cost of scoring blocks n_from .. n_to (counted from its first scored block): every query term
 * looked up in each block, and the block's documents offered to the same top-k heap that exhaustive scoring
 * fills (at k = 1000 the seeds alone offer 2,000 documents, as much heap work as a whole exhaustive pass). */
static inline double scoring_cost(const double *cm, double per_block, int64_t k, int64_t bs, double n_from,
                                  double n_to) {
    return per_block * (n_to - n_from) +
           cm[COST_HEAP] * (heap_work(k, (double)bs * n_to) - heap_work(k, (double)bs * n_from));
}
/* MODE_PURE: block-max to the end (tests); MODE_GUARDED: block-max that hands the query to exhaustive
 * scoring once its own work reaches COST_GUARD x exhaustive's predicted cost (so it costs at most about
 * 1 + COST_GUARD times exhaustive), that goes exhaustive up front when its predicted whole cost is above
 * 1 + COST_GUARD times exhaustive's, and after the seeds when the blocks still to score are predicted to
 * cost more than exhaustive scoring (without the predictions, long queries spent their limit on bounds
 * and seeds and then went exhaustive: 1.5-2.3x on a third of them); MODE_AUTO: the same with no tolerance
 * up front (block-max only where it is predicted cheaper). */
enum { MODE_PURE, MODE_GUARDED, MODE_AUTO };

typedef struct {
    const void *maxima; const int32_t *anchors; int64_t n_anchors;
    float alpha;
    int64_t n_seeds;
    int mode; /* MODE_*: how block-max may hand a query over to exhaustive scoring */
    double cost[COST_N]; /* the cost model (COST_*), lsr/kernels/cost_model.py */
    const int32_t *dense_rows; /* per term: its row of dense bounds, or -1; NULL when there are none */
    const uint8_t *dense; const float *dense_scale; int64_t n_dense;
    const uint32_t *dense_prefix; int64_t n_chunks;
    int64_t *stats; /* per query STATS_N counters (see STAT_*), or NULL */
} blocks_t;

/* What block-max did with each query, for the cost model's fit and for tests: the route it took, the seed
 * blocks it scored, the candidate blocks left after the seeds, and the candidates it scored. */
enum { STAT_ROUTE, STAT_SEEDS, STAT_CANDIDATES, STAT_SCORED, STATS_N };
enum { ROUTE_BLOCKMAX, ROUTE_EXHAUSTIVE, ROUTE_FALLBACK };

/* A dense row's bound of block b is float(row[b]) * scale. It is multiplied by the query weight as
 * (weight * scale * DENSE_MARGIN) * row[b]: a different rounding order from the exact weight * value, so the
 * product is inflated by 2^-20 (16 float32 ulps, more than the few ulps the reordering can cost) to stay
 * an upper bound of every exact product in the block. */
#define DENSE_MARGIN (1.0f + 0x1p-20f)

/* ub[b] += c * row[b] over all blocks: vectorised, with an AVX2 clone chosen at load time where the CPU
 * has it. */
__attribute__((target_clones("avx2", "default")))
static void dense_add(float *restrict ub, const uint8_t *restrict row, float c, int64_t n) {
    for (int64_t b = 0; b < n; b++) ub[b] += c * (float)row[b];
}

/* the largest of BOUND_GROUP consecutive block bounds (block-max's scans skip a group by it) */
#define BOUND_GROUP 16
static inline float group_max(const float *v) {
    float m = v[0];
    for (int i = 1; i < BOUND_GROUP; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* every ANCHOR_EVERY-th entry's first posting is stored (lsr/kernels/_arrays.py ANCHOR_EVERY) */
#define ANCHOR_EVERY 16
#define ANCHOR_SHIFT 4

typedef struct { float bound; int32_t id; } cand_t;

/* How many of the candidates [from, n), sorted by decreasing bound, have alpha x bound >= threshold. */
static int64_t reaching(const cand_t *cand, int64_t from, int64_t n, float threshold, float alpha) {
    int64_t lo = from, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) >> 1;
        if (cand[mid].bound * alpha < threshold) hi = mid; else lo = mid + 1;
    }
    return lo - from;
}

static int cmp_cand(const void *a, const void *b) {
    float x = ((const cand_t *)a)->bound, y = ((const cand_t *)b)->bound;
    if (x > y) return -1;
    if (x < y) return 1;
    int32_t p = ((const cand_t *)a)->id, r = ((const cand_t *)b)->id;
    return (p > r) - (p < r);
}

typedef struct {
    float *local; float *hs; int64_t *hd; int64_t size;
} scorer_t;

/* Score every document of block b exactly and offer each to the heap. Returns 0 or -2 (corrupt ids). */
ALWAYS_INLINE int score_block(const job_t *j, const blocks_t *bl, scorer_t *sc, int64_t q_lo, int64_t q_hi,
                              int32_t b, const wtype_t wt) {
    int64_t bs = j->block_size, mb = j->mask_bytes, base = (int64_t)b * bs;
    float *local = sc->local;
    for (int64_t i = q_lo; i < q_hi; i++) {
        int32_t term = j->q_indices[i];
        int64_t lo = j->b_offsets[term], hi = j->b_offsets[term + 1], e_end = hi;
        int32_t row = bl->dense_rows ? bl->dense_rows[term] : -1;
        if (row >= 0) {
            /* the entry's rank among the term's blocks: a prefix count plus the non-zero bytes since */
            const uint8_t *bytes = bl->dense + (int64_t)row * ((j->n_docs + bs - 1) / bs);
            if (!bytes[b]) continue;
            int64_t rank = bl->dense_prefix[(int64_t)row * bl->n_chunks + (b >> 6)];
            for (int64_t c = (int64_t)b & ~(int64_t)63; c < b; c++) rank += bytes[c] != 0;
            lo += rank;
            if (lo >= e_end || block_id(j, lo) != b) return -2;
        } else {
            while (lo < hi) { /* lower bound of b among the term's block ids */
                int64_t mid = (lo + hi) >> 1;
                if (block_id(j, mid) < b) lo = mid + 1; else hi = mid;
            }
            if (lo >= e_end || block_id(j, lo) != b) continue;
        }
        /* the entry's first posting: its anchor plus the postings of the entries since the anchor */
        if ((lo >> ANCHOR_SHIFT) >= bl->n_anchors) return -2;
        int64_t p = bl->anchors[lo >> ANCHOR_SHIFT];
        for (int64_t c = (lo & ~(int64_t)(ANCHOR_EVERY - 1)) * mb; c < lo * mb; c++) p += __builtin_popcount(j->masks[c]);
        if (p < j->offsets[term]) return -2;
        int64_t p_end = j->offsets[term + 1];
        float w = j->q_values[i];
        for (int64_t c = 0; c < mb; c++) {
            unsigned m = j->masks[lo * mb + c];
            while (m) {
                int64_t r = 8 * c + __builtin_ctz(m);
                m &= m - 1;
                if (r >= bs || base + r >= j->n_docs || p >= p_end) return -2;
                local[r] += w * weight_at(j->weights, wt, p);
                p++;
            }
        }
    }
    for (int64_t r = 0; r < bs; r++) {
        float s = local[r];
        if (s > 0) {
            local[r] = 0.0f;
            int64_t d = base + r;
            if (!(j->deleted && j->deleted[d])) OFFER(sc->hs, sc->hd, sc->size, j->k, s, d);
        }
    }
    return 0;
}

/* 1. a bound per block: sum over query terms of weight x the term's block maximum, in query-term order --
 *    the order exact scores are summed in, so (float addition being monotone) no document scores above
 *    its block's bound; 2. seed the top k with the n_seeds blocks of highest bound; 3. every other block
 *    whose bound can still beat the k-th score, by decreasing bound, until one cannot. */
ALWAYS_INLINE int blockmax_impl(const job_t *j, const blocks_t *bl, const wtype_t wt) {
    int64_t n_docs = j->n_docs, k = j->k, bs = j->block_size;
    int64_t n_blocks = (n_docs + bs - 1) / bs, n_seeds = bl->n_seeds;
    size_t nb = (size_t)n_blocks;
    float *ub = tl_get(&tl_ub, sizeof(float) * nb, 1);
    cand_t *cand = tl_get(&tl_cand, sizeof(cand_t) * nb, 0);
    float *seed_s = tl_get(&tl_seed_s, sizeof(float) * (size_t)n_seeds, 0);
    int64_t *seed_b = tl_get(&tl_seed_b, sizeof(int64_t) * (size_t)n_seeds, 0);
    scorer_t sc = {tl_get(&tl_local, sizeof(float) * (size_t)bs, 1), tl_get(&tl_hs, sizeof(float) * (size_t)k, 0),
                   tl_get(&tl_hd, sizeof(int64_t) * (size_t)k, 0), 0};
    taat_scratch_t ts = {NULL, NULL, NULL}; /* fetched on the first fallback */
    int status = 0;
    if (!ub || !cand || !seed_s || !seed_b || !sc.local || !sc.hs || !sc.hd) { status = -1; goto done; }
    for (int64_t q = j->q_start; q < j->q_end && status == 0; q++) {
        int64_t q_lo = j->q_indptr[q], q_hi = j->q_indptr[q + 1];
        if (q_hi == q_lo) continue; /* no terms: no hits (the outputs stay padded) */
        /* the cost model's inputs: postings, sparse entries and dense rows of the query's terms */
        const double *cm = bl->cost;
        int64_t postings = 0, entries = 0, rows = 0, n_terms = q_hi - q_lo;
        for (int64_t i = q_lo; i < q_hi; i++) {
            int32_t t = j->q_indices[i];
            postings += j->offsets[t + 1] - j->offsets[t];
            if (bl->dense_rows && bl->dense_rows[t] >= 0) rows++;
            else entries += j->b_offsets[t + 1] - j->b_offsets[t];
        }
        int64_t scanned = postings * DENSE_SCAN_RATIO >= n_docs ? n_docs : (postings < n_docs ? postings : n_docs);
        double t_exhaustive = cm[COST_POSTING] * postings + cm[COST_SCAN_DOC] * scanned + cm[COST_TERM] * n_terms +
                              cm[COST_HEAP] * heap_work(k, offered_docs(k, (double)(postings < n_docs ? postings : n_docs))) +
                              cm[COST_PREFILTER_SCAN] * prefilter_scan(k, (double)scanned);
        double t_bounds = cm[COST_ENTRY] * entries + cm[COST_ROW_BLOCK] * rows * n_blocks + cm[COST_BLOCK] * n_blocks;
        /* scoring one block: each term's entry of the block is found by a binary search over the term's
         * entries, whose depth grows with the collection (the log term) */
        double per_block = fmax(n_terms * (cm[COST_BLOCK_TERM] +
                                           cm[COST_BLOCK_TERM_LOG] * log2((double)(n_blocks > 2 ? n_blocks : 2))),
                                1e-9);
        /* what block-max may spend before it gives up (none of it in MODE_PURE) */
        double limit = bl->mode == MODE_PURE || isinf(cm[COST_GUARD]) ? INFINITY : cm[COST_GUARD] * t_exhaustive;
        /* whether the route follows the cost model's predictions (not block-max that never gives up) */
        int predicts = bl->mode == MODE_AUTO || (bl->mode == MODE_GUARDED && !isinf(limit));
        /* exhaustive from the start: when block-max's bounds and seeds alone would pass its limit, or when
         * its predicted whole cost is above exhaustive scoring's (auto) or 1 + COST_GUARD times it (guarded) */
        if (t_bounds + scoring_cost(cm, per_block, k, bs, 0, (double)(n_seeds < n_blocks ? n_seeds : n_blocks)) > limit ||
            (predicts &&
             t_bounds + scoring_cost(cm, per_block, k, bs, 0, predicted_blocks(cm, k, n_blocks, n_terms, postings)) >
                 (bl->mode == MODE_AUTO ? 1.0 : 1.0 + cm[COST_GUARD]) * t_exhaustive)) {
            if (!ts.acc && taat_scratch_get(&ts, n_docs) != 0) { status = -1; break; }
            int64_t size = taat_query_called(j, q, &ts, sc.hs, sc.hd, wt);
            if (size < 0) { status = (int)size; break; }
            heap_drain(sc.hs, sc.hd, size, j->out_ids + q * k, j->out_scores + q * k, j->id_base);
            if (bl->stats) bl->stats[q * STATS_N + STAT_ROUTE] = ROUTE_EXHAUSTIVE;
            continue;
        }
        for (int64_t i = q_lo; i < q_hi && status == 0; i++) {
            int32_t term = j->q_indices[i];
            float w = j->q_values[i];
            int32_t row = bl->dense_rows ? bl->dense_rows[term] : -1;
            if (row >= 0) {
                dense_add(ub, bl->dense + (int64_t)row * n_blocks, w * bl->dense_scale[row] * DENSE_MARGIN, n_blocks);
                continue;
            }
            for (int64_t e = j->b_offsets[term]; e < j->b_offsets[term + 1]; e++) {
                int32_t b = block_id(j, e);
                if ((uint32_t)b >= (uint64_t)n_blocks) { status = -2; break; }
                ub[b] += w * weight_at(bl->maxima, wt, e);
            }
        }
        /* both scans below skip a group of BOUND_GROUP bounds by its maximum (a loop the compiler
         * vectorises) where none can enter: most of a short query's blocks cannot, and testing each bound
         * alone was most of the scans' time. Exact: blocks are visited by ascending id, so a bound equal to
         * the seed heap's smallest loses the tie, and every bound is >= 0. */
        int64_t n_seed = 0, full = n_blocks - n_blocks % BOUND_GROUP;
        for (int64_t b0 = 0; b0 < n_blocks; b0 += BOUND_GROUP) {
            int64_t b1 = b0 < full ? b0 + BOUND_GROUP : n_blocks;
            if (b0 < full && group_max(ub + b0) <= (n_seed == n_seeds ? seed_s[0] : 0.0f)) continue;
            for (int64_t b = b0; b < b1; b++)
                if (ub[b] > 0) OFFER(seed_s, seed_b, n_seed, n_seeds, ub[b], b);
        }
        sc.size = 0;
        for (int64_t i = 0; i < n_seed && status == 0; i++) {
            status = score_block(j, bl, &sc, q_lo, q_hi, (int32_t)seed_b[i], wt);
            ub[seed_b[i]] = 0.0f; /* scored */
        }
        float threshold = sc.size == k ? sc.hs[0] : 0.0f;
        int64_t n_cand = 0;
        for (int64_t b0 = 0; b0 < n_blocks; b0 += BOUND_GROUP) {
            int64_t b1 = b0 < full ? b0 + BOUND_GROUP : n_blocks;
            if (b0 < full) {
                float top = group_max(ub + b0); /* (x alpha is monotone: no bound of the group reaches more) */
                if (top <= 0 || top * bl->alpha < threshold) continue;
            }
            for (int64_t b = b0; b < b1; b++) {
                float bound = ub[b];
                if (bound > 0 && bound * bl->alpha >= threshold) {
                    cand[n_cand].bound = bound; cand[n_cand].id = (int32_t)b; n_cand++;
                }
            }
        }
        memset(ub, 0, sizeof(float) * nb); /* every bound back to 0 for the next query, skipped groups too */
        /* the candidates block-max may still score within its limit; auto and guarded block-max also predict
         * how many it will score (a fitted share of the candidates) and go exhaustive now if that costs more */
        double t_sort = cm[COST_CAND_SORT] * n_cand * log2((double)(n_cand > 2 ? n_cand : 2));
        double left = limit - t_bounds - scoring_cost(cm, per_block, k, bs, 0, (double)n_seed) - t_sort;
        /* each further block at the cost of the next one (the heap's share only shrinks as it fills) */
        double marginal = scoring_cost(cm, per_block, k, bs, (double)n_seed, (double)n_seed + 1.0);
        int64_t budget = isinf(limit) || left / marginal >= (double)n_cand ? n_cand : left > 0 ? (int64_t)(left / marginal) : 0;
        /* every candidate scored costs less than exhaustive scoring: handing over could only cost more */
        if (budget < n_cand && t_sort + scoring_cost(cm, per_block, k, bs, (double)n_seed, (double)(n_seed + n_cand)) < t_exhaustive)
            budget = n_cand;
        int fallback = n_cand > 4 * budget; /* clearly too many: do not even sort */
        if (predicts &&
            t_sort + scoring_cost(cm, per_block, k, bs, (double)n_seed,
                                  (double)n_seed + cm[COST_SCORED_RATIO] * pow((double)n_cand, cm[COST_SCORED_EXPONENT])) >
                t_exhaustive)
            fallback = 1;
        int64_t n_scored = 0;
        if (!fallback) {
            qsort(cand, (size_t)n_cand, sizeof(cand_t), cmp_cand);
            for (int64_t c = 0; c < n_cand && status == 0; c++) {
                if (sc.size == k && cand[c].bound * bl->alpha < sc.hs[0]) break;
                if (c >= budget) {
                    /* out of budget: the candidates whose bound still reaches the k-th score are all that
                     * may be left to score (it only rises); when they cost less than exhaustive scoring,
                     * finishing is cheaper than starting over and stays within (1 + guard) x exhaustive */
                    int64_t still = sc.size == k ? reaching(cand, c, n_cand, sc.hs[0], bl->alpha) : n_cand - c;
                    if (scoring_cost(cm, per_block, k, bs, (double)(n_seed + c), (double)(n_seed + c + still)) >=
                        t_exhaustive) { fallback = 1; break; }
                    budget = c + still;
                }
                status = score_block(j, bl, &sc, q_lo, q_hi, cand[c].id, wt);
                n_scored++;
            }
        }
        if (bl->stats) {
            int64_t *st = bl->stats + q * STATS_N;
            st[STAT_ROUTE] = fallback ? ROUTE_FALLBACK : ROUTE_BLOCKMAX;
            st[STAT_SEEDS] = n_seed; st[STAT_CANDIDATES] = n_cand; st[STAT_SCORED] = n_scored;
        }
        if (fallback && status == 0) {
            if (!ts.acc && taat_scratch_get(&ts, n_docs) != 0) { status = -1; break; }
            int64_t size = taat_query_called(j, q, &ts, sc.hs, sc.hd, wt);
            if (size < 0) { status = (int)size; break; }
            sc.size = size;
        }
        if (status == 0) heap_drain(sc.hs, sc.hd, sc.size, j->out_ids + q * k, j->out_scores + q * k, j->id_base);
    }
done:
    if (status != 0) { /* zeroed buffers may hold garbage after an error */
        tl_drop(&tl_ub); tl_drop(&tl_local);
        if (ts.acc) taat_scratch_drop();
    }
    return status;
}

HOT static int blockmax_f32(const job_t *j, const blocks_t *bl) { return blockmax_impl(j, bl, W_F32); }
HOT static int blockmax_u8(const job_t *j, const blocks_t *bl) { return blockmax_impl(j, bl, W_U8); }
HOT static int blockmax_u16(const job_t *j, const blocks_t *bl) { return blockmax_impl(j, bl, W_U16); }

static int run_blockmax(const job_t *j, const blocks_t *bl) {
    return j->wtype == W_U8 ? blockmax_u8(j, bl) : j->wtype == W_U16 ? blockmax_u16(j, bl) : blockmax_f32(j, bl);
}

/* ------------------------------------------------------------------------------------------ rescoring */
/* The second step of two-step search (lsr/kernels/two_step.py): each query's candidate documents (found with a
 * pruned query) scored exactly with the whole query on the forward index, and the top k kept. A document's
 * forward row and the query both list term ids in ascending order, so the row's products with the query's
 * weights come in query order: bit for bit the sum exhaustive accumulation makes. */
typedef struct {
    const int64_t *indptr; const void *indices; int idx16; const void *values; wtype_t wtype;
    int64_t n_docs, nnz;
    const int64_t *q_indptr; const int32_t *q_indices; const float *q_values;
    const int64_t *cand; int64_t depth; int64_t k; int64_t dim;
    int64_t *out_ids; float *out_scores;
    int64_t q_start, q_end, id_base;
} rescore_t;

/* forward term id p of a row */
ALWAYS_INLINE int64_t fwd_term(const rescore_t *r, int64_t p) {
    return r->idx16 ? ((const uint16_t *)r->indices)[p] : ((const int32_t *)r->indices)[p];
}

/* The query's weights are scattered into a dim-sized table (zero elsewhere) and each candidate's row adds
 * table[term] x weight over all its terms: a product with a term outside the query is +0.0, which leaves a
 * float sum unchanged, so this is the same sum in the same (ascending term = query) order, without a branch
 * per term. */
ALWAYS_INLINE int rescore_impl(const rescore_t *r, const wtype_t wt) {
    float *hs = tl_get(&tl_hs, sizeof(float) * (size_t)r->k, 0);
    int64_t *hd = tl_get(&tl_hd, sizeof(int64_t) * (size_t)r->k, 0);
    float *table = tl_get(&tl_qtable, sizeof(float) * (size_t)r->dim, 1); /* zeroed, left zeroed */
    if (!hs || !hd || !table) return -1;
    int status = 0;
    for (int64_t q = r->q_start; q < r->q_end && status == 0; q++) {
        int64_t q_lo = r->q_indptr[q], q_hi = r->q_indptr[q + 1], size = 0;
        for (int64_t i = q_lo; i < q_hi; i++) table[r->q_indices[i]] = r->q_values[i];
        for (int64_t c = 0; c < r->depth && status == 0; c++) {
            int64_t d = r->cand[q * r->depth + c];
            if (d < 0) continue;
            int64_t p = d < r->n_docs ? r->indptr[d] : -1, p_end = d < r->n_docs ? r->indptr[d + 1] : -1;
            if (p < 0 || p > p_end || p_end > r->nnz) { status = -2; break; }
            float s = 0.0f;
            for (; p < p_end; p++) {
                int64_t t = fwd_term(r, p);
                if (t >= r->dim) { status = -2; break; }
                s += table[t] * weight_at(r->values, wt, p);
            }
            if (s > 0) OFFER(hs, hd, size, r->k, s, d);
        }
        for (int64_t i = q_lo; i < q_hi; i++) table[r->q_indices[i]] = 0.0f;
        if (status == 0) heap_drain(hs, hd, size, r->out_ids + q * r->k, r->out_scores + q * r->k, r->id_base);
    }
    return status;
}

HOT static int rescore_f32(const rescore_t *r) { return rescore_impl(r, W_F32); }
HOT static int rescore_u8(const rescore_t *r) { return rescore_impl(r, W_U8); }
HOT static int rescore_u16(const rescore_t *r) { return rescore_impl(r, W_U16); }

/* Step 1's query (lsr/kernels/two_step.py mass_queries): each query's heaviest terms whose weights sum to at
 * least `mass` of the query's (ties: the earlier term first; at least one term), written in their original
 * order. The cut is found by selection, not sorting (a comparison sort of a 300-term query cost ~25 µs, most
 * of a step): three-way partitions of the weights around a pivot narrow down the weight w at which the sum
 * of the heavier weights reaches the target; every term heavier than w is kept, and as many terms of weight
 * exactly w as the target still needs, the earliest first. */
static int mass_prune(const int64_t *q_indptr, const int32_t *q_indices, const float *q_values, int64_t n_queries,
                      double mass, int64_t *out_indptr, int32_t *out_indices, float *out_values) {
    int64_t written = 0, longest = 0;
    for (int64_t q = 0; q < n_queries; q++)
        if (q_indptr[q + 1] - q_indptr[q] > longest) longest = q_indptr[q + 1] - q_indptr[q];
    float *a = malloc(sizeof(float) * (size_t)(longest > 0 ? longest : 1));
    if (!a) return -1;
    out_indptr[0] = 0;
    for (int64_t q = 0; q < n_queries; q++) {
        int64_t base = q_indptr[q], n = q_indptr[q + 1] - base;
        if (n == 0) { out_indptr[q + 1] = written; continue; }
        double total = 0.0;
        for (int64_t i = 0; i < n; i++) { a[i] = q_values[base + i]; total += a[i]; }
        double need = mass * total * (1.0 - 1e-9);
        /* invariant: the answer's weight w lies among a[lo..hi), and `need` is what the terms of a[lo..hi)
         * that are >= w must still add (everything heavier than a[lo..hi) is already kept) */
        int64_t lo = 0, hi = n, ties = 0;
        float w = a[0];
        for (;;) {
            float pivot = a[lo + (hi - lo) / 2];
            int64_t gt = lo, lt = hi, i = lo; /* a[lo..gt) > pivot, a[gt..i) == pivot, a[lt..hi) < pivot */
            double sum_gt = 0.0;
            while (i < lt) {
                float x = a[i];
                if (x > pivot) { a[i] = a[gt]; a[gt++] = x; sum_gt += x; i++; }
                else if (x < pivot) { a[i] = a[--lt]; a[lt] = x; }
                else i++;
            }
            if (gt > lo && sum_gt >= need) { hi = gt; continue; } /* the heavier part alone reaches it */
            double sum = sum_gt;
            ties = 0;
            while (ties < lt - gt && sum < need) { sum += pivot; ties++; }
            if (sum >= need || lt == hi) { w = pivot; if (ties == 0) ties = 1; break; }
            need -= sum; lo = lt; /* all of the heavier and equal weights kept: go lighter */
        }
        for (int64_t i = 0; i < n; i++) {
            float x = q_values[base + i];
            if (x > w || (x == w && ties-- > 0)) {
                out_indices[written] = q_indices[base + i]; out_values[written] = x; written++;
            }
        }
        out_indptr[q + 1] = written;
    }
    free(a);
    return 0;
}

/* ------------------------------------------------------------------------------------------ Python API */
static PyObject *finish(int status) {
    if (status == -1) return PyErr_NoMemory();
    if (status == -2) {
        PyErr_SetString(PyExc_ValueError, "an index array holds an id outside its range (corrupt index?)");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The arrays both kernels take, o[0..10] into b[0..10], checked together (check_common). */
static int get_common(job_t *j, PyObject **o, buf_t *b) {
    return get_buf(o[0], &b[0], 'q', 0, "offsets") || get_buf(o[1], &b[1], 'w', 0, "weights") ||
           get_buf(o[2], &b[2], 'q', 0, "block_offsets") || get_buf(o[3], &b[3], 'b', 0, "block_ids") ||
           get_buf(o[4], &b[4], 'u', 0, "masks") || get_buf(o[5], &b[5], 'q', 0, "q_indptr") ||
           get_buf(o[6], &b[6], 'i', 0, "q_indices") || get_buf(o[7], &b[7], 'f', 0, "q_values") ||
           get_buf(o[8], &b[8], 'u', 0, "deleted") || get_buf(o[9], &b[9], 'q', 1, "out_ids") ||
           get_buf(o[10], &b[10], 'f', 1, "out_scores") ||
           check_common(j, &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6], &b[7], &b[8], &b[9], &b[10]);
}

static PyObject *py_taat_topk(PyObject *self, PyObject *args) {
    PyObject *o[11];
    job_t j;
    long long block_size, n_docs, k, q_start, q_end, id_base;
    if (!PyArg_ParseTuple(args, "OOOOOLOOOLLOOOLLL", &o[0], &o[1], &o[2], &o[3], &o[4], &block_size, &o[5], &o[6],
                          &o[7], &n_docs, &k, &o[8], &o[9], &o[10], &q_start, &q_end, &id_base))
        return NULL;
    buf_t b[11];
    memset(b, 0, sizeof b);
    j.n_docs = n_docs; j.k = k; j.q_start = q_start; j.q_end = q_end; j.id_base = id_base; j.block_size = block_size;
    if (get_common(&j, o, b)) {
        release_all(b, 11);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run_taat(&j);
    Py_END_ALLOW_THREADS
    release_all(b, 11);
    return finish(status);
}

static PyObject *py_blockmax_topk(PyObject *self, PyObject *args) {
    PyObject *o[18];
    job_t j;
    blocks_t bl;
    o[17] = NULL;
    long long block_size, n_docs, k, q_start, q_end, id_base, n_seeds;
    double alpha;
    int mode;
    PyObject *cost_obj;
    if (!PyArg_ParseTuple(args, "OOOOOLOOOOOOOOOLLOdLiOOOLLL|O", &o[0], &o[1], &o[2], &o[3], &o[4], &block_size,
                          &o[11], &o[12], &o[13], &o[14], &o[15], &o[16], &o[5], &o[6], &o[7], &n_docs, &k, &o[8],
                          &alpha, &n_seeds, &mode, &cost_obj, &o[9], &o[10], &q_start, &q_end, &id_base, &o[17]))
        return NULL;
    buf_t b[18];
    memset(b, 0, sizeof b);
    j.n_docs = n_docs; j.k = k; j.q_start = q_start; j.q_end = q_end; j.id_base = id_base; j.block_size = block_size;
    if (get_common(&j, o, b) || get_buf(o[11], &b[11], 'w', 0, "block_maxima") ||
        get_buf(o[12], &b[12], 'i', 0, "anchors") || get_buf(o[13], &b[13], 'i', 0, "dense_rows") ||
        get_buf(o[14], &b[14], 'u', 0, "dense") || get_buf(o[15], &b[15], 'f', 0, "dense_scale") ||
        get_buf(o[16], &b[16], 'I', 0, "dense_prefix") ||
        (o[17] && o[17] != Py_None && get_buf(o[17], &b[17], 'q', 1, "stats"))) {
        release_all(b, 18);
        return NULL;
    }
    bl.stats = b[17].held ? b[17].view.buf : NULL;
    bl.alpha = (float)alpha; bl.n_seeds = n_seeds; bl.mode = mode;
    {
        Py_buffer cv;
        if (PyObject_GetBuffer(cost_obj, &cv, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) { release_all(b, 18); return NULL; }
        int ok = cv.itemsize == 8 && cv.format && strchr(cv.format, 'd') && cv.len == (Py_ssize_t)sizeof bl.cost;
        if (ok) memcpy(bl.cost, cv.buf, sizeof bl.cost);
        PyBuffer_Release(&cv);
        if (!ok) { release_all(b, 18); PyErr_SetString(PyExc_ValueError, "cost must be a float64 array of COST_N values"); return NULL; }
    }
    bl.n_dense = n_items(&b[15]);
    bl.dense_rows = n_items(&b[13]) ? b[13].view.buf : NULL;
    bl.dense = b[14].view.buf; bl.dense_scale = b[15].view.buf; bl.dense_prefix = b[16].view.buf;
    bl.n_chunks = (j.n_blocks + 63) / 64;
    bl.maxima = b[11].view.buf; bl.anchors = b[12].view.buf; bl.n_anchors = n_items(&b[12]);
    const char *err = NULL;
    if (n_seeds < 1 || n_seeds > (1 << 20)) err = "n_seeds must be in [1, 2^20]";
    else if (mode < MODE_PURE || mode > MODE_AUTO) err = "mode must be 0 (pure), 1 (guarded) or 2 (auto)";
    else if (!(alpha > 0.0 && alpha <= 1.0)) err = "alpha must be in (0, 1]";
    else if (b[11].view.itemsize != b[1].view.itemsize) err = "block maxima and weights differ in dtype";
    else if (n_items(&b[11]) != j.n_entries) err = "block arrays differ in length";
    else if (bl.n_anchors != (j.n_entries + ANCHOR_EVERY - 1) / ANCHOR_EVERY) err = "anchors must have ceil(n_entries / 16) entries";
    else if (bl.dense_rows && n_items(&b[13]) != j.dim) err = "dense_rows must have dim entries";
    else if (bl.stats && n_items(&b[17]) != j.n_queries * STATS_N) err = "stats must have n_queries x 4 entries";
    else if (n_items(&b[14]) != bl.n_dense * j.n_blocks) err = "dense bounds must have n_rows x n_blocks entries";
    else if (n_items(&b[16]) != bl.n_dense * bl.n_chunks) err = "dense prefixes must have n_rows x n_chunks entries";
    else {
        /* what the loops rely on, for the terms they will read (O(query), not O(dim)) */
        for (int64_t i = 0; i < n_items(&b[6]) && !err; i++) {
            int32_t t = j.q_indices[i];
            if (bl.dense_rows && (bl.dense_rows[t] < -1 || bl.dense_rows[t] >= bl.n_dense))
                err = "dense row out of range (corrupt index?)";
        }
    }
    if (err) {
        release_all(b, 18);
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run_blockmax(&j, &bl);
    Py_END_ALLOW_THREADS
    release_all(b, 18);
    return finish(status);
}

static PyObject *py_rescore_topk(PyObject *self, PyObject *args) {
    PyObject *o[9];
    rescore_t r;
    long long dim, k, q_start, q_end, id_base;
    if (!PyArg_ParseTuple(args, "OOOLOOOOLOOLLL", &o[0], &o[1], &o[2], &dim, &o[3], &o[4], &o[5], &o[6], &k, &o[7],
                          &o[8], &q_start, &q_end, &id_base))
        return NULL;
    buf_t b[9];
    memset(b, 0, sizeof b);
    if (get_buf(o[0], &b[0], 'q', 0, "fwd_indptr") || get_buf(o[1], &b[1], 'b', 0, "fwd_indices") ||
        get_buf(o[2], &b[2], 'w', 0, "fwd_values") || get_buf(o[3], &b[3], 'q', 0, "q_indptr") ||
        get_buf(o[4], &b[4], 'i', 0, "q_indices") || get_buf(o[5], &b[5], 'f', 0, "q_values") ||
        get_buf(o[6], &b[6], 'q', 0, "candidates") || get_buf(o[7], &b[7], 'q', 1, "out_ids") ||
        get_buf(o[8], &b[8], 'f', 1, "out_scores")) {
        release_all(b, 9);
        return NULL;
    }
    r.indptr = b[0].view.buf; r.n_docs = n_items(&b[0]) - 1;
    r.indices = b[1].view.buf; r.idx16 = b[1].view.itemsize == 2; r.nnz = n_items(&b[1]);
    r.values = b[2].view.buf; r.wtype = weight_type(&b[2]);
    r.q_indptr = b[3].view.buf; r.q_indices = b[4].view.buf; r.q_values = b[5].view.buf;
    r.cand = b[6].view.buf; r.k = k; r.out_ids = b[7].view.buf; r.out_scores = b[8].view.buf;
    r.q_start = q_start; r.q_end = q_end; r.id_base = id_base; r.dim = dim;
    int64_t n_queries = n_items(&b[3]) - 1, q_nnz = n_items(&b[4]);
    const char *err = NULL;
    if (r.n_docs < 0 || n_queries < 0) err = "fwd_indptr and q_indptr need >= 1 entry";
    else if (dim < 1 || dim > (1LL << 31)) err = "dim must be in [1, 2^31]";
    else if (n_items(&b[2]) != r.nnz) err = "forward indices and values differ in length";
    else if (k < 1) err = "k must be >= 1";
    else if (n_items(&b[6]) % (n_queries > 0 ? n_queries : 1) != 0) err = "candidates must have n_queries rows";
    else if (n_items(&b[7]) != n_queries * k || n_items(&b[8]) != n_queries * k) err = "outputs must have n_queries x k entries";
    else if (q_start < 0 || q_end > n_queries || q_start > q_end) err = "query range outside the batch";
    else if (n_items(&b[5]) != q_nnz || r.q_indptr[0] != 0 || r.q_indptr[n_queries] != q_nnz) err = "q_indptr, q_indices and q_values are inconsistent";
    else {
        for (int64_t q = 0; q < n_queries && !err; q++) {
            if (r.q_indptr[q + 1] < r.q_indptr[q]) err = "q_indptr must be non-decreasing";
            /* the merge with the forward rows needs each query's terms ascending */
            for (int64_t i = r.q_indptr[q]; i < r.q_indptr[q + 1] && !err; i++) {
                if (r.q_indices[i] < 0 || r.q_indices[i] >= dim) err = "query term id outside [0, dim)";
                else if (i > r.q_indptr[q] && r.q_indices[i] <= r.q_indices[i - 1])
                    err = "query term ids must be strictly increasing within a query";
            }
        }
    }
    if (err) {
        release_all(b, 9);
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    r.depth = n_queries > 0 ? n_items(&b[6]) / n_queries : 0;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = r.wtype == W_U8 ? rescore_u8(&r) : r.wtype == W_U16 ? rescore_u16(&r) : rescore_f32(&r);
    Py_END_ALLOW_THREADS
    if (status != 0) tl_drop(&tl_qtable); /* may hold query weights after an error */
    release_all(b, 9);
    return finish(status);
}

static PyObject *py_mass_prune(PyObject *self, PyObject *args) {
    PyObject *o[6];
    double mass;
    if (!PyArg_ParseTuple(args, "OOOdOOO", &o[0], &o[1], &o[2], &mass, &o[3], &o[4], &o[5])) return NULL;
    buf_t b[6];
    memset(b, 0, sizeof b);
    if (get_buf(o[0], &b[0], 'q', 0, "q_indptr") || get_buf(o[1], &b[1], 'i', 0, "q_indices") ||
        get_buf(o[2], &b[2], 'f', 0, "q_values") || get_buf(o[3], &b[3], 'q', 1, "out_indptr") ||
        get_buf(o[4], &b[4], 'i', 1, "out_indices") || get_buf(o[5], &b[5], 'f', 1, "out_values")) {
        release_all(b, 6);
        return NULL;
    }
    const int64_t *indptr = b[0].view.buf;
    int64_t n_queries = n_items(&b[0]) - 1, nnz = n_items(&b[1]);
    const char *err = NULL;
    if (n_queries < 0) err = "q_indptr needs >= 1 entry";
    else if (n_items(&b[2]) != nnz || indptr[0] != 0 || indptr[n_queries] != nnz) err = "q_indptr, q_indices and q_values are inconsistent";
    else if (!(mass > 0.0 && mass <= 1.0)) err = "mass must be in (0, 1]";
    else if (n_items(&b[3]) != n_queries + 1 || n_items(&b[4]) < nnz || n_items(&b[5]) < nnz) err = "outputs are too short";
    else
        for (int64_t q = 0; q < n_queries && !err; q++)
            if (indptr[q + 1] < indptr[q]) err = "q_indptr must be non-decreasing";
    if (err) {
        release_all(b, 6);
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = mass_prune(indptr, b[1].view.buf, b[2].view.buf, n_queries, mass, b[3].view.buf, b[4].view.buf,
                        b[5].view.buf);
    Py_END_ALLOW_THREADS
    release_all(b, 6);
    return finish(status);
}

/* check_sparse(indptr, indices, values, dim) -> bool: whether a batch of sparse vectors keeps every invariant of
 * lsr.types.SparseBatch.validate (rows non-decreasing, term ids in [0, dim) and strictly increasing within a
 * row, values finite and > 0), in one pass. lsr.kernels.check_queries calls it before every search (numpy's
 * dozen passes took ~35 µs of a single-query search) and lets validate() word the error when it fails. */
static PyObject *py_check_sparse(PyObject *self, PyObject *args) {
    PyObject *o[3];
    long long dim;
    if (!PyArg_ParseTuple(args, "OOOL", &o[0], &o[1], &o[2], &dim)) return NULL;
    buf_t b[3];
    memset(b, 0, sizeof b);
    if (get_buf(o[0], &b[0], 'q', 0, "indptr") || get_buf(o[1], &b[1], 'i', 0, "indices") ||
        get_buf(o[2], &b[2], 'f', 0, "values")) {
        release_all(b, 3);
        return NULL;
    }
    const int64_t *indptr = b[0].view.buf;
    const int32_t *indices = b[1].view.buf;
    const float *values = b[2].view.buf;
    int64_t n = n_items(&b[0]) - 1, nnz = n_items(&b[1]);
    int ok = n >= 0 && n_items(&b[2]) == nnz && indptr[0] == 0 && indptr[n] == nnz;
    for (int64_t q = 0; q < n && ok; q++) {
        int64_t lo = indptr[q], hi = indptr[q + 1];
        if (hi < lo || lo < 0 || hi > nnz) { ok = 0; break; }
        for (int64_t i = lo; i < hi; i++) {
            int32_t t = indices[i];
            float v = values[i];
            if (t < 0 || t >= dim || !(v > 0) || isinf(v) || (i > lo && t <= indices[i - 1])) { ok = 0; break; }
        }
    }
    release_all(b, 3);
    return PyBool_FromLong(ok);
}

/* set_simd(name) -> the vector step dense scoring now takes: name caps it ("avx512": the best the CPU has, the
 * default; "avx2"; "none": the scalar loop), and the CPU may cap it lower */
static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    int cap = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(name, SIMD_NAMES[i]) == 0) cap = i;
    if (cap < 0) {
        PyErr_Format(PyExc_ValueError, "unknown SIMD level %R (avx512, avx2 or none)", PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    simd_cap = cap;
    return PyUnicode_FromString(SIMD_NAMES[simd_level()]);
}

static PyMethodDef methods[] = {
    {"taat_topk", py_taat_topk, METH_VARARGS,
     "taat_topk(offsets, weights, block_offsets, block_ids, masks, block_size, q_indptr, q_indices, q_values,"
     " n_docs, k, deleted, out_ids, out_scores, q_start, q_end, id_base) -> None"},
    {"blockmax_topk", py_blockmax_topk, METH_VARARGS,
     "blockmax_topk(offsets, weights, block_offsets, block_ids, masks, block_size, block_maxima, anchors,"
     " dense_rows, dense, dense_scale, dense_prefix, q_indptr, q_indices, q_values, n_docs, k, deleted, alpha,"
     " n_seeds, mode, cost, out_ids, out_scores, q_start, q_end, id_base[, stats]) -> None"},
    {"rescore_topk", py_rescore_topk, METH_VARARGS,
     "rescore_topk(fwd_indptr, fwd_indices, fwd_values, dim, q_indptr, q_indices, q_values, candidates, k, out_ids,"
     " out_scores, q_start, q_end, id_base) -> None"},
    {"check_sparse", py_check_sparse, METH_VARARGS, "check_sparse(indptr, indices, values, dim) -> bool"},
    {"mass_prune", py_mass_prune, METH_VARARGS,
     "mass_prune(q_indptr, q_indices, q_values, mass, out_indptr, out_indices, out_values) -> None"},
    {"set_simd", py_set_simd, METH_VARARGS,
     "set_simd(level) -> str: cap dense scoring's vector step at 'avx512' (the default: the best the CPU has), "
     "'avx2' or 'none' (the scalar loop); returns the level now taken"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_csparse", "lsr C scoring kernels", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__csparse(void) {
    init_bit_pos();
#ifdef HAVE_SIMD_TERM
    init_spread();
#endif
    return PyModule_Create(&module);
}
