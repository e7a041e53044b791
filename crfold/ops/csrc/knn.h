// The kNN primitive's entry points. bindings.cpp registers the schema and the CPU kernels with
// TORCH_LIBRARY; knn_cuda_glue.cpp (built only with -DWITH_CUDA) registers the CUDA kernels.
#pragma once

// Light ATen headers only (not torch/extension.h): the JIT build stays well under a minute.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include <tuple>

namespace crfold {

// Brute force / kd-tree forward on CPU. p1 (B,P1,D), p2 (B,P2,D) contiguous float/double;
// lengths (B,) int64; norm 2 (squared L2) or 1 (L1). Returns dists (B,P1,K) and idx (B,P1,K)
// int64 (padding: 0 and -1).
std::tuple<at::Tensor, at::Tensor> knn_forward_cpu(const at::Tensor& p1, const at::Tensor& p2,
                                                   const at::Tensor& lengths1,
                                                   const at::Tensor& lengths2, int64_t K,
                                                   int64_t norm);

// Gradients of sum(grad_dists * dists) with respect to p1 and p2 (for the forward's norm; the L1
// subgradient takes sign(0) = 0); deterministic on CPU.
std::tuple<at::Tensor, at::Tensor> knn_backward_cpu(const at::Tensor& grad_dists,
                                                    const at::Tensor& p1, const at::Tensor& p2,
                                                    const at::Tensor& lengths1,
                                                    const at::Tensor& lengths2,
                                                    const at::Tensor& idx, bool deterministic,
                                                    int64_t norm);

// kd-tree forward for large target clouds (kdtree_cpu.cpp); same contract as knn_forward_cpu.
void knn_forward_kdtree_cpu(const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& lengths1,
                            const at::Tensor& lengths2, int64_t K, int64_t norm, at::Tensor& dists,
                            at::Tensor& idx);

// Shared argument checks of the forward (TORCH_CHECK_VALUE: a Python ValueError).
void check_knn_inputs(const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& lengths1,
                      const at::Tensor& lengths2, int64_t K, int64_t norm);

}  // namespace crfold
