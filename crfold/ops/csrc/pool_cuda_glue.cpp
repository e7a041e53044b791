// ATen glue of the CUDA max-pool kernels (built only with -DWITH_CUDA, i.e. against a CUDA
// torch): device guard, current stream, dtype mapping to CUDA's half types, and the deterministic
// backward. The kernels themselves (pool_cuda.cu) see raw pointers only.
#ifdef WITH_CUDA
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "pool.h"
#include "pool_cuda.h"

namespace crfold {
namespace {

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

// The CUDA type of an ATen scalar type (same bits: c10::Half is __half, c10::BFloat16 is
// __nv_bfloat16).
template <typename T>
struct CudaType {
  using type = T;
};
template <>
struct CudaType<c10::Half> {
  using type = __half;
};
template <>
struct CudaType<c10::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename T>
auto cuda_ptr(const at::Tensor& t) {
  return reinterpret_cast<typename CudaType<T>::type*>(t.data_ptr<T>());
}

std::tuple<at::Tensor, at::Tensor> graph_max_pool_forward_cuda(const at::Tensor& features_in,
                                                               const at::Tensor& neighbours_in) {
  check_graph_pool_inputs(features_in, neighbours_in);
  const c10::cuda::CUDAGuard guard(features_in.device());
  const at::Tensor features = features_in.contiguous(), neighbours = neighbours_in.contiguous();
  const int64_t B = features.size(0), N = features.size(1), C = features.size(2);
  at::Tensor out = at::empty({B, N, C}, features.options());
  at::Tensor win = at::empty({B, N, C}, features.options().dtype(at::kInt));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "crfold_graph_max_pool_cuda", [&] {
        check_cuda(cuda::graph_max_pool_forward(cuda_ptr<scalar_t>(features),
                                                neighbours.data_ptr<int64_t>(), B, N, C,
                                                neighbours.size(2), cuda_ptr<scalar_t>(out),
                                                win.data_ptr<int32_t>(), stream),
                   "crfold graph_max_pool_forward kernel");
      });
  return {out, win};
}

at::Tensor graph_max_pool_backward_cuda(const at::Tensor& grad_in, const at::Tensor& winners_in,
                                        int64_t num_points, bool deterministic) {
  check_graph_pool_grad(grad_in, winners_in, num_points);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous(), winners = winners_in.contiguous();
  const int64_t B = grad.size(0), N = grad.size(1), C = grad.size(2);
  const at::ScalarType acc_type = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor acc = at::zeros({B, N, C}, grad.options().dtype(acc_type));
  if (acc.numel() == 0) return acc.to(grad.scalar_type());
  if (deterministic) {
    // A sorted (deterministic) accumulation instead of atomics.
    const auto opts = winners.options().dtype(at::kLong);
    const at::Tensor bidx = at::arange(B, opts).view({B, 1, 1}).expand({B, N, C});
    const at::Tensor cidx = at::arange(C, opts).view({1, 1, C}).expand({B, N, C});
    acc.index_put_({bidx, winners.to(at::kLong), cidx}, grad.to(acc_type), /*accumulate=*/true);
    return acc.to(grad.scalar_type());
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "crfold_graph_max_pool_backward_cuda", [&] {
        using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
        check_cuda(
            cuda::graph_max_pool_backward(cuda_ptr<scalar_t>(grad), winners.data_ptr<int32_t>(), B,
                                          N, C, acc.data_ptr<A>(), stream),
            "crfold graph_max_pool_backward kernel");
      });
  return acc.to(grad.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> global_max_pool_forward_cuda(const at::Tensor& features_in) {
  check_global_pool_input(features_in);
  const c10::cuda::CUDAGuard guard(features_in.device());
  const at::Tensor features = features_in.contiguous();
  const int64_t B = features.size(0), N = features.size(1), C = features.size(2);
  at::Tensor out = at::empty({B, C}, features.options());
  at::Tensor win = at::empty({B, C}, features.options().dtype(at::kInt));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "crfold_global_max_pool_cuda", [&] {
        check_cuda(
            cuda::global_max_pool_forward(cuda_ptr<scalar_t>(features), B, N, C,
                                          cuda_ptr<scalar_t>(out), win.data_ptr<int32_t>(), stream),
            "crfold global_max_pool_forward kernel");
      });
  return {out, win};
}

at::Tensor global_max_pool_backward_cuda(const at::Tensor& grad_in, const at::Tensor& winners_in,
                                         int64_t num_points) {
  check_global_pool_grad(grad_in, winners_in, num_points);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous(), winners = winners_in.contiguous();
  const int64_t B = grad.size(0), C = grad.size(1), N = num_points;
  at::Tensor out = at::zeros({B, N, C}, grad.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "crfold_global_max_pool_backward_cuda", [&] {
        check_cuda(
            cuda::global_max_pool_backward(cuda_ptr<scalar_t>(grad), winners.data_ptr<int32_t>(), B,
                                           N, C, cuda_ptr<scalar_t>(out), stream),
            "crfold global_max_pool_backward kernel");
      });
  return out;
}

}  // namespace
}  // namespace crfold

TORCH_LIBRARY_IMPL(crfold, CUDA, m) {
  m.impl("graph_max_pool_forward", &crfold::graph_max_pool_forward_cuda);
  m.impl("graph_max_pool_backward", &crfold::graph_max_pool_backward_cuda);
  m.impl("global_max_pool_forward", &crfold::global_max_pool_forward_cuda);
  m.impl("global_max_pool_backward", &crfold::global_max_pool_backward_cuda);
}
#endif  // WITH_CUDA
