// Per-pair arithmetic and top-K insertion shared by the CPU and the CUDA kernels.
//
// Every kernel (CPU brute force, CPU kd-tree, CUDA tiles, CUDA split merge) computes a squared
// distance with sq_dist_accumulate() summed over coordinates in order 0..D-1 and keeps its
// candidates with topk_insert(), so all of them return bitwise-identical distances (on a CPU with
// FMA, where the CPU and CUDA paths both use a fused multiply-add) and the same indices: ties are
// broken by the lowest target index through precedes(), whatever order the candidates arrive in.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define CRFOLD_HD __host__ __device__ __forceinline__
#else
#define CRFOLD_HD inline
#endif

#if !defined(__CUDACC__)
#include <cmath>
#endif

namespace crfold {

#if defined(__CUDA_ARCH__)
// Round-to-nearest arithmetic that nvcc never contracts into an FMA.
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
#endif

// acc + (a - b)^2, the one per-coordinate step of every distance: a rounded product, then a
// rounded sum, never a fused multiply-add (the CPU build passes -ffp-contract=off, the CUDA code
// uses the _rn intrinsics), so every kernel on every machine rounds the same way.
template <typename T>
CRFOLD_HD T sq_dist_accumulate(T acc, T a, T b) {
#if defined(__CUDA_ARCH__)
  const T d = sub_rn(a, b);
  return add_rn(acc, mul_rn(d, d));
#else
  const T d = a - b;
  return acc + d * d;
#endif
}

// Squared L2 distance between two points stored with strides (in elements) sa and sb.
template <typename T>
CRFOLD_HD T sq_dist(const T* a, int64_t sa, const T* b, int64_t sb, int D) {
  T acc = T(0);
  for (int d = 0; d < D; ++d) acc = sq_dist_accumulate(acc, a[d * sa], b[d * sb]);
  return acc;
}

// Candidate (da, ia) comes before (db, ib): a smaller distance, or an equal one at a lower index.
template <typename T>
CRFOLD_HD bool precedes(T da, int64_t ia, T db, int64_t ib) {
  return da < db || (da == db && ia < ib);
}

// Inserts candidate (d, j) into the ascending list dists/idx holding `count` <= K entries.
// Returns the new count. Candidates may arrive in any order; the list stays sorted by precedes().
template <typename T>
CRFOLD_HD int topk_insert(T* dists, int64_t* idx, int count, int K, T d, int64_t j) {
  if (count == K && !precedes(d, j, dists[K - 1], idx[K - 1])) return count;
  int pos = count < K ? count : K - 1;
  while (pos > 0 && precedes(d, j, dists[pos - 1], idx[pos - 1])) {
    dists[pos] = dists[pos - 1];
    idx[pos] = idx[pos - 1];
    --pos;
  }
  dists[pos] = d;
  idx[pos] = j;
  return count < K ? count + 1 : K;
}

// d/dp of g * ||p - q||^2 along one coordinate (the gradient of q is its negative).
template <typename T>
CRFOLD_HD T pair_grad(T g, T p, T q) {
  return T(2) * g * (p - q);
}

}  // namespace crfold
