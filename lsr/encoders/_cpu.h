/*
 * What the CPU runs, asked once per process: shared by the encoders' C kernels (_cproject.c, _cbert.c), each
 * of which compiles its wide loops for one ISA alone (a target attribute) and calls them only where these say so.
 */
#ifndef LSR_ENCODERS_CPU_H
#define LSR_ENCODERS_CPU_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

/* AVX2 and FMA (the AVX2 kernels use both) */
static inline int cpu_avx2_fma(void) {
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

/* AVX-512 F, BW and VNNI, besides AVX2 and FMA */
static inline int cpu_avx512_vnni(void) {
#ifdef HAVE_X86
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = cpu_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vnni");
    }
    return known;
#else
    return 0;
#endif
}

#endif
