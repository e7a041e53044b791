// CUDA kNN kernels: the target cloud is streamed through shared-memory tiles, each thread keeps
// several queries in registers, and when B * query blocks cannot fill the GPU the target is split
// across blocks (partial top-K lists merged by a second kernel). Offsets are int64. The distance
// arithmetic (squared L2 or L1, a template argument) and the top-K insertion come from
// knn_common.h, shared with the CPU kernel.
#include <algorithm>

#include "knn_common.h"
#include "knn_cuda.h"

namespace crfold {
namespace cuda {
namespace {

constexpr int kThreads = 128;  // threads per block
constexpr int kTile = 256;     // targets per shared-memory tile

template <int MAXK>
constexpr int queries_per_thread() {
  return MAXK == 1 ? 4 : (MAXK <= 16 ? 2 : 1);
}

int64_t divup(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T, int MAXD, int MAXK, int QPT, int NORM>
__global__ void __launch_bounds__(kThreads)
    knn_forward_kernel(const T* __restrict__ p1, const T* __restrict__ p2,
                       const int64_t* __restrict__ lengths1, const int64_t* __restrict__ lengths2,
                       int64_t P1, int64_t P2, int D, int K, int64_t split_len, int splits,
                       T* __restrict__ out_d, int64_t* __restrict__ out_i) {
  __shared__ T tile[MAXD][kTile];
  const int64_t b = blockIdx.z;
  const int64_t s = blockIdx.y;
  const int64_t n1 = lengths1[b];
  const int64_t n2 = lengths2[b];
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kThreads * QPT;
  if (q0 >= n1) return;  // uniform over the block: no thread of it reaches a barrier
  const int64_t j_begin = s * split_len;
  const int64_t j_end = n2 < j_begin + split_len ? n2 : j_begin + split_len;

  T q[QPT][MAXD];
  T bd[QPT][MAXK];
  int64_t bi[QPT][MAXK];
  int cnt[QPT];
#pragma unroll
  for (int r = 0; r < QPT; ++r) {
    const int64_t i = q0 + threadIdx.x + r * kThreads;
#pragma unroll
    for (int d = 0; d < MAXD; ++d) q[r][d] = (i < n1 && d < D) ? p1[(b * P1 + i) * D + d] : T(0);
    cnt[r] = 0;
  }

  for (int64_t t0 = j_begin; t0 < j_end; t0 += kTile) {
    const int tn = static_cast<int>(j_end - t0 < kTile ? j_end - t0 : kTile);
    __syncthreads();  // the previous tile has been read by every thread
    for (int x = threadIdx.x; x < tn * MAXD; x += kThreads) {
      const int jj = x / MAXD, d = x % MAXD;
      tile[d][jj] = d < D ? p2[(b * P2 + t0 + jj) * D + d] : T(0);
    }
    __syncthreads();
    for (int jj = 0; jj < tn; ++jj) {
      const int64_t j = t0 + jj;  // ascending: a strict comparison keeps the lowest index
#pragma unroll
      for (int r = 0; r < QPT; ++r) {
        T dist = T(0);
#pragma unroll
        for (int d = 0; d < MAXD; ++d) dist = dist_accumulate<NORM>(dist, q[r][d], tile[d][jj]);
        if (MAXK == 1) {
          if (cnt[r] == 0 || dist < bd[r][0]) {
            bd[r][0] = dist;
            bi[r][0] = j;
            cnt[r] = 1;
          }
        } else if (cnt[r] < K || dist < bd[r][K - 1]) {
          cnt[r] = topk_insert(bd[r], bi[r], cnt[r], K, dist, j);
        }
      }
    }
  }

  // splits == 1: the final (B, P1, K) output; otherwise the (B, splits, P1, K) workspace.
#pragma unroll
  for (int r = 0; r < QPT; ++r) {
    const int64_t i = q0 + threadIdx.x + r * kThreads;
    if (i >= n1) continue;
    const int64_t row = splits == 1 ? (b * P1 + i) : ((b * splits + s) * P1 + i);
    for (int k = 0; k < K; ++k) {
      const bool has = k < cnt[r];
      out_d[row * K + k] = has ? bd[r][k] : T(0);
      out_i[row * K + k] = has ? bi[r][k] : int64_t(-1);
    }
  }
}

// Merges the splits' sorted partial lists of every query into its K nearest (lowest-index ties).
template <typename T, int MAXK>
__global__ void knn_merge_kernel(const T* __restrict__ ws_d, const int64_t* __restrict__ ws_i,
                                 const int64_t* __restrict__ lengths1, int64_t B, int64_t P1, int K,
                                 int splits, T* __restrict__ out_d, int64_t* __restrict__ out_i) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= B * P1) return;
  const int64_t b = w / P1, i = w % P1;
  if (i >= lengths1[b]) return;
  T bd[MAXK];
  int64_t bi[MAXK];
  int cnt = 0;
  for (int s = 0; s < splits; ++s) {
    const int64_t row = (b * splits + s) * P1 + i;
    for (int k = 0; k < K; ++k) {
      const int64_t j = ws_i[row * K + k];
      if (j < 0) break;  // the rest of this split's list is padding
      cnt = topk_insert(bd, bi, cnt, K, ws_d[row * K + k], j);
    }
  }
  for (int k = 0; k < K; ++k) {
    out_d[w * K + k] = k < cnt ? bd[k] : T(0);
    out_i[w * K + k] = k < cnt ? bi[k] : int64_t(-1);
  }
}

template <typename T>
__global__ void knn_backward_kernel(const T* __restrict__ grad, const T* __restrict__ p1,
                                    const T* __restrict__ p2, const int64_t* __restrict__ idx,
                                    const int64_t* __restrict__ lengths1, int64_t B, int64_t P1,
                                    int64_t P2, int D, int K, int norm, bool accumulate_p2,
                                    T* __restrict__ g1, T* __restrict__ g2) {
  const int64_t w = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (w >= B * P1) return;
  const int64_t b = w / P1;
  if (w % P1 >= lengths1[b]) return;
  for (int k = 0; k < K; ++k) {
    const int64_t j = idx[w * K + k];
    if (j < 0) continue;
    const T g = grad[w * K + k];
    for (int d = 0; d < D; ++d) {
      const T c = pair_grad(g, p1[w * D + d], p2[(b * P2 + j) * D + d], norm);
      g1[w * D + d] += c;
      if (accumulate_p2) atomicAdd(&g2[(b * P2 + j) * D + d], -c);
    }
  }
}

template <typename T, int MAXD, int MAXK, int NORM>
cudaError_t launch_forward(const T* p1, const T* p2, const int64_t* l1, const int64_t* l2,
                           int64_t B, int64_t P1, int64_t P2, int D, int K, const KnnPlan& plan,
                           T* ws_d, int64_t* ws_i, T* out_d, int64_t* out_i, cudaStream_t stream) {
  constexpr int QPT = queries_per_thread<MAXK>();
  const dim3 grid(static_cast<unsigned>(divup(P1, int64_t(kThreads) * QPT)),
                  static_cast<unsigned>(plan.splits), static_cast<unsigned>(B));
  const bool split = plan.splits > 1;
  knn_forward_kernel<T, MAXD, MAXK, QPT, NORM>
      <<<grid, kThreads, 0, stream>>>(p1, p2, l1, l2, P1, P2, D, K, plan.split_len, plan.splits,
                                      split ? ws_d : out_d, split ? ws_i : out_i);
  if (split) {
    const unsigned blocks = static_cast<unsigned>(divup(B * P1, 128));
    knn_merge_kernel<T, MAXK>
        <<<blocks, 128, 0, stream>>>(ws_d, ws_i, l1, B, P1, K, plan.splits, out_d, out_i);
  }
  return cudaGetLastError();
}

template <typename T, int MAXD, int NORM>
cudaError_t dispatch_k(const T* p1, const T* p2, const int64_t* l1, const int64_t* l2, int64_t B,
                       int64_t P1, int64_t P2, int D, int K, const KnnPlan& plan, T* ws_d,
                       int64_t* ws_i, T* out_d, int64_t* out_i, cudaStream_t stream) {
#define CRFOLD_K(MK)                                                                            \
  if (K <= MK)                                                                                  \
    return launch_forward<T, MAXD, MK, NORM>(p1, p2, l1, l2, B, P1, P2, D, K, plan, ws_d, ws_i, \
                                             out_d, out_i, stream);
  CRFOLD_K(1)
  CRFOLD_K(4)
  CRFOLD_K(16)
  CRFOLD_K(32)
  CRFOLD_K(64)
  CRFOLD_K(128)
#undef CRFOLD_K
  return cudaErrorInvalidValue;
}

template <typename T, int NORM>
cudaError_t dispatch_d(const T* p1, const T* p2, const int64_t* l1, const int64_t* l2, int64_t B,
                       int64_t P1, int64_t P2, int D, int K, const KnnPlan& plan, T* ws_d,
                       int64_t* ws_i, T* out_d, int64_t* out_i, cudaStream_t stream) {
  if (D <= 3) {
    return dispatch_k<T, 3, NORM>(p1, p2, l1, l2, B, P1, P2, D, K, plan, ws_d, ws_i, out_d, out_i,
                                  stream);
  }
  if (D <= 8) {
    return dispatch_k<T, 8, NORM>(p1, p2, l1, l2, B, P1, P2, D, K, plan, ws_d, ws_i, out_d, out_i,
                                  stream);
  }
  if (D <= kMaxD) {
    return dispatch_k<T, kMaxD, NORM>(p1, p2, l1, l2, B, P1, P2, D, K, plan, ws_d, ws_i, out_d,
                                      out_i, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

KnnPlan knn_forward_plan(int64_t B, int64_t P1, int64_t P2, int K, int num_sms) {
  const int qpt = K == 1 ? queries_per_thread<1>() : (K <= 16 ? queries_per_thread<16>() : 1);
  const int64_t blocks = std::max<int64_t>(1, divup(P1, int64_t(kThreads) * qpt) * B);
  const int64_t want = 4 * static_cast<int64_t>(std::max(num_sms, 1));
  int64_t splits = 1;
  if (blocks < want && P2 > kTile) {
    splits = std::min<int64_t>({divup(want, blocks), divup(P2, kTile), 64});
  }
  const int64_t split_len = divup(divup(std::max<int64_t>(P2, 1), splits), kTile) * kTile;
  splits = divup(std::max<int64_t>(P2, 1), split_len);
  const int64_t workspace = splits > 1 ? splits * B * P1 * K : 0;
  return {static_cast<int>(splits), split_len, workspace};
}

template <typename T>
cudaError_t knn_forward(const T* p1, const T* p2, const int64_t* l1, const int64_t* l2, int64_t B,
                        int64_t P1, int64_t P2, int D, int K, int norm, const KnnPlan& plan,
                        T* ws_d, int64_t* ws_i, T* out_d, int64_t* out_i, cudaStream_t stream) {
  if (B == 0 || P1 == 0 || P2 == 0) return cudaSuccess;
  if (norm == kNormL1) {
    return dispatch_d<T, kNormL1>(p1, p2, l1, l2, B, P1, P2, D, K, plan, ws_d, ws_i, out_d, out_i,
                                  stream);
  }
  if (norm == kNormL2) {
    return dispatch_d<T, kNormL2>(p1, p2, l1, l2, B, P1, P2, D, K, plan, ws_d, ws_i, out_d, out_i,
                                  stream);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t knn_backward(const T* grad, const T* p1, const T* p2, const int64_t* idx,
                         const int64_t* l1, int64_t B, int64_t P1, int64_t P2, int D, int K,
                         int norm, bool accumulate_p2, T* g1, T* g2, cudaStream_t stream) {
  if (B * P1 == 0) return cudaSuccess;
  if (norm != kNormL1 && norm != kNormL2) return cudaErrorInvalidValue;
  const unsigned blocks = static_cast<unsigned>(divup(B * P1, 256));
  knn_backward_kernel<T><<<blocks, 256, 0, stream>>>(grad, p1, p2, idx, l1, B, P1, P2, D, K, norm,
                                                     accumulate_p2, g1, g2);
  return cudaGetLastError();
}

#define CRFOLD_INSTANTIATE(T)                                                                      \
  template cudaError_t knn_forward<T>(const T*, const T*, const int64_t*, const int64_t*, int64_t, \
                                      int64_t, int64_t, int, int, int, const KnnPlan&, T*,         \
                                      int64_t*, T*, int64_t*, cudaStream_t);                       \
  template cudaError_t knn_backward<T>(const T*, const T*, const T*, const int64_t*,               \
                                       const int64_t*, int64_t, int64_t, int64_t, int, int, int,   \
                                       bool, T*, T*, cudaStream_t);
CRFOLD_INSTANTIATE(float)
CRFOLD_INSTANTIATE(double)
#undef CRFOLD_INSTANTIATE

}  // namespace cuda
}  // namespace crfold
