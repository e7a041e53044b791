// CPU kNN: blocked brute force (vectorized distance loop, threads taking query blocks as they
// free up), a kd-tree for large target clouds (kdtree_cpu.cpp), and a deterministic backward.
// Squared L2 (norm 2) or L1 (norm 1) distances: the norm is a template argument of the loops.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "knn.h"
#include "knn_common.h"
#include "parallel_cpu.h"

namespace crfold {
namespace {

constexpr int64_t kQueryBlock = 32;  // queries per work item of the forward
constexpr int64_t kRowBlock = 256;   // query rows per work item of the p1 backward
// Valid targets from which the kd-tree beats the brute force, measured on 2 AVX-512 cores.
// K = 1: benchmarks/bench_chamfer.py --device cpu --impls crfold (sizes 1xNxNx3) run with
// CRFOLD_KDTREE_MIN=0 (always the tree) and with a huge value (never) shows the crossover; re-run
// there, the brute force led at 8,192 targets and the tree at 12,288. K > 1: no benchmark in the
// repository times it. CRFOLD_KDTREE_MIN overrides both, e.g. to re-measure them elsewhere.
constexpr int64_t kKdTreeMinK1 = 12288;
constexpr int64_t kKdTreeMinKn = 256;
constexpr int kKdTreeMaxD = 8;
constexpr int kQueries = 4;  // queries sharing each loaded target vector (K = 1)
// Work below this many (query, target) pairs runs on the calling thread: starting a parallel
// region costs more than it saves for small clouds, and far more when the cores are busy.
constexpr int64_t kMinPairsPerTask = int64_t(1) << 20;

int64_t divup(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Native-width vectors through GCC/Clang vector extensions (no intrinsics, any ISA).
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

template <typename T>
struct Simd {
  static constexpr int W = kVecBytes / sizeof(T);
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef T V __attribute__((vector_size(kVecBytes)));
  typedef I VI __attribute__((vector_size(kVecBytes)));
  static inline V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  }
  static inline VI lanes() {
    VI v;
    for (int l = 0; l < W; ++l) v[l] = I(l);
    return v;
  }
};

// Distances of one query to W targets stored SoA: the vector form of point_dist<NORM>() (same
// order of operations, so the lanes equal the scalar point_dist<NORM>() bit for bit).
template <typename T, int DT, int NORM>
inline typename Simd<T>::V lane_dists(const typename Simd<T>::V* qv,
                                      const typename Simd<T>::V* tv) {
  using V = typename Simd<T>::V;
  V acc = V{};
  for (int d = 0; d < DT; ++d) {
    const V diff = qv[d] - tv[d];
    if constexpr (NORM == kNormL1) {
      acc = acc + (diff < V{} ? -diff : diff);  // abs_value(), lane by lane
    } else {
      acc = acc + diff * diff;
    }
  }
  return acc;
}

// K = 1 for Q queries at once: per-lane running minimum (vector compare + blend), then a
// lowest-index reduction over the lanes and the scalar tail.
template <typename T, int DT, int Q, int NORM>
inline void nn1_queries(const T* q, const T* t, int64_t stride, int64_t n, T* od, int64_t* oi) {
  using S = Simd<T>;
  using V = typename S::V;
  using VI = typename S::VI;
  constexpr int W = S::W;
  T best_d[Q];
  int64_t best_i[Q];
  for (int r = 0; r < Q; ++r) best_i[r] = -1;
  int64_t j0 = 0;
  if (n >= W) {
    V qv[Q][DT], bd[Q];
    VI bi[Q];
    const VI lane = S::lanes();
    for (int r = 0; r < Q; ++r) {
      for (int d = 0; d < DT; ++d) qv[r][d] = V{} + q[r * DT + d];
      bd[r] = V{} + std::numeric_limits<T>::infinity();
      bi[r] = lane;
    }
    for (; j0 + W <= n; j0 += W) {
      V tv[DT];
      for (int d = 0; d < DT; ++d) tv[d] = S::load(t + d * stride + j0);
      const VI jv = lane + typename S::I(j0);
      for (int r = 0; r < Q; ++r) {
        const V dist = lane_dists<T, DT, NORM>(qv[r], tv);
        const VI lt = dist < bd[r];  // strict: within a lane the earlier index wins ties
        bd[r] = lt ? dist : bd[r];
        bi[r] = lt ? jv : bi[r];
      }
    }
    for (int r = 0; r < Q; ++r) {
      best_d[r] = bd[r][0];
      best_i[r] = bi[r][0];
      for (int l = 1; l < W; ++l) {
        if (precedes<T>(bd[r][l], bi[r][l], best_d[r], best_i[r])) {
          best_d[r] = bd[r][l];
          best_i[r] = bi[r][l];
        }
      }
    }
  }
  for (int r = 0; r < Q; ++r) {
    for (int64_t j = j0; j < n; ++j) {
      const T d = point_dist<NORM>(q + r * DT, 1, t + j, stride, DT);
      if (best_i[r] < 0 || precedes(d, j, best_d[r], best_i[r])) {
        best_d[r] = d;
        best_i[r] = j;
      }
    }
    od[r] = best_d[r];
    oi[r] = best_i[r];
  }
}

// K > 1: targets arrive in ascending index, so a candidate enters only if strictly closer; a
// vector compare against the current K-th distance skips most chunks.
template <typename T, int DT, int NORM>
inline void knn_query(const T* q, const T* t, int64_t stride, int64_t n, int K, T* od,
                      int64_t* oi) {
  using S = Simd<T>;
  using V = typename S::V;
  using VI = typename S::VI;
  constexpr int W = S::W;
  int count = 0;
  int64_t j0 = 0;
  V qv[DT];
  for (int d = 0; d < DT; ++d) qv[d] = V{} + q[d];
  for (; j0 + W <= n; j0 += W) {
    V tv[DT];
    for (int d = 0; d < DT; ++d) tv[d] = S::load(t + d * stride + j0);
    const V dist = lane_dists<T, DT, NORM>(qv, tv);
    if (count == K) {
      const VI lt = dist < (V{} + od[K - 1]);
      bool any = false;
      for (int l = 0; l < W; ++l) any |= lt[l] != 0;
      if (!any) continue;
    }
    for (int l = 0; l < W; ++l) {
      if (count < K || dist[l] < od[K - 1]) count = topk_insert(od, oi, count, K, dist[l], j0 + l);
    }
  }
  for (; j0 < n; ++j0) {
    const T d = point_dist<NORM>(q, 1, t + j0, stride, DT);
    if (count < K || d < od[K - 1]) count = topk_insert(od, oi, count, K, d, j0);
  }
  for (int k = count; k < K; ++k) {  // fewer than K targets: padding
    od[k] = T(0);
    oi[k] = -1;
  }
}

// Any D (beyond the specialised 1..8): scalar distances, same arithmetic.
template <typename T, int NORM>
inline void knn_query_generic(const T* q, const T* t, int64_t stride, int64_t n, int D, int K,
                              T* od, int64_t* oi) {
  int count = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T d = point_dist<NORM>(q, 1, t + j, stride, D);
    if (count < K || d < od[K - 1]) count = topk_insert(od, oi, count, K, d, j);
  }
  for (int k = count; k < K; ++k) {
    od[k] = T(0);
    oi[k] = -1;
  }
}

template <typename T, int DT, int NORM>
void brute_block(const T* p1, const T* soa, int64_t P1, int64_t P2, int D, int K, int64_t b,
                 int64_t i0, int64_t i1, int64_t n2, T* od, int64_t* oi) {
  const T* t = soa + b * D * P2;
  const int64_t base = b * P1;
  if constexpr (DT == 0) {
    for (int64_t i = i0; i < i1; ++i) {
      knn_query_generic<T, NORM>(p1 + (base + i) * D, t, P2, n2, D, K, od + (base + i) * K,
                                 oi + (base + i) * K);
    }
  } else if (K == 1) {
    int64_t i = i0;
    for (; i + kQueries <= i1; i += kQueries) {
      nn1_queries<T, DT, kQueries, NORM>(p1 + (base + i) * DT, t, P2, n2, od + base + i,
                                         oi + base + i);
    }
    for (; i < i1; ++i) {
      nn1_queries<T, DT, 1, NORM>(p1 + (base + i) * DT, t, P2, n2, od + base + i, oi + base + i);
    }
  } else {
    for (int64_t i = i0; i < i1; ++i) {
      knn_query<T, DT, NORM>(p1 + (base + i) * DT, t, P2, n2, K, od + (base + i) * K,
                             oi + (base + i) * K);
    }
  }
}

template <typename T, int NORM>
void forward_brute(const at::Tensor& p1, const at::Tensor& p2, const int64_t* l1, const int64_t* l2,
                   int K, at::Tensor& dists, at::Tensor& idx) {
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1);
  const int D = static_cast<int>(p1.size(2));
  // (B, D, P2), O(B * P2) extra, transposed by a plain loop on this thread: every parallel region
  // of torch's (a TensorIterator copy would start one) is a chance to stall on a busy machine,
  // where OpenMP threads are descheduled or spin (docs/performance.md).
  at::Tensor soa = at::empty({B, D, P2}, p2.options());
  {
    const T* src = p2.data_ptr<T>();
    T* dst = soa.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < P2; ++j) {
        for (int d = 0; d < D; ++d) dst[(b * D + d) * P2 + j] = src[(b * P2 + j) * D + d];
      }
    }
  }
  const T* pp1 = p1.data_ptr<T>();
  const T* ps = soa.data_ptr<T>();
  T* od = dists.data_ptr<T>();
  int64_t* oi = idx.data_ptr<int64_t>();
  const int64_t nblocks = divup(P1, kQueryBlock);
  const int64_t grain =
      std::max<int64_t>(1, kMinPairsPerTask / (kQueryBlock * std::max<int64_t>(P2, 1)));
  parallel_for_dynamic(B * nblocks, grain, [&](int64_t w) {
    const int64_t b = w / nblocks;
    const int64_t i0 = (w % nblocks) * kQueryBlock;
    const int64_t i1 = std::min(l1[b], i0 + kQueryBlock);
    const int64_t n2 = l2[b];
    if (i0 >= i1 || n2 == 0) return;
    switch (D) {
#define CRFOLD_CASE(DV)                                                     \
  case DV:                                                                  \
    brute_block<T, DV, NORM>(pp1, ps, P1, P2, D, K, b, i0, i1, n2, od, oi); \
    break;
      CRFOLD_CASE(1)
      CRFOLD_CASE(2)
      CRFOLD_CASE(3)
      CRFOLD_CASE(4)
      CRFOLD_CASE(5)
      CRFOLD_CASE(6)
      CRFOLD_CASE(7)
      CRFOLD_CASE(8)
#undef CRFOLD_CASE
      default:
        brute_block<T, 0, NORM>(pp1, ps, P1, P2, D, K, b, i0, i1, n2, od, oi);
    }
  });
}

// First non-finite valid point of a cloud, as (batch, index), or (-1, -1).
template <typename T>
std::pair<int64_t, int64_t> first_non_finite(const at::Tensor& p, const int64_t* lengths) {
  const int64_t B = p.size(0), P = p.size(1), D = p.size(2);
  const T* x = p.data_ptr<T>();
  for (int64_t b = 0; b < B; ++b) {
    const T* xb = x + b * P * D;
    const int64_t n = lengths[b] * D;
    bool bad = false;
    for (int64_t e = 0; e < n; ++e) bad |= !(std::abs(xb[e]) <= std::numeric_limits<T>::max());
    if (bad) {
      for (int64_t e = 0; e < n; ++e) {
        if (!std::isfinite(xb[e])) return {b, e / D};
      }
    }
  }
  return {-1, -1};
}

template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& p1, const at::Tensor& p2,
                   const at::Tensor& idx, const int64_t* l1, int norm, at::Tensor& g1,
                   at::Tensor& g2) {
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1), D = p1.size(2);
  const int64_t K = idx.size(2);
  const T* g = grad.data_ptr<T>();
  const T* x1 = p1.data_ptr<T>();
  const T* x2 = p2.data_ptr<T>();
  const int64_t* ix = idx.data_ptr<int64_t>();
  T* o1 = g1.data_ptr<T>();
  T* o2 = g2.data_ptr<T>();
  // grad p1: each query owns its row, summed over k in order. A work item is kRowBlock rows of
  // one cloud; grain (in rows) is the fewest rows worth a thread.
  const int64_t grain = std::max<int64_t>(256, kMinPairsPerTask / 64 / std::max<int64_t>(K * D, 1));
  const int64_t row_blocks = divup(P1, kRowBlock);
  parallel_for_dynamic(B * row_blocks, divup(grain, kRowBlock), [&](int64_t item) {
    const int64_t b = item / row_blocks;
    const int64_t i0 = (item % row_blocks) * kRowBlock;
    const int64_t i1 = std::min(l1[b], i0 + kRowBlock);
    for (int64_t w = b * P1 + i0; w < b * P1 + i1; ++w) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t j = ix[w * K + k];
        if (j < 0) continue;
        const T gg = g[w * K + k];
        for (int64_t d = 0; d < D; ++d) {
          o1[w * D + d] += pair_grad(gg, x1[w * D + d], x2[(b * P2 + j) * D + d], norm);
        }
      }
    }
  });
  // grad p2: a work item owns a range of targets and adds its contributions in query order, so
  // every target's sum has one fixed order, whatever the number of threads (no atomics).
  const bool small = B * P1 * K * D < grain;
  const int64_t chunks =
      small ? 1 : std::max<int64_t>(1, std::min<int64_t>(P2, divup(2 * at::get_num_threads(), B)));
  const int64_t len = divup(std::max<int64_t>(P2, 1), chunks);
  parallel_for_dynamic(B * chunks, small ? B * chunks : 1, [&](int64_t w) {
    const int64_t b = w / chunks;
    const int64_t j0 = (w % chunks) * len, j1 = std::min(P2, j0 + len);
    for (int64_t i = 0; i < l1[b]; ++i) {
      const int64_t q = b * P1 + i;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t j = ix[q * K + k];
        if (j < j0 || j >= j1) continue;
        const T gg = g[q * K + k];
        for (int64_t d = 0; d < D; ++d) {
          o2[(b * P2 + j) * D + d] -= pair_grad(gg, x1[q * D + d], x2[(b * P2 + j) * D + d], norm);
        }
      }
    }
  });
}

}  // namespace

void check_knn_inputs(const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& lengths1,
                      const at::Tensor& lengths2, int64_t K, int64_t norm) {
  TORCH_CHECK_VALUE(p1.dim() == 3, "p1 must have shape (B, P1, D), got ", p1.sizes());
  TORCH_CHECK_VALUE(p2.dim() == 3, "p2 must have shape (B, P2, D), got ", p2.sizes());
  TORCH_CHECK_VALUE(p1.size(0) == p2.size(0), "p1 and p2 batch sizes differ");
  TORCH_CHECK_VALUE(p1.size(2) == p2.size(2), "p1 and p2 dimensions D differ");
  TORCH_CHECK_VALUE(p1.size(2) >= 1, "p1 must have D >= 1");
  TORCH_CHECK_VALUE(p1.scalar_type() == p2.scalar_type(), "p1 and p2 dtypes differ");
  TORCH_CHECK_VALUE(
      p1.scalar_type() == at::kFloat || p1.scalar_type() == at::kDouble,
      "the kNN kernel takes float32 or float64 (crfold.ops.knn_points casts half precision)");
  TORCH_CHECK_VALUE(K >= 1, "K must be >= 1, got ", K);
  TORCH_CHECK_VALUE(norm == kNormL1 || norm == kNormL2, "norm must be 1 or 2, got ", norm);
  const int64_t B = p1.size(0);
  for (const auto* l : {&lengths1, &lengths2}) {
    const char* name = l == &lengths1 ? "lengths1" : "lengths2";
    TORCH_CHECK_VALUE(l->dim() == 1 && l->size(0) == B, name, " must have shape (", B, ",)");
    TORCH_CHECK_VALUE(l->scalar_type() == at::kLong, name, " must be int64");
  }
}

std::tuple<at::Tensor, at::Tensor> knn_forward_cpu(const at::Tensor& p1_in, const at::Tensor& p2_in,
                                                   const at::Tensor& lengths1_in,
                                                   const at::Tensor& lengths2_in, int64_t K,
                                                   int64_t norm) {
  check_knn_inputs(p1_in, p2_in, lengths1_in, lengths2_in, K, norm);
  const at::Tensor p1 = p1_in.contiguous(), p2 = p2_in.contiguous();
  const at::Tensor lengths1 = lengths1_in.contiguous(), lengths2 = lengths2_in.contiguous();
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1);
  const int64_t* l1 = lengths1.data_ptr<int64_t>();
  const int64_t* l2 = lengths2.data_ptr<int64_t>();
  int64_t max_n2 = 0;
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(l1[b] >= 0 && l1[b] <= P1, "lengths1 must lie in [0, ", P1, "], got ", l1[b]);
    TORCH_CHECK_VALUE(l2[b] >= 0 && l2[b] <= P2, "lengths2 must lie in [0, ", P2, "], got ", l2[b]);
    max_n2 = std::max(max_n2, l2[b]);
  }
  at::Tensor dists = at::zeros({B, P1, K}, p1.options());
  at::Tensor idx = at::full({B, P1, K}, -1, p1.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(p1.scalar_type(), "crfold_knn_forward_cpu", [&] {
    for (const auto* p : {&p1, &p2}) {
      const auto bad = first_non_finite<scalar_t>(*p, p == &p1 ? l1 : l2);
      TORCH_CHECK_VALUE(bad.first < 0, p == &p1 ? "p1" : "p2",
                        " has a non-finite (NaN or inf) point at batch ", bad.first, ", index ",
                        bad.second);
    }
    static const int64_t env_min = [] {
      const char* v = std::getenv("CRFOLD_KDTREE_MIN");
      return v ? std::atoll(v) : int64_t(-1);
    }();
    const int64_t kd_min = env_min >= 0 ? env_min : (K == 1 ? kKdTreeMinK1 : kKdTreeMinKn);
    if (max_n2 >= kd_min && p1.size(2) <= kKdTreeMaxD) {
      knn_forward_kdtree_cpu(p1, p2, lengths1, lengths2, K, norm, dists, idx);
    } else if (norm == kNormL1) {
      forward_brute<scalar_t, kNormL1>(p1, p2, l1, l2, static_cast<int>(K), dists, idx);
    } else {
      forward_brute<scalar_t, kNormL2>(p1, p2, l1, l2, static_cast<int>(K), dists, idx);
    }
  });
  return {dists, idx};
}

std::tuple<at::Tensor, at::Tensor> knn_backward_cpu(
    const at::Tensor& grad_dists, const at::Tensor& p1_in, const at::Tensor& p2_in,
    const at::Tensor& lengths1, const at::Tensor& lengths2, const at::Tensor& idx_in,
    bool deterministic, int64_t norm) {
  (void)lengths2;
  (void)deterministic;  // the CPU backward is always deterministic
  const at::Tensor p1 = p1_in.contiguous(), p2 = p2_in.contiguous();
  const at::Tensor idx = idx_in.contiguous(), l1 = lengths1.contiguous();
  const at::Tensor grad = grad_dists.to(p1.scalar_type()).contiguous();
  // Zeroed by memset on this thread, not by at::zeros_like, whose fill of these ~100k elements
  // would start a parallel region (see forward_brute).
  at::Tensor g1 = at::empty_like(p1), g2 = at::empty_like(p2);
  for (at::Tensor* g : {&g1, &g2}) {
    if (g->nbytes() > 0) std::memset(g->data_ptr(), 0, g->nbytes());
  }
  TORCH_CHECK_VALUE(grad.sizes() == idx.sizes(), "grad_dists must match idx in shape");
  TORCH_CHECK_VALUE(norm == kNormL1 || norm == kNormL2, "norm must be 1 or 2, got ", norm);
  AT_DISPATCH_FLOATING_TYPES(p1.scalar_type(), "crfold_knn_backward_cpu", [&] {
    backward_impl<scalar_t>(grad, p1, p2, idx, l1.data_ptr<int64_t>(), static_cast<int>(norm), g1,
                            g2);
  });
  return {g1, g2};
}

}  // namespace crfold
