// Launchers of the CUDA kNN kernels. Raw pointers, sizes and a stream only: no torch header, so
// knn_cuda.cu compiles with nvcc alone (CI checks it on machines without a CUDA torch).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace crfold {
namespace cuda {

constexpr int kMaxD = 16;   // largest D the CUDA kernels take
constexpr int kMaxK = 128;  // largest K the CUDA kernels take

// How the forward splits the target cloud across blocks (when B * query blocks is too small to
// fill the GPU) and how much workspace the split needs: splits * B * P1 * K of each of a
// distance and an index (none when splits == 1).
struct KnnPlan {
  int splits;
  int64_t split_len;
  int64_t workspace;
};

KnnPlan knn_forward_plan(int64_t B, int64_t P1, int64_t P2, int K, int num_sms);

// Forward. p1 (B,P1,D), p2 (B,P2,D) contiguous; lengths (B,) int64 on the device; norm 2
// (squared L2) or 1 (L1); out_d/out_i (B,P1,K) pre-filled with 0 and -1 (padded queries are not
// written). ws_d/ws_i: plan.workspace elements each (may be null when plan.splits == 1).
template <typename T>
cudaError_t knn_forward(const T* p1, const T* p2, const int64_t* lengths1, const int64_t* lengths2,
                        int64_t B, int64_t P1, int64_t P2, int D, int K, int norm,
                        const KnnPlan& plan, T* ws_d, int64_t* ws_i, T* out_d, int64_t* out_i,
                        cudaStream_t stream);

// Backward. grad/idx (B,P1,K); norm as in the forward (L1: sign(0) = 0); g1 (B,P1,D) and g2
// (B,P2,D) zero-filled. g1 is deterministic (one thread per query, sum over k in order); g2 is
// accumulated with atomics only when accumulate_p2 is true (the deterministic mode computes it
// outside with a sorted reduction).
template <typename T>
cudaError_t knn_backward(const T* grad, const T* p1, const T* p2, const int64_t* idx,
                         const int64_t* lengths1, int64_t B, int64_t P1, int64_t P2, int D, int K,
                         int norm, bool accumulate_p2, T* g1, T* g2, cudaStream_t stream);

}  // namespace cuda
}  // namespace crfold
