// ATen glue of the CUDA kernels (built only with -DWITH_CUDA, i.e. against a CUDA torch):
// device guard, current stream, workspace from the caching allocator, tensor checks. The kernels
// themselves (knn_cuda.cu) see raw pointers only.
#ifdef WITH_CUDA
#include <ATen/ATen.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_put.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "knn.h"
#include "knn_common.h"
#include "knn_cuda.h"

namespace crfold {
namespace {

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> knn_forward_cuda(const at::Tensor& p1_in,
                                                    const at::Tensor& p2_in,
                                                    const at::Tensor& lengths1,
                                                    const at::Tensor& lengths2, int64_t K,
                                                    int64_t norm) {
  check_knn_inputs(p1_in, p2_in, lengths1, lengths2, K, norm);
  TORCH_CHECK_VALUE(p1_in.size(2) <= cuda::kMaxD, "D must be <= ", cuda::kMaxD, " on CUDA");
  TORCH_CHECK_VALUE(K <= cuda::kMaxK, "K must be <= ", cuda::kMaxK, " on CUDA");
  TORCH_CHECK_VALUE(p1_in.size(0) <= 65535, "B must be <= 65535 on CUDA (grid z limit)");
  TORCH_CHECK_VALUE(lengths1.device() == p1_in.device() && lengths2.device() == p1_in.device(),
                    "lengths1 and lengths2 must be on the device of p1");
  const c10::cuda::CUDAGuard guard(p1_in.device());
  const at::Tensor p1 = p1_in.contiguous(), p2 = p2_in.contiguous();
  const at::Tensor l1 = lengths1.contiguous(), l2 = lengths2.contiguous();
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1);
  const int D = static_cast<int>(p1.size(2));
  at::Tensor dists = at::zeros({B, P1, K}, p1.options());
  at::Tensor idx = at::full({B, P1, K}, -1, p1.options().dtype(at::kLong));
  // Not at::cuda::getCurrentDeviceProperties(): its header (ATen/cuda/CUDAContext.h) includes
  // the cuBLAS/cuSPARSE/cuSOLVER headers, which a pip-installed CUDA toolkit may not have.
  int sms = 0;
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, p1.get_device()),
             "cudaDeviceGetAttribute");
  const cuda::KnnPlan plan = cuda::knn_forward_plan(B, P1, P2, static_cast<int>(K), sms);
  at::Tensor ws_d, ws_i;
  if (plan.workspace > 0) {
    ws_d = at::empty({plan.workspace}, p1.options());
    ws_i = at::empty({plan.workspace}, p1.options().dtype(at::kLong));
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(p1.scalar_type(), "crfold_knn_forward_cuda", [&] {
    check_cuda(
        cuda::knn_forward<scalar_t>(p1.data_ptr<scalar_t>(), p2.data_ptr<scalar_t>(),
                                    l1.data_ptr<int64_t>(), l2.data_ptr<int64_t>(), B, P1, P2, D,
                                    static_cast<int>(K), static_cast<int>(norm), plan,
                                    plan.workspace ? ws_d.data_ptr<scalar_t>() : nullptr,
                                    plan.workspace ? ws_i.data_ptr<int64_t>() : nullptr,
                                    dists.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), stream),
        "crfold knn_forward kernel");
  });
  return {dists, idx};
}

std::tuple<at::Tensor, at::Tensor> knn_backward_cuda(
    const at::Tensor& grad_dists, const at::Tensor& p1_in, const at::Tensor& p2_in,
    const at::Tensor& lengths1, const at::Tensor& lengths2, const at::Tensor& idx_in,
    bool deterministic, int64_t norm) {
  (void)lengths2;
  TORCH_CHECK_VALUE(norm == kNormL1 || norm == kNormL2, "norm must be 1 or 2, got ", norm);
  const c10::cuda::CUDAGuard guard(p1_in.device());
  const at::Tensor p1 = p1_in.contiguous(), p2 = p2_in.contiguous();
  const at::Tensor idx = idx_in.contiguous(), l1 = lengths1.contiguous();
  const at::Tensor grad = grad_dists.to(p1.scalar_type()).contiguous();
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1);
  const int D = static_cast<int>(p1.size(2));
  const int K = static_cast<int>(idx.size(2));
  at::Tensor g1 = at::zeros_like(p1), g2 = at::zeros_like(p2);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(p1.scalar_type(), "crfold_knn_backward_cuda", [&] {
    check_cuda(cuda::knn_backward<scalar_t>(
                   grad.data_ptr<scalar_t>(), p1.data_ptr<scalar_t>(), p2.data_ptr<scalar_t>(),
                   idx.data_ptr<int64_t>(), l1.data_ptr<int64_t>(), B, P1, P2, D, K,
                   static_cast<int>(norm), !deterministic, g1.data_ptr<scalar_t>(),
                   g2.data_ptr<scalar_t>(), stream),
               "crfold knn_backward kernel");
  });
  if (deterministic && B * P1 * K > 0) {
    // The gradient of p2 through a sorted (deterministic) index_put_ instead of atomics:
    // contribution of pair (i, k) to target j = idx is -2 g (p1_i - p2_j) for L2 and
    // -g sign(p1_i - p2_j) for L1 (sign(0) = 0, as pair_grad()).
    const at::Tensor valid = idx.ge(0);
    const at::Tensor j = idx.clamp_min(0);
    const at::Tensor bidx = at::arange(B, idx.options()).view({B, 1, 1}).expand_as(idx);
    const at::Tensor nn = p2.index({bidx, j});  // (B, P1, K, D)
    // where, not a product: padding may hold NaN, and 0 * NaN is NaN.
    const at::Tensor diff = p1.unsqueeze(2) - nn;
    const at::Tensor pair =
        norm == kNormL1 ? grad.unsqueeze(-1) * at::sign(diff) : grad.unsqueeze(-1) * 2 * diff;
    const at::Tensor c = at::where(valid.unsqueeze(-1), pair, at::zeros({}, p1.options()));
    g2.index_put_({bidx, j}, -c, /*accumulate=*/true);
  }
  return {g1, g2};
}

}  // namespace
}  // namespace crfold

TORCH_LIBRARY_IMPL(crfold, CUDA, m) {
  m.impl("knn_forward", &crfold::knn_forward_cuda);
  m.impl("knn_backward", &crfold::knn_backward_cuda);
}
#endif  // WITH_CUDA
