// Counter-based random numbers, the same on host and device: Philox-4x32-10 (Salmon et al., SC'11).
//
// A draw is a pure function of (key, counter), so a walk keyed by (seed, start node, hop) gives
// the same numbers whichever thread (or GPU block) runs it and in whatever order. On top of the
// block function: a uniform float in [0, 1) and an unbiased bounded integer (Lemire's method).
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define RAMEN_HD __host__ __device__ __forceinline__
#else
#define RAMEN_HD inline
#endif

namespace ramen {

// Philox4x32 constants (Random123): round multipliers and the Weyl key increments.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

struct Words4 {
    uint32_t w[4];
};

// Philox-4x32 with 10 rounds: four 32-bit words of output per 128-bit counter and 64-bit key.
// Written with plain 64-bit products so that a loop over lanes vectorises (vpmuludq).
RAMEN_HD Words4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; ++round) {
        const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
        const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
        const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
        const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
        c1 = static_cast<uint32_t>(p1);
        c3 = static_cast<uint32_t>(p0);
        c0 = n0;
        c2 = n2;
        k0 += kPhiloxW0;
        k1 += kPhiloxW1;
    }
    return Words4{{c0, c1, c2, c3}};
}

// A uniform float in [0, 1) from the top 24 bits of a word (every value a multiple of 2^-24).
RAMEN_HD float uniform01(uint32_t word) {
    return static_cast<float>(word >> 8) * 5.9604644775390625e-8f;  // 2^-24
}

// The integer test equivalent to uniform01(word) < p: (word >> 8) < threshold24(p), where
// threshold24(p) = ceil(p * 2^24) (k / 2^24 < p exactly when k < ceil(p * 2^24) for integer k).
RAMEN_HD uint32_t threshold24(float p) {
    if (!(p > 0.0f)) return 0;
    if (p >= 1.0f) return 1u << 24;
    const double scaled = static_cast<double>(p) * 16777216.0;  // exact: p has a 24-bit significand
    const uint32_t floor = static_cast<uint32_t>(scaled);
    return floor + (static_cast<double>(floor) < scaled ? 1u : 0u);
}

RAMEN_HD bool below(uint32_t word, uint32_t threshold) { return (word >> 8) < threshold; }

// Further words for one (key, stream, hop), computed only when asked for: word i is word i % 4
// of the Philox block at counter (hop, stream_lo, stream_hi, first_block + (i / 4) * block_step).
// A kernel takes the first word of each draw from a block it computed in bulk (vectorised over
// walkers) and gives each bounded draw its own CounterStream, with disjoint block indices, for
// the rare retries of Lemire's method.
class CounterStream {
public:
    RAMEN_HD CounterStream(uint64_t key, uint64_t stream, uint32_t hop, uint32_t first_block, uint32_t block_step)
        : k0_(static_cast<uint32_t>(key)), k1_(static_cast<uint32_t>(key >> 32)),
          s0_(static_cast<uint32_t>(stream)), s1_(static_cast<uint32_t>(stream >> 32)),
          hop_(hop), block_(first_block), step_(block_step), used_(4), words_{{0, 0, 0, 0}} {}

    RAMEN_HD uint32_t next() {
        if (used_ == 4) {
            words_ = philox4x32(hop_, s0_, s1_, block_, k0_, k1_);
            block_ += step_;
            used_ = 0;
        }
        return words_.w[used_++];
    }

    RAMEN_HD uint64_t next64() {
        const uint64_t lo = next();
        return lo | (static_cast<uint64_t>(next()) << 32);
    }

private:
    uint32_t k0_, k1_, s0_, s1_, hop_, block_, step_, used_;
    Words4 words_;
};

RAMEN_HD uint64_t mulhi64(uint64_t a, uint64_t b) {
#ifdef __CUDA_ARCH__
    return __umul64hi(a, b);
#else
    return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

// An unbiased integer in [0, range), range >= 1, by Lemire's multiply-and-reject method: one
// multiplication, and a second draw with probability (2^32 mod range) / 2^32 < range / 2^32.
template <typename Stream>
RAMEN_HD uint32_t uniform_below32(uint32_t range, uint32_t first_word, Stream& stream) {
    uint64_t m = static_cast<uint64_t>(first_word) * range;
    uint32_t low = static_cast<uint32_t>(m);
    if (low < range) {
        const uint32_t threshold = (0u - range) % range;  // 2^32 mod range
        while (low < threshold) {
            m = static_cast<uint64_t>(stream.next()) * range;
            low = static_cast<uint32_t>(m);
        }
    }
    return static_cast<uint32_t>(m >> 32);
}

// The same over 64 bits, for ranges of 2^32 or more (degrees only int64 indices can hold).
template <typename Stream>
RAMEN_HD uint64_t uniform_below64(uint64_t range, Stream& stream) {
    uint64_t x = stream.next64();
    uint64_t low = x * range;
    if (low < range) {
        const uint64_t threshold = (0ull - range) % range;  // 2^64 mod range
        while (low < threshold) {
            x = stream.next64();
            low = x * range;
        }
    }
    return mulhi64(x, range);
}

// An integer in [0, range) for any range >= 1: `first_word`, then the stream's words on rejection
// (32-bit draws while they suffice; ranges of 2^32 or more draw 64-bit words from the stream).
template <typename Stream>
RAMEN_HD uint64_t uniform_below(uint64_t range, uint32_t first_word, Stream& stream) {
    if (range <= 0xFFFFFFFFull) return uniform_below32(static_cast<uint32_t>(range), first_word, stream);
    return uniform_below64(range, stream);
}

}  // namespace ramen
