// Launch arithmetic of the CUDA triplet kernel (cuda/triplet.cu): plain host code, compiled into
// every build so that the CPU tests check the sizes a GPU launch will use.
//
// One block scores one row and keeps a working set of 13 bytes a column (score f32, grad
// accumulator f32, list slot i32, status u8). Where the working set and the kernel's static
// shared memory fit in a block's opt-in shared memory, the working set lives there (above the
// 48 KiB default the limit is raised first); wider rows keep it in a global-memory workspace,
// launched in chunks of rows so that the workspace stays within a budget.
#pragma once

#include <cstdint>

namespace ramen {

constexpr int64_t kTripletBytesPerColumn = 13;
constexpr int64_t kCudaDefaultSharedBytes = 48 * 1024;  // what a block gets without opting in
constexpr int64_t kTripletWorkspaceBudget = int64_t{256} << 20;  // global path: bytes per launch

struct TripletLaunch {
    bool shared = true;            // the working set in shared memory; else in a global workspace
    int64_t dynamic_shared = 0;    // dynamic shared bytes per block (shared path)
    bool raise_limit = false;      // static + dynamic shared memory above the 48 KiB default
    int64_t workspace_stride = 0;  // global path: workspace bytes per row (a multiple of 16)
    int64_t rows_per_launch = 0;   // rows per launch (all of them on the shared path)
};

// The widest row whose working set fits in shared memory beside `static_bytes` of the kernel's own.
int64_t triplet_shared_max_cols(int64_t optin_bytes, int64_t static_bytes);

// How to launch the kernel on rows x cols scores on a device with `optin_bytes` of opt-in shared
// memory per block, for a kernel with `static_bytes` of static shared memory. Throws
// std::invalid_argument on negative sizes or cols >= 2^31.
TripletLaunch plan_triplet_launch(int64_t rows, int64_t cols, int64_t optin_bytes, int64_t static_bytes,
                                  int64_t workspace_budget = kTripletWorkspaceBudget);

}  // namespace ramen
