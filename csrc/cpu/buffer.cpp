// Memory of growable output buffers (buffer.h): one anonymous mapping per buffer on Linux.
#include "buffer.h"

#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ramen {
namespace {

constexpr size_t kHeader = 64;  // keeps the data 64-byte aligned

struct Header {
    size_t bytes;  // of the whole block, header included
};

Header* header_of(void* data) { return reinterpret_cast<Header*>(static_cast<char*>(data) - kHeader); }

}  // namespace

void* grow_buffer(void* data, size_t bytes) {
    const size_t total = bytes + kHeader;
#if defined(__linux__)
    void* base = data == nullptr
                     ? mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                     : mremap(header_of(data), header_of(data)->bytes, total, MREMAP_MAYMOVE);
    if (base == MAP_FAILED) throw std::bad_alloc();
#else
    void* base = std::realloc(data == nullptr ? nullptr : header_of(data), total);
    if (base == nullptr) throw std::bad_alloc();
#endif
    static_cast<Header*>(base)->bytes = total;
    return static_cast<char*>(base) + kHeader;
}

void free_buffer(void* data) {
    if (data == nullptr) return;
#if defined(__linux__)
    munmap(header_of(data), header_of(data)->bytes);
#else
    std::free(header_of(data));
#endif
}

}  // namespace ramen
