// Launch arithmetic of the CUDA triplet kernel (see triplet_launch.h).
#include "triplet_launch.h"

#include <algorithm>
#include <climits>
#include <stdexcept>

namespace ramen {

int64_t triplet_shared_max_cols(int64_t optin_bytes, int64_t static_bytes) {
    return std::max<int64_t>(0, optin_bytes - static_bytes) / kTripletBytesPerColumn;
}

TripletLaunch plan_triplet_launch(int64_t rows, int64_t cols, int64_t optin_bytes, int64_t static_bytes,
                                  int64_t workspace_budget) {
    if (rows < 0 || cols < 0 || optin_bytes < 0 || static_bytes < 0 || workspace_budget <= 0)
        throw std::invalid_argument("plan_triplet_launch: sizes must be >= 0 (budget > 0)");
    if (cols > INT_MAX) throw std::invalid_argument("triplet_loss on CUDA takes fewer than 2^31 candidate columns");
    TripletLaunch plan;
    if (cols <= triplet_shared_max_cols(optin_bytes, static_bytes)) {
        plan.dynamic_shared = cols * kTripletBytesPerColumn;
        plan.raise_limit = plan.dynamic_shared + static_bytes > kCudaDefaultSharedBytes;
        plan.rows_per_launch = rows;
        return plan;
    }
    plan.shared = false;
    plan.workspace_stride = (cols * kTripletBytesPerColumn + 15) / 16 * 16;
    plan.rows_per_launch = std::min(rows, std::max<int64_t>(1, workspace_budget / plan.workspace_stride));
    return plan;
}

}  // namespace ramen
