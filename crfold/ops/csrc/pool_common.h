// The graph max-pool's comparison rule, shared by the CPU and the CUDA kernels.
//
// For every point i and channel c the pool scans the candidates in a fixed order, the point
// itself first and then its neighbours in the order of the neighbour list, and keeps the first
// maximal one: a later candidate wins only if it is strictly greater. NaN counts as greater than
// every number (as torch.argmax / torch.max do), so the first NaN wins and is propagated.
#pragma once

#ifdef __CUDACC__
#define CRFOLD_POOL_HD __host__ __device__ __forceinline__
#else
#define CRFOLD_POOL_HD inline
#endif

namespace crfold {

// Whether candidate value v replaces the current maximum best (both already widened to float or
// double). Written with non-short-circuit operators so that the CPU loop vectorizes.
template <typename A>
CRFOLD_POOL_HD bool pool_beats(A v, A best) {
  return (v > best) | ((v != v) & (best == best));
}

}  // namespace crfold
