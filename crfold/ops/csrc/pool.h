// The graph max-pool's entry points (FoldingNet's encoder). bindings.cpp registers the schema and
// the CPU kernels; pool_cuda_glue.cpp (built only with -DWITH_CUDA) the CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace crfold {

// features (B, N, C) float16/bfloat16/float32/float64; neighbours (B, N, k) int64 in [0, N).
// Returns out (B, N, C) in the dtype of features, out[b,i,c] = max(features[b, i, c],
// features[b, neighbours[b, i, j], c] for j < k), and winners (B, N, C) int32: the point whose
// value was taken (the first maximal candidate, the point itself first).
std::tuple<at::Tensor, at::Tensor> graph_max_pool_forward_cpu(const at::Tensor& features,
                                                              const at::Tensor& neighbours);

// Gradient of the features: grad_features[b, winners[b,i,c], c] += grad_out[b, i, c], summed in
// float32 (float64 for float64) in ascending i, so deterministic for any number of threads.
at::Tensor graph_max_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& winners,
                                       int64_t num_points, bool deterministic);

// features (B, N, C), N >= 1. Returns values (B, C), values[b, c] = max_n features[b, n, c], and
// winners (B, C) int32: the first maximal point.
std::tuple<at::Tensor, at::Tensor> global_max_pool_forward_cpu(const at::Tensor& features);

// Gradient of the features (B, N, num_points = N, C): grad_out[b, c] at the winner, 0 elsewhere.
at::Tensor global_max_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& winners,
                                        int64_t num_points);

// Shared argument checks (TORCH_CHECK_VALUE: a Python ValueError); the index range is checked by
// each kernel's caller.
void check_graph_pool_inputs(const at::Tensor& features, const at::Tensor& neighbours);
void check_graph_pool_grad(const at::Tensor& grad_out, const at::Tensor& winners,
                           int64_t num_points);
void check_global_pool_input(const at::Tensor& features);
void check_global_pool_grad(const at::Tensor& grad_out, const at::Tensor& winners,
                            int64_t num_points);

}  // namespace crfold
