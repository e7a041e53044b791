// CUDA max-pools: one thread per (point, channel) for the graph max-pool and per (cloud, channel)
// for the global one, channels fastest so that the reads of a row are coalesced across a warp; the
// comparison rule comes from pool_common.h, shared with the CPU kernels.
#include <algorithm>

#include "pool_common.h"
#include "pool_cuda.h"

namespace crfold {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;  // grid-stride loops cover the rest

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ double widen(double v) { return v; }
__device__ __forceinline__ float widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__global__ void forward_kernel(const T* __restrict__ f, const int64_t* __restrict__ nb, int64_t N,
                               int64_t C, int64_t k, int64_t total, T* __restrict__ out,
                               int32_t* __restrict__ win) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / C, c = e - r * C, b = r / N;
    T best = f[e];
    auto best_v = widen(best);
    int32_t w = static_cast<int32_t>(r - b * N);
    const int64_t* nr = nb + r * k;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t p = nr[j];
      if (p < 0 || p >= N) continue;
      const T v = f[(b * N + p) * C + c];
      const auto vv = widen(v);
      if (pool_beats(vv, best_v)) {
        best = v;
        best_v = vv;
        w = static_cast<int32_t>(p);
      }
    }
    out[e] = best;
    win[e] = w;
  }
}

template <typename T, typename A>
__global__ void backward_kernel(const T* __restrict__ g, const int32_t* __restrict__ win, int64_t N,
                                int64_t C, int64_t total, A* __restrict__ acc) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / C, c = e - r * C, b = r / N;
    const int64_t w = win[e];
    if (w < 0 || w >= N) continue;  // winners come from the forward; a direct call may pass others
    atomicAdd(acc + (b * N + w) * C + c, static_cast<A>(widen(g[e])));
  }
}

template <typename T>
__global__ void global_forward_kernel(const T* __restrict__ f, int64_t N, int64_t C, int64_t total,
                                      T* __restrict__ out, int32_t* __restrict__ win) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = e / C, c = e - b * C;
    const T* col = f + b * N * C + c;
    T best = col[0];
    auto best_v = widen(best);
    int32_t w = 0;
    for (int64_t n = 1; n < N; ++n) {
      const T v = col[n * C];
      const auto vv = widen(v);
      if (pool_beats(vv, best_v)) {
        best = v;
        best_v = vv;
        w = static_cast<int32_t>(n);
      }
    }
    out[e] = best;
    win[e] = w;
  }
}

template <typename T>
__global__ void global_backward_kernel(const T* __restrict__ g, const int32_t* __restrict__ win,
                                       int64_t N, int64_t C, int64_t total, T* __restrict__ gf) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = e / C, c = e - b * C;
    const int64_t w = win[e];
    if (w < 0 || w >= N) continue;  // as in backward_kernel
    gf[(b * N + w) * C + c] = g[e];
  }
}

int blocks_for(int64_t total) {
  return static_cast<int>(
      std::max<int64_t>(1, std::min(kMaxBlocks, (total + kThreads - 1) / kThreads)));
}

}  // namespace

template <typename T>
cudaError_t graph_max_pool_forward(const T* features, const int64_t* neighbours, int64_t B,
                                   int64_t N, int64_t C, int64_t k, T* out, int32_t* winners,
                                   cudaStream_t stream) {
  const int64_t total = B * N * C;
  if (total == 0) return cudaSuccess;
  forward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(features, neighbours, N, C, k,
                                                                total, out, winners);
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t graph_max_pool_backward(const T* grad, const int32_t* winners, int64_t B, int64_t N,
                                    int64_t C, A* acc, cudaStream_t stream) {
  const int64_t total = B * N * C;
  if (total == 0) return cudaSuccess;
  backward_kernel<T, A>
      <<<blocks_for(total), kThreads, 0, stream>>>(grad, winners, N, C, total, acc);
  return cudaGetLastError();
}

template <typename T>
cudaError_t global_max_pool_forward(const T* features, int64_t B, int64_t N, int64_t C, T* out,
                                    int32_t* winners, cudaStream_t stream) {
  const int64_t total = B * C;
  if (total == 0 || N == 0) return cudaSuccess;
  global_forward_kernel<T>
      <<<blocks_for(total), kThreads, 0, stream>>>(features, N, C, total, out, winners);
  return cudaGetLastError();
}

template <typename T>
cudaError_t global_max_pool_backward(const T* grad, const int32_t* winners, int64_t B, int64_t N,
                                     int64_t C, T* grad_features, cudaStream_t stream) {
  const int64_t total = B * C;
  if (total == 0) return cudaSuccess;
  global_backward_kernel<T>
      <<<blocks_for(total), kThreads, 0, stream>>>(grad, winners, N, C, total, grad_features);
  return cudaGetLastError();
}

#define CRFOLD_INSTANTIATE(T, A)                                                                 \
  template cudaError_t graph_max_pool_forward<T>(const T*, const int64_t*, int64_t, int64_t,     \
                                                 int64_t, int64_t, T*, int32_t*, cudaStream_t);  \
  template cudaError_t graph_max_pool_backward<T, A>(const T*, const int32_t*, int64_t, int64_t, \
                                                     int64_t, A*, cudaStream_t);                 \
  template cudaError_t global_max_pool_forward<T>(const T*, int64_t, int64_t, int64_t, T*,       \
                                                  int32_t*, cudaStream_t);                       \
  template cudaError_t global_max_pool_backward<T>(const T*, const int32_t*, int64_t, int64_t,   \
                                                   int64_t, T*, cudaStream_t);
CRFOLD_INSTANTIATE(float, float)
CRFOLD_INSTANTIATE(double, double)
CRFOLD_INSTANTIATE(__half, float)
CRFOLD_INSTANTIATE(__nv_bfloat16, float)
#undef CRFOLD_INSTANTIATE

}  // namespace cuda
}  // namespace crfold
