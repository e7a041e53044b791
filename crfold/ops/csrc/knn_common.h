// Per-pair arithmetic and top-K insertion shared by the CPU and the CUDA kernels.
//
// Every kernel (CPU brute force, CPU kd-tree, CUDA tiles, CUDA split merge) computes a distance
// with dist_accumulate<NORM>() summed over coordinates in order 0..D-1 and keeps its candidates
// with topk_insert(), so all of them return bitwise-identical distances (no kernel fuses a
// multiply-add) and the same indices: ties are broken by the lowest target index through
// precedes(), whatever order the candidates arrive in.
//
// Two distances (the `norm` of the op): kNormL2, the squared Euclidean distance sum (a - b)^2
// (the default), and kNormL1, the L1 distance sum |a - b|. NORM is a template argument of the
// distance loops (no branch per pair) and a run-time argument of the backward.
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

// |x|, written as a compare and a negation (the same in the scalar code, the CPU vector code and
// on the GPU; -0 is kept, which adds as +0 to an accumulator that starts at +0).
template <typename T>
CRFOLD_HD T abs_value(T x) {
  return x < T(0) ? -x : x;
}

// acc + |a - b|, the per-coordinate step of the L1 distance: a rounded difference, then a rounded
// sum.
template <typename T>
CRFOLD_HD T abs_dist_accumulate(T acc, T a, T b) {
#if defined(__CUDA_ARCH__)
  return add_rn(acc, abs_value(sub_rn(a, b)));
#else
  return acc + abs_value(a - b);
#endif
}

constexpr int kNormL1 = 1;  // sum |a - b|
constexpr int kNormL2 = 2;  // sum (a - b)^2, the squared Euclidean distance

// One coordinate step of the distance selected by NORM (kNormL1 or kNormL2).
template <int NORM, typename T>
CRFOLD_HD T dist_accumulate(T acc, T a, T b) {
  if constexpr (NORM == kNormL1) {
    return abs_dist_accumulate(acc, a, b);
  } else {
    return sq_dist_accumulate(acc, a, b);
  }
}

// Distance (squared L2 or L1, by NORM) between two points stored with strides (in elements) sa
// and sb.
template <int NORM, typename T>
CRFOLD_HD T point_dist(const T* a, int64_t sa, const T* b, int64_t sb, int D) {
  T acc = T(0);
  for (int d = 0; d < D; ++d) acc = dist_accumulate<NORM>(acc, a[d * sa], b[d * sb]);
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

// d/dp of g * dist(p, q) along one coordinate (the gradient of q is its negative):
// 2 g (p - q) for kNormL2; g sign(p - q) for kNormL1, with sign(0) = 0 (the subgradient that
// torch.abs's autograd uses; |x| has no derivative at 0).
template <typename T>
CRFOLD_HD T pair_grad(T g, T p, T q, int norm) {
  if (norm == kNormL1) return p > q ? g : (p < q ? -g : T(0));
  return T(2) * g * (p - q);
}

}  // namespace crfold
