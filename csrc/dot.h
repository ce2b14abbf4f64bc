// Dot products of embedding rows, accumulated in float32: float32 with float32, IEEE half with
// IEEE half (uint16 bits), and a float32 query with a half row. Shared by the pruning kernel and
// the HNSW index. AVX-512 (with F16C conversion) when the build targets it, a portable loop of
// eight accumulators otherwise; each function sums in a fixed order, so a pair of vectors always
// gives the same value.
#pragma once

#include <cstdint>

#include "half.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ramen {

inline float dot_f32(const float* a, const float* b, int64_t dim) {
#if defined(__AVX512F__)
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= dim; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= dim; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < dim) {
        const __mmask16 m = static_cast<__mmask16>((1u << (dim - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
#else
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
    for (; i < dim; ++i) s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
#endif
}

inline float dot_f16(const uint16_t* a, const uint16_t* b, int64_t dim) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    auto half16 = [](const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); };
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= dim; i += 64) {
        s0 = _mm512_fmadd_ps(half16(a + i), half16(b + i), s0);
        s1 = _mm512_fmadd_ps(half16(a + i + 16), half16(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(half16(a + i + 32), half16(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(half16(a + i + 48), half16(b + i + 48), s3);
    }
    for (; i + 16 <= dim; i += 16) s0 = _mm512_fmadd_ps(half16(a + i), half16(b + i), s0);
    if (i < dim) {
        const __mmask16 m = static_cast<__mmask16>((1u << (dim - i)) - 1);
        const __m512 x = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, a + i));
        const __m512 y = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, b + i));
        s1 = _mm512_fmadd_ps(x, y, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
#else
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int j = 0; j < 8; ++j) s[j] += half_to_float(a[i + j]) * half_to_float(b[i + j]);
    for (; i < dim; ++i) s[0] += half_to_float(a[i]) * half_to_float(b[i]);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
#endif
}

// A float32 query with a half row (the HNSW search scoring its stored rows).
inline float dot_f32_f16(const float* q, const uint16_t* v, int64_t dim) {
#if defined(__AVX512F__)
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        const __m512 v0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i)));
        const __m512 v1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i + 16)));
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), v0, s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + i + 16), v1, s1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    for (; i < dim; ++i) s += q[i] * half_to_float(v[i]);
    return s;
#else
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int j = 0; j < 8; ++j) s[j] += q[i + j] * half_to_float(v[i + j]);
    for (; i < dim; ++i) s[0] += q[i] * half_to_float(v[i]);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
#endif
}

// The same by overload, for code templated over the element type.
inline float dot(const float* a, const float* b, int64_t dim) { return dot_f32(a, b, dim); }
inline float dot(const uint16_t* a, const uint16_t* b, int64_t dim) { return dot_f16(a, b, dim); }
inline float dot(const float* q, const uint16_t* v, int64_t dim) { return dot_f32_f16(q, v, dim); }

}  // namespace ramen
