// CUDA kernel of the fused triplet scoring (see triplet.h): one block per row of S.
//
// The block copies its row into its working set as float32 (in shared memory, or for rows too
// wide for it in a global-memory workspace: triplet_launch.h), marks excluded and positive columns,
// selects the hardest candidates with a radix select over the float bits (four 8-bit passes; ties
// at the threshold go to the lowest columns, as on the CPU), compacts positives and negatives into
// lists, computes the hinges (float32 throughout) and writes the loss and the dense grad row.
// Block-wide sums use a fixed order, so results are deterministic from run to run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "triplet.h"
#include "triplet_launch.h"

namespace ramen {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

enum : uint8_t { kCandidate = 0, kPositive = 1, kExcluded = 2, kSelected = 3 };

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// A uint32 whose unsigned order is the float order; -0 maps like +0 so that equal scores tie.
__device__ __forceinline__ uint32_t order_key(float s) {
    const uint32_t bits = __float_as_uint(s == 0.0f ? 0.0f : s);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Scratch of the block-wide reductions, ranks and the radix select.
struct BlockScratch {
    float f[kWarps];
    int n[kWarps];
    int hist[256];
    int digit;
    int remaining;
};

// Sum of v over the block, the same value returned to every thread. Every thread must call it.
__device__ float block_sum(float v, BlockScratch& sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    __syncthreads();  // earlier readers of sh.f are done
    if ((threadIdx.x & 31) == 0) sh.f[threadIdx.x >> 5] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += sh.f[w];
    return total;
}

__device__ float block_max(float v, BlockScratch& sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh.f[threadIdx.x >> 5] = v;
    __syncthreads();
    float top = sh.f[0];
    for (int w = 1; w < kWarps; ++w) top = fmaxf(top, sh.f[w]);
    return top;
}

__device__ int block_count(int v, BlockScratch& sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh.n[threadIdx.x >> 5] = v;
    __syncthreads();
    int total = 0;
    for (int w = 0; w < kWarps; ++w) total += sh.n[w];
    return total;
}

// The number of threads before this one (in thread order) whose flag is set; total: all of them.
__device__ int block_rank(bool flag, int& total, BlockScratch& sh) {
    const unsigned ballot = __ballot_sync(kFullMask, flag);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh.n[warp] = __popc(ballot);
    __syncthreads();
    int before = 0;
    total = 0;
    for (int w = 0; w < kWarps; ++w) {
        before += w < warp ? sh.n[w] : 0;
        total += sh.n[w];
    }
    return before + __popc(ballot & ((1u << lane) - 1u));
}

// Sets status[j] = value for the row's members of `sets`; returns 1 on a malformed CSR row or a
// column id outside [0, cols) (the caller turns the row into NaN).
__device__ int mark_columns(const ColumnSets& sets, int64_t row, int cols, uint8_t value, uint8_t* status) {
    if (sets.mask != nullptr) {
        const uint8_t* m = sets.mask + row * cols;
        for (int j = threadIdx.x; j < cols; j += kThreads)
            if (m[j]) status[j] = value;
        return 0;
    }
    if (sets.indptr == nullptr) return 0;
    const int64_t lo = sets.indptr[row], hi = sets.indptr[row + 1];
    if (lo < 0 || hi < lo || hi > sets.nnz) return 1;
    int bad = 0;
    for (int64_t e = lo + threadIdx.x; e < hi; e += kThreads) {
        const int64_t j = sets.indices[e];
        if (j < 0 || j >= cols)
            bad = 1;
        else
            status[j] = value;  // duplicates write the same value
    }
    return bad;
}

// Marks the k hardest candidates kSelected: the k-th largest key by radix select, every key above
// it, and the lowest columns among the keys equal to it. Needs k < number of candidates.
__device__ void select_hardest(const float* score, uint8_t* status, int cols, int k, BlockScratch& sh) {
    uint32_t prefix = 0, known = 0;  // the k-th key's bits found so far, and which bits those are
    int remaining = k;               // its rank among the candidates whose keys match the prefix
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int d = threadIdx.x; d < 256; d += kThreads) sh.hist[d] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < cols; j += kThreads) {
            if (status[j] != kCandidate) continue;
            const uint32_t key = order_key(score[j]);
            if ((key & known) == prefix) atomicAdd(&sh.hist[(key >> shift) & 0xffu], 1);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int d = 255;
            int r = remaining;
            while (d > 0 && sh.hist[d] < r) r -= sh.hist[d--];
            sh.digit = d;
            sh.remaining = r;
        }
        __syncthreads();
        prefix |= static_cast<uint32_t>(sh.digit) << shift;
        known |= 0xffu << shift;
        remaining = sh.remaining;
    }
    const uint32_t threshold = prefix;
    int ties = 0;
    for (int j = threadIdx.x; j < cols; j += kThreads) {
        if (status[j] != kCandidate) continue;
        const uint32_t key = order_key(score[j]);
        if (key > threshold)
            status[j] = kSelected;
        else if (key == threshold)
            ++ties;
    }
    const int num_ties = block_count(ties, sh);
    // Take `remaining` of the ties, lowest columns first: tiles of kThreads columns in order (the
    // column j = base + threadIdx.x belongs to this thread in every loop of this kernel).
    int taken = 0;
    for (int base = 0; base < cols && taken < remaining; base += kThreads) {
        const int j = base + threadIdx.x;
        const bool tie = j < cols && status[j] == kCandidate && order_key(score[j]) == threshold;
        int total = 0;
        const int rank = block_rank(tie, total, sh);
        if (tie && (num_ties == remaining || taken + rank < remaining)) status[j] = kSelected;
        taken += total;
    }
}

// Positive columns to list[0, num_pos) and selected negatives to list[cols - num_neg, cols).
__device__ void compact(const uint8_t* status, int cols, int* list, BlockScratch& sh) {
    int num_pos = 0, num_neg = 0;
    for (int base = 0; base < cols; base += kThreads) {
        const int j = base + threadIdx.x;
        const uint8_t st = j < cols ? status[j] : kExcluded;
        int pos_total = 0, neg_total = 0;
        const int pos_rank = block_rank(st == kPositive, pos_total, sh);
        const int neg_rank = block_rank(st == kSelected, neg_total, sh);
        if (st == kPositive) list[num_pos + pos_rank] = j;
        if (st == kSelected) list[cols - 1 - (num_neg + neg_rank)] = j;
        num_pos += pos_total;
        num_neg += neg_total;
    }
}

// kGlobal: the working set (score f32, grad accumulator f32, list slot i32, status u8 a column) in
// `workspace`, `stride` bytes a block, instead of dynamic shared memory. Block b scores row row0 + b.
template <typename T, bool kGlobal>
__global__ void __launch_bounds__(kThreads)
    mine_rows(const T* scores, int64_t row0, int cols, ColumnSets pos, ColumnSets exc, float margin,
              int64_t num_negatives, float temperature, float* __restrict__ loss, T* grad,
              int64_t* __restrict__ count, char* workspace, int64_t stride) {
    extern __shared__ float4 dynamic_smem[];
    char* base = kGlobal ? workspace + static_cast<int64_t>(blockIdx.x) * stride : reinterpret_cast<char*>(dynamic_smem);
    float* score = reinterpret_cast<float*>(base);
    float* gacc = score + cols;
    int* list = reinterpret_cast<int*>(gacc + cols);
    uint8_t* status = reinterpret_cast<uint8_t*>(list + cols);
    __shared__ BlockScratch sh;

    // grad may alias scores: the row is read whole before its grad row is written.
    const int64_t row = row0 + blockIdx.x;
    const T* srow = scores + row * cols;
    T* grow = grad + row * cols;

    // The row into the working set, every column a candidate; then exclusions, then positives
    // (a column both positive and excluded ends positive).
    int bad = 0;
    for (int j = threadIdx.x; j < cols; j += kThreads) {
        const float s = load(srow + j);
        bad |= !isfinite(s);
        score[j] = s;
        gacc[j] = 0.0f;
        status[j] = kCandidate;
    }
    __syncthreads();
    bad |= mark_columns(exc, row, cols, kExcluded, status);
    __syncthreads();
    bad |= mark_columns(pos, row, cols, kPositive, status);
    if (__syncthreads_or(bad)) {
        const float nan = __int_as_float(0x7fffffff);
        for (int j = threadIdx.x; j < cols; j += kThreads) store(grow + j, nan);
        if (threadIdx.x == 0) {
            loss[row] = nan;
            count[row] = 0;
        }
        return;
    }

    int local_pos = 0, local_cand = 0;
    for (int j = threadIdx.x; j < cols; j += kThreads) {
        local_pos += status[j] == kPositive;
        local_cand += status[j] == kCandidate;
    }
    const int num_pos = block_count(local_pos, sh);
    const int num_cand = block_count(local_cand, sh);
    const int num_neg = (num_negatives <= 0 || num_negatives >= num_cand) ? num_cand : static_cast<int>(num_negatives);
    if (num_pos == 0 || num_neg == 0) {
        for (int j = threadIdx.x; j < cols; j += kThreads) store(grow + j, 0.0f);
        if (threadIdx.x == 0) {
            loss[row] = 0.0f;
            count[row] = 0;
        }
        return;
    }

    if (num_neg == num_cand) {
        for (int j = threadIdx.x; j < cols; j += kThreads)
            if (status[j] == kCandidate) status[j] = kSelected;
    } else {
        select_hardest(score, status, cols, num_neg, sh);
    }
    __syncthreads();
    compact(status, cols, list, sh);
    __syncthreads();
    const int* neg = list + (cols - num_neg);

    // Softmax weights exp((S_in - top) / temperature): the top negative violates whenever any
    // does, so the weights of a violating set sum to at least 1.
    const bool softmax = temperature > 0.0f;
    float top = -INFINITY;
    if (softmax) {
        for (int b = threadIdx.x; b < num_neg; b += kThreads) top = fmaxf(top, score[neg[b]]);
        top = block_max(top, sh);
    }
    double row_loss = 0.0;  // the same in every thread; double: a row may sum many positives
    for (int a = 0; a < num_pos; ++a) {
        const int p = list[a];
        const float sp = score[p];
        float violated = 0.0f, z = 0.0f, weighted = 0.0f;
        for (int b = threadIdx.x; b < num_neg; b += kThreads) {
            const float sn = score[neg[b]];
            const float h = sn - sp + margin;
            if (h > 0.0f) {
                const float w = softmax ? expf((sn - top) / temperature) : 1.0f;
                violated += 1.0f;
                z += w;
                weighted += w * h;
            }
        }
        violated = block_sum(violated, sh);
        z = block_sum(z, sh);
        weighted = block_sum(weighted, sh);
        if (violated == 0.0f) continue;
        // With softmax the violating negatives share a weight of 1; plain hinges weigh 1 each.
        const float scale = softmax ? 1.0f / z : 1.0f;
        for (int b = threadIdx.x; b < num_neg; b += kThreads) {  // thread b owns negative b: no races
            const float sn = score[neg[b]];
            const float h = sn - sp + margin;
            if (h > 0.0f) gacc[neg[b]] += softmax ? expf((sn - top) / temperature) * scale : 1.0f;
        }
        if (threadIdx.x == 0) gacc[p] = softmax ? -1.0f : -violated;
        row_loss += static_cast<double>(weighted * scale);
    }
    __syncthreads();
    for (int j = threadIdx.x; j < cols; j += kThreads) store(grow + j, gacc[j]);
    if (threadIdx.x == 0) {
        loss[row] = static_cast<float>(row_loss);
        count[row] = static_cast<int64_t>(num_pos) * num_neg;
    }
}

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess)
        throw std::runtime_error(std::string("ramen triplet kernel: ") + what + ": " + cudaGetErrorString(err));
}

// Makes `device` current for the scope, restoring the previous one after.
class DeviceScope {
 public:
    explicit DeviceScope(int device) {
        check(cudaGetDevice(&previous_), "cudaGetDevice");
        if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
        current_ = device;
    }
    ~DeviceScope() {
        if (previous_ != current_) cudaSetDevice(previous_);
    }
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;

 private:
    int previous_ = 0;
    int current_ = 0;
};

// The device's opt-in shared memory per block and the kernel's static shared memory, queried once
// per device.
struct DeviceLimits {
    int64_t optin_bytes = 0;
    int64_t static_bytes = 0;
};

template <typename T>
int64_t static_shared_bytes() {
    cudaFuncAttributes attributes{};
    check(cudaFuncGetAttributes(&attributes, mine_rows<T, false>), "kernel attributes");
    return static_cast<int64_t>(attributes.sharedSizeBytes);
}

DeviceLimits device_limits(int device) {
    static std::mutex mutex;
    static std::unordered_map<int, DeviceLimits> cache;
    const std::lock_guard<std::mutex> lock(mutex);
    const auto hit = cache.find(device);
    if (hit != cache.end()) return hit->second;
    int optin = 0;
    check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "shared memory size");
    DeviceLimits limits;
    limits.optin_bytes = optin;
    limits.static_bytes = std::max({static_shared_bytes<float>(), static_shared_bytes<__half>(),
                                    static_shared_bytes<__nv_bfloat16>()});
    cache.emplace(device, limits);
    return limits;
}

// Stream-ordered device memory, freed on the same stream when the scope ends.
class StreamBuffer {
 public:
    StreamBuffer(size_t bytes, cudaStream_t stream) : stream_(stream) {
        check(cudaMallocAsync(&data_, bytes, stream), "allocating the global-memory workspace");
    }
    ~StreamBuffer() {
        if (data_ != nullptr) cudaFreeAsync(data_, stream_);
    }
    StreamBuffer(const StreamBuffer&) = delete;
    StreamBuffer& operator=(const StreamBuffer&) = delete;
    char* data() const { return static_cast<char*>(data_); }

 private:
    void* data_ = nullptr;
    cudaStream_t stream_;
};

template <typename T>
void launch(const void* scores, int64_t rows, int cols, const ColumnSets& pos, const ColumnSets& exc,
            const TripletOptions& options, float* loss, void* grad, int64_t* count, const TripletLaunch& plan,
            cudaStream_t stream) {
    const auto* s = static_cast<const T*>(scores);
    T* g = static_cast<T*>(grad);
    const float margin = static_cast<float>(options.margin), temperature = static_cast<float>(options.temperature);
    if (plan.shared) {
        if (plan.raise_limit)
            check(cudaFuncSetAttribute(mine_rows<T, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(plan.dynamic_shared)),
                  "raising the shared memory limit");
        mine_rows<T, false><<<static_cast<unsigned>(rows), kThreads, static_cast<size_t>(plan.dynamic_shared), stream>>>(
            s, 0, cols, pos, exc, margin, options.num_negatives, temperature, loss, g, count, nullptr, 0);
        check(cudaGetLastError(), "launch");
        return;
    }
    const StreamBuffer workspace(static_cast<size_t>(plan.rows_per_launch * plan.workspace_stride), stream);
    for (int64_t row0 = 0; row0 < rows; row0 += plan.rows_per_launch) {
        const int64_t n = std::min(plan.rows_per_launch, rows - row0);
        mine_rows<T, true><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
            s, row0, cols, pos, exc, margin, options.num_negatives, temperature, loss, g, count, workspace.data(),
            plan.workspace_stride);
        check(cudaGetLastError(), "launch");
    }
}

}  // namespace

int64_t triplet_cuda_max_cols(int device) {
    const DeviceLimits limits = device_limits(device);
    return triplet_shared_max_cols(limits.optin_bytes, limits.static_bytes);
}

void triplet_mine_cuda(CudaDType dtype, const void* scores, int64_t rows, int64_t cols, const ColumnSets& positives,
                       const ColumnSets& exclude, const TripletOptions& options, float* loss, void* grad,
                       int64_t* count, int device, std::uintptr_t stream) {
    if (rows < 0 || cols < 0) throw std::invalid_argument("scores: negative shape");
    if (rows > INT_MAX) throw std::invalid_argument("triplet_loss on CUDA takes at most 2^31 - 1 rows");
    if (rows == 0) return;
    DeviceScope scope(device);
    const DeviceLimits limits = device_limits(device);
    const TripletLaunch plan = plan_triplet_launch(rows, cols, limits.optin_bytes, limits.static_bytes);
    const auto s = reinterpret_cast<cudaStream_t>(stream);
    const int c = static_cast<int>(cols);
    switch (dtype) {
        case CudaDType::float32:
            launch<float>(scores, rows, c, positives, exclude, options, loss, grad, count, plan, s);
            break;
        case CudaDType::float16:
            launch<__half>(scores, rows, c, positives, exclude, options, loss, grad, count, plan, s);
            break;
        case CudaDType::bfloat16:
            launch<__nv_bfloat16>(scores, rows, c, positives, exclude, options, loss, grad, count, plan, s);
            break;
        default:
            throw std::invalid_argument("dtype: float32, float16 or bfloat16");
    }
}

}  // namespace ramen
