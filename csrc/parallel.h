// A minimal deterministic parallel-for over std::thread.
//
// Work is split into fixed chunks whose boundaries depend only on the problem size and the
// chunk size, never on the thread count, so kernels that write per-chunk results give the same
// output for any number of threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace ramen {

// Number of hardware threads (at least 1).
inline int hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

// Resolves a user thread count: <= 0 means every hardware thread.
inline int resolve_threads(int num_threads) {
    return num_threads <= 0 ? hardware_threads() : num_threads;
}

// Calls body(begin, end) for consecutive chunks [begin, end) of [0, n), `chunk` items each (the
// last may be shorter), spread dynamically over `num_threads` threads, or over as many as the system
// lets start (the output does not depend on how many). The first exception thrown by a body stops
// the remaining chunks and is rethrown on the calling thread.
template <typename Body>
void parallel_for(int64_t n, int64_t chunk, int num_threads, Body&& body) {
    if (n <= 0) return;
    chunk = std::max<int64_t>(chunk, 1);
    const int64_t num_chunks = (n + chunk - 1) / chunk;
    const int threads = static_cast<int>(std::min<int64_t>(resolve_threads(num_threads), num_chunks));
    if (threads <= 1) {
        for (int64_t c = 0; c < num_chunks; ++c) body(c * chunk, std::min(n, (c + 1) * chunk));
        return;
    }
    std::atomic<int64_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto worker = [&]() {
        try {
            for (int64_t c = next++; c < num_chunks && !failed; c = next++)
                body(c * chunk, std::min(n, (c + 1) * chunk));
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            failed = true;
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (int t = 1; t < threads; ++t) {
        try {
            pool.emplace_back(worker);
        } catch (const std::system_error&) {
            break;  // the system refused another thread (a process or cgroup limit): fewer share the chunks
        }
    }
    worker();
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace ramen
