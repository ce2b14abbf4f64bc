// Edge pruning by the dot product of endpoint embeddings (float32 or IEEE half), see graph.h.
//
// Edges are split into fixed chunks over the threads; each edge reads its column's embedding at
// random, so the rows of the next few edges are prefetched while the current dot product runs.
// AVX-512 (with F16C conversion) when the build targets it, a portable loop otherwise.
#include <algorithm>
#include <cstring>
#include <vector>

#include "graph.h"
#include "parallel.h"

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

namespace ramen {
namespace {

constexpr int kPrefetchEdges = 8;       // how many edges ahead the column rows are fetched
constexpr int64_t kEdgesPerChunk = 1 << 14;

// IEEE binary16 -> binary32, exact (subnormals, infinities and NaN included).
inline float half_to_float(uint16_t h) {
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1Fu;
    uint32_t mantissa = h & 0x3FFu;
    uint32_t bits;
    if (exponent == 0x1F) {
        bits = sign | 0x7F800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {  // subnormal: normalise
        exponent = 113;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

inline void prefetch_row(const void* row, int64_t bytes) {
    const char* p = static_cast<const char*>(row);
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

template <typename T>
float dot(const T* a, const T* b, int64_t dim);

template <>
float dot<float>(const float* a, const float* b, int64_t dim) {
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

template <>
float dot<uint16_t>(const uint16_t* a, const uint16_t* b, int64_t dim) {
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

template <typename I, typename T>
void prune_mask(const CsrView<I>& E, const T* row_emb, const T* col_emb, int64_t dim, float threshold,
                int num_threads, uint8_t* keep, int64_t* row_kept) {
    const int64_t nnz = E.indptr[E.rows];
    const int64_t row_bytes = dim * static_cast<int64_t>(sizeof(T));
    parallel_for(nnz, kEdgesPerChunk, num_threads, [&](int64_t e0, int64_t e1) {
        // The row of edge e0: the last row whose first edge is at or before e0.
        int64_t r = std::upper_bound(E.indptr, E.indptr + E.rows + 1, static_cast<I>(e0)) - E.indptr - 1;
        int64_t row_end = E.indptr[r + 1];
        const int64_t ahead = std::min<int64_t>(e1, e0 + kPrefetchEdges);
        for (int64_t e = e0; e < ahead; ++e) prefetch_row(col_emb + static_cast<int64_t>(E.indices[e]) * dim, row_bytes);
        for (int64_t e = e0; e < e1; ++e) {
            while (e >= row_end) row_end = E.indptr[++r + 1];
            if (e + kPrefetchEdges < e1)
                prefetch_row(col_emb + static_cast<int64_t>(E.indices[e + kPrefetchEdges]) * dim, row_bytes);
            const float s = dot<T>(row_emb + r * dim, col_emb + static_cast<int64_t>(E.indices[e]) * dim, dim);
            keep[e] = s > threshold ? 1 : 0;
        }
    });
    parallel_for(E.rows, 1 << 16, num_threads, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            int64_t kept = 0;
            for (int64_t e = E.indptr[r]; e < E.indptr[r + 1]; ++e) kept += keep[e];
            row_kept[r] = kept;
        }
    });
}

// Whether an IEEE value has all exponent bits set (an infinity or a NaN), on its bits.
inline uint32_t non_finite(uint32_t bits) { return (bits & 0x7F800000u) == 0x7F800000u; }
inline uint32_t non_finite(uint16_t bits) { return (bits & 0x7C00u) == 0x7C00u; }

// The first row holding a NaN or an infinity (exponent bits all ones), or -1; one parallel pass.
template <typename Bits>
int64_t first_non_finite(const Bits* data, int64_t rows, int64_t dim, int num_threads) {
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(dim, 1));
    std::vector<int64_t> first(static_cast<size_t>((rows + chunk - 1) / chunk), -1);
    parallel_for(rows, chunk, num_threads, [&](int64_t r0, int64_t r1) {
        const Bits* p = data + r0 * dim;
        const int64_t n = (r1 - r0) * dim;
        uint32_t bad = 0;
        for (int64_t i = 0; i < n; ++i) bad |= non_finite(p[i]);  // a branch-free reduction: vectorises
        if (bad == 0) return;
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t j = 0; j < dim; ++j)
                if (non_finite(data[r * dim + j])) {
                    first[static_cast<size_t>(r0 / chunk)] = r;
                    return;
                }
    });
    for (const int64_t r : first)
        if (r >= 0) return r;
    return -1;
}

}  // namespace

int64_t first_non_finite_f32(const float* data, int64_t rows, int64_t dim, int num_threads) {
    return first_non_finite(reinterpret_cast<const uint32_t*>(data), rows, dim, num_threads);
}
int64_t first_non_finite_f16(const uint16_t* data, int64_t rows, int64_t dim, int num_threads) {
    return first_non_finite(data, rows, dim, num_threads);
}

float dot_f32(const float* a, const float* b, int64_t dim) { return dot<float>(a, b, dim); }
float dot_f16(const uint16_t* a, const uint16_t* b, int64_t dim) { return dot<uint16_t>(a, b, dim); }

template <typename I>
void prune_mask_f32(const CsrView<I>& E, const float* row_emb, const float* col_emb, int64_t dim, float threshold,
                    int num_threads, uint8_t* keep, int64_t* row_kept) {
    prune_mask<I, float>(E, row_emb, col_emb, dim, threshold, num_threads, keep, row_kept);
}

template <typename I>
void prune_mask_f16(const CsrView<I>& E, const uint16_t* row_emb, const uint16_t* col_emb, int64_t dim,
                    float threshold, int num_threads, uint8_t* keep, int64_t* row_kept) {
    prune_mask<I, uint16_t>(E, row_emb, col_emb, dim, threshold, num_threads, keep, row_kept);
}

template void prune_mask_f32(const CsrView<int32_t>&, const float*, const float*, int64_t, float, int, uint8_t*, int64_t*);
template void prune_mask_f32(const CsrView<int64_t>&, const float*, const float*, int64_t, float, int, uint8_t*, int64_t*);
template void prune_mask_f16(const CsrView<int32_t>&, const uint16_t*, const uint16_t*, int64_t, float, int, uint8_t*,
                             int64_t*);
template void prune_mask_f16(const CsrView<int64_t>&, const uint16_t*, const uint16_t*, int64_t, float, int, uint8_t*,
                             int64_t*);

}  // namespace ramen
