// Launchers of the CUDA max-pool kernels (graph and global). Raw pointers, sizes and a stream only:
// no torch header, so pool_cuda.cu compiles with nvcc alone (CI checks it without a CUDA torch).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace crfold {
namespace cuda {

// Forward. features (B,N,C) and neighbours (B,N,k) contiguous on the device; out (B,N,C) and
// winners (B,N,C) int32 written. An out-of-range neighbour index is skipped (the public function
// rejects it in eager mode). T: float, double, __half or __nv_bfloat16.
template <typename T>
cudaError_t graph_max_pool_forward(const T* features, const int64_t* neighbours, int64_t B,
                                   int64_t N, int64_t C, int64_t k, T* out, int32_t* winners,
                                   cudaStream_t stream);

// Backward with atomics: acc[b, winners[b,i,c], c] += grad[b,i,c]; acc (B,N,C) zero-filled, in
// float for the 16-bit types and float32, double for double. Not deterministic (the glue uses a
// sorted index_put_ when deterministic algorithms are requested).
template <typename T, typename A>
cudaError_t graph_max_pool_backward(const T* grad, const int32_t* winners, int64_t B, int64_t N,
                                    int64_t C, A* acc, cudaStream_t stream);

// Global max-pool forward: features (B,N,C) -> out (B,C) and winners (B,C) int32.
template <typename T>
cudaError_t global_max_pool_forward(const T* features, int64_t B, int64_t N, int64_t C, T* out,
                                    int32_t* winners, cudaStream_t stream);

// Global max-pool backward: grad_features (B,N,C) zero-filled; writes grad[b,c] at the winner
// (one writer per element: deterministic).
template <typename T>
cudaError_t global_max_pool_backward(const T* grad, const int32_t* winners, int64_t B, int64_t N,
                                     int64_t C, T* grad_features, cudaStream_t stream);

}  // namespace cuda
}  // namespace crfold
