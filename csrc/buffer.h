// Owned output arrays of the kernels: a growable buffer whose memory can be handed over to numpy.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ramen {

// Memory for Buffer: on Linux an anonymous mapping of its own, grown by mremap (pages move, nothing
// is copied) and unmapped on free, so a growing output never leaves copies behind; elsewhere
// realloc. A 64-byte header before the data records the size, so that free_buffer needs only the
// data pointer (numpy frees released buffers through it).
void* grow_buffer(void* data, size_t bytes);
void free_buffer(void* data);

// A growable array whose ownership can be handed over (to numpy) with release().
template <typename T>
class Buffer {
public:
    Buffer() = default;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    Buffer(Buffer&& other) noexcept : data_(other.data_), size_(other.size_), capacity_(other.capacity_) {
        other.data_ = nullptr;
        other.size_ = other.capacity_ = 0;
    }
    Buffer& operator=(Buffer&& other) noexcept {
        if (this != &other) {
            free_buffer(data_);
            data_ = other.data_;
            size_ = other.size_;
            capacity_ = other.capacity_;
            other.data_ = nullptr;
            other.size_ = other.capacity_ = 0;
        }
        return *this;
    }
    ~Buffer() { free_buffer(data_); }

    T* data() { return data_; }
    const T* data() const { return data_; }
    int64_t size() const { return size_; }

    // Makes room for `n` elements in all (contents kept); geometric growth.
    void reserve(int64_t n) {
        if (n <= capacity_) return;
        int64_t cap = capacity_ < 1024 ? 1024 : capacity_;
        while (cap < n) cap += cap / 2;
        reallocate(cap);
    }
    void resize(int64_t n) {
        reserve(n);
        size_ = n;
    }
    // Gives back unused capacity (in place).
    void shrink_to_fit() {
        if (capacity_ > size_) reallocate(size_ > 0 ? size_ : 1);
    }
    // The caller takes the memory over and must free it with free_buffer().
    T* release() {
        T* p = data_;
        data_ = nullptr;
        size_ = capacity_ = 0;
        return p;
    }

private:
    void reallocate(int64_t cap) {
        data_ = static_cast<T*>(grow_buffer(data_, static_cast<size_t>(cap) * sizeof(T)));
        capacity_ = cap;
    }

    T* data_ = nullptr;
    int64_t size_ = 0;
    int64_t capacity_ = 0;
};

}  // namespace ramen
