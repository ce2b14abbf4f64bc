// Software prefetch of a byte range, for kernels that gather rows at random (pruning, HNSW search).
#pragma once

#include <cstdint>

namespace ramen {

// Prefetches every cache line that [p, p + bytes) touches. Buffers need not start on a line:
// numpy's start 16 bytes past one, so a 768-byte row spans 13 lines, and stepping 64 bytes from
// p itself would leave the last line to a demand miss (that cost pruning a fifth of its speed).
inline void prefetch_lines(const void* p, int64_t bytes) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(p);
    const uintptr_t end = start + static_cast<uintptr_t>(bytes);
    for (uintptr_t line = start & ~uintptr_t{63}; line < end; line += 64)
        __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 3);
}

}  // namespace ramen
