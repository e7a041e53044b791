// CPU max-pools of FoldingNet's encoder. The graph max-pool scans each point's candidates row by
// row (channels contiguous, so the compare-and-select over channels vectorizes) and records the
// winning point; its backward scatters the gradient to the winners in a fixed order. The global
// max-pool (over all points of a cloud) does the same for one candidate list: every point.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "parallel_cpu.h"
#include "pool.h"
#include "pool_common.h"

namespace crfold {
namespace {

constexpr int64_t kRowsPerTask = 64;   // points per forward work item
constexpr int64_t kChannelChunk = 16;  // channels per backward work item (one cache line of float)
constexpr int64_t kGlobalChunk = 64;   // channels per global max-pool work item
// Work below this many scalar candidate reads runs on the calling thread (a parallel region costs
// more than it saves for small inputs, and far more when the cores are busy).
constexpr int64_t kMinWorkPerTask = int64_t(1) << 20;

// Arithmetic type of the comparisons and of the gradient sums: float for the 16-bit types (exact
// for comparisons: widening is exact), the type itself otherwise.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// How the kernels see a value of type T: the storage S that they copy and select (raw bits for
// the 16-bit types, so that the selects vectorize; c10's types are structs) and its widening to
// acc_t<T> for the comparisons and the sums.
template <typename T>
struct Lanes {
  using S = T;
  static inline acc_t<T> widen(S v) { return v; }
};
template <>
struct Lanes<c10::BFloat16> {
  using S = uint16_t;
  // bfloat16 is the top half of a float32: widening is a shift of the bits.
  static inline float widen(S v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
  }
};
template <>
struct Lanes<c10::Half> {
  using S = uint16_t;
  static inline float widen(S v) { return c10::detail::fp16_ieee_to_fp32_value(v); }
};

// best[c], win[c] = row[c], p where row[c] beats best[c], for c < n: the one inner loop of both
// pools. __restrict__ tells the compiler that the three arrays never overlap, so that it
// vectorizes the loop (compare, then two selects).
template <typename L>
inline void select_max(const typename L::S* __restrict__ row, typename L::S* __restrict__ best,
                       int32_t* __restrict__ win, int32_t p, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const bool beats = pool_beats(L::widen(row[c]), L::widen(best[c]));
    best[c] = beats ? row[c] : best[c];
    win[c] = beats ? p : win[c];
  }
}

template <typename T>
void forward_rows(const T* f_in, const int64_t* nb, int64_t N, int64_t C, int64_t k, int64_t r0,
                  int64_t r1, T* out, int32_t* win) {
  using L = Lanes<T>;
  using S = typename L::S;
  const S* f = reinterpret_cast<const S*>(f_in);
  S* o_all = reinterpret_cast<S*>(out);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / N;
    const int32_t self = static_cast<int32_t>(r - b * N);
    S* o = o_all + r * C;
    int32_t* w = win + r * C;
    std::copy(f + r * C, f + (r + 1) * C, o);
    std::fill(w, w + C, self);
    const int64_t* nr = nb + r * k;
    for (int64_t j = 0; j < k; ++j) {
      const int32_t p = static_cast<int32_t>(nr[j]);
      select_max<L>(f + (b * N + p) * C, o, w, p, C);
    }
  }
}

// acc[b, winners[b, i, c], c] += grad[b, i, c] for the channels [c0, c1) of cloud b, in
// ascending i: every output element is owned by one work item and summed in one fixed order.
template <typename T>
void scatter_channels(const T* g_in, const int32_t* win, int64_t N, int64_t C, int64_t b,
                      int64_t c0, int64_t c1, acc_t<T>* acc) {
  using L = Lanes<T>;
  const auto* g = reinterpret_cast<const typename L::S*>(g_in);
  const int64_t base = b * N;
  for (int64_t i = 0; i < N; ++i) {
    const auto* gr = g + (base + i) * C;
    const int32_t* wr = win + (base + i) * C;
    for (int64_t c = c0; c < c1; ++c) acc[(base + wr[c]) * C + c] += L::widen(gr[c]);
  }
}

// Global max-pool of cloud b over the channels [c0, c1): values and winners (B, C).
template <typename T>
void global_channels(const T* f_in, int64_t N, int64_t C, int64_t b, int64_t c0, int64_t c1, T* out,
                     int32_t* win) {
  using L = Lanes<T>;
  using S = typename L::S;
  const S* f = reinterpret_cast<const S*>(f_in) + b * N * C;
  S* o = reinterpret_cast<S*>(out) + b * C;
  int32_t* w = win + b * C;
  std::copy(f + c0, f + c1, o + c0);
  std::fill(w + c0, w + c1, 0);
  for (int64_t n = 1; n < N; ++n) {
    select_max<L>(f + n * C + c0, o + c0, w + c0, static_cast<int32_t>(n), c1 - c0);
  }
}

// The first out-of-range index of idx (any shape, values must lie in [0, n)), or -1.
template <typename I>
int64_t first_out_of_range(const I* idx, int64_t count, int64_t n) {
  for (int64_t e = 0; e < count; ++e) {
    if (idx[e] < 0 || idx[e] >= n) return e;
  }
  return -1;
}

}  // namespace

void check_graph_pool_inputs(const at::Tensor& features, const at::Tensor& neighbours) {
  TORCH_CHECK_VALUE(features.dim() == 3, "features must have shape (B, N, C), got ",
                    features.sizes());
  TORCH_CHECK_VALUE(neighbours.dim() == 3, "neighbours must have shape (B, N, k), got ",
                    neighbours.sizes());
  TORCH_CHECK_VALUE(
      neighbours.size(0) == features.size(0) && neighbours.size(1) == features.size(1),
      "neighbours must have shape (B, N, k) with (B, N) of features ", features.sizes(), ", got ",
      neighbours.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(features.scalar_type()),
                    "features must be float16/bfloat16/float32/float64, got ",
                    features.scalar_type());
  TORCH_CHECK_VALUE(neighbours.scalar_type() == at::kLong, "neighbours must be int64, got ",
                    neighbours.scalar_type());
  TORCH_CHECK_VALUE(features.size(1) <= INT32_MAX, "N must be < 2^31, got ", features.size(1));
  TORCH_CHECK_VALUE(features.device() == neighbours.device(),
                    "features and neighbours devices differ");
}

void check_graph_pool_grad(const at::Tensor& grad_out, const at::Tensor& winners,
                           int64_t num_points) {
  TORCH_CHECK_VALUE(winners.dim() == 3 && winners.scalar_type() == at::kInt,
                    "winners must be a (B, N, C) int32 tensor, got ", winners.sizes(), " ",
                    winners.scalar_type());
  TORCH_CHECK_VALUE(grad_out.sizes() == winners.sizes(), "grad_out must have the shape of winners ",
                    winners.sizes(), ", got ", grad_out.sizes());
  TORCH_CHECK_VALUE(winners.size(1) == num_points, "num_points must equal N = ", winners.size(1),
                    ", got ", num_points);
  TORCH_CHECK_VALUE(at::isFloatingType(grad_out.scalar_type()),
                    "grad_out must be a floating-point tensor, got ", grad_out.scalar_type());
}

void check_global_pool_input(const at::Tensor& features) {
  TORCH_CHECK_VALUE(features.dim() == 3, "features must have shape (B, N, C), got ",
                    features.sizes());
  TORCH_CHECK_VALUE(features.size(1) >= 1, "features must have N >= 1 points, got ",
                    features.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(features.scalar_type()),
                    "features must be float16/bfloat16/float32/float64, got ",
                    features.scalar_type());
  TORCH_CHECK_VALUE(features.size(1) <= INT32_MAX, "N must be < 2^31, got ", features.size(1));
}

void check_global_pool_grad(const at::Tensor& grad_out, const at::Tensor& winners,
                            int64_t num_points) {
  TORCH_CHECK_VALUE(winners.dim() == 2 && winners.scalar_type() == at::kInt,
                    "winners must be a (B, C) int32 tensor, got ", winners.sizes(), " ",
                    winners.scalar_type());
  TORCH_CHECK_VALUE(grad_out.sizes() == winners.sizes(), "grad_out must have the shape of winners ",
                    winners.sizes(), ", got ", grad_out.sizes());
  TORCH_CHECK_VALUE(num_points >= 1, "num_points must be >= 1, got ", num_points);
  TORCH_CHECK_VALUE(at::isFloatingType(grad_out.scalar_type()),
                    "grad_out must be a floating-point tensor, got ", grad_out.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> graph_max_pool_forward_cpu(const at::Tensor& features_in,
                                                              const at::Tensor& neighbours_in) {
  check_graph_pool_inputs(features_in, neighbours_in);
  const at::Tensor features = features_in.contiguous(), neighbours = neighbours_in.contiguous();
  const int64_t B = features.size(0), N = features.size(1), C = features.size(2);
  const int64_t k = neighbours.size(2);
  const int64_t* nb = neighbours.data_ptr<int64_t>();
  const int64_t bad = first_out_of_range(nb, neighbours.numel(), N);
  TORCH_CHECK_VALUE(bad < 0, "neighbours must lie in [0, ", N, "), got ", bad < 0 ? 0 : nb[bad],
                    " at batch ", bad / std::max<int64_t>(N * k, 1), ", point ",
                    bad / std::max<int64_t>(k, 1) % std::max<int64_t>(N, 1));
  at::Tensor out = at::empty({B, N, C}, features.options());
  at::Tensor win = at::empty({B, N, C}, features.options().dtype(at::kInt));
  if (out.numel() == 0) return {out, win};
  const int64_t rows = B * N;
  const int64_t tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t grain =
      std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(kRowsPerTask * (k + 1) * C, 1));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "crfold_graph_max_pool_cpu", [&] {
        const scalar_t* f = features.data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        int32_t* w = win.data_ptr<int32_t>();
        parallel_for_dynamic(tasks, grain, [&](int64_t t) {
          const int64_t r0 = t * kRowsPerTask, r1 = std::min(rows, r0 + kRowsPerTask);
          forward_rows<scalar_t>(f, nb, N, C, k, r0, r1, o, w);
        });
      });
  return {out, win};
}

at::Tensor graph_max_pool_backward_cpu(const at::Tensor& grad_in, const at::Tensor& winners_in,
                                       int64_t num_points, bool deterministic) {
  (void)deterministic;  // the CPU backward is always deterministic
  check_graph_pool_grad(grad_in, winners_in, num_points);
  const at::Tensor grad = grad_in.contiguous(), winners = winners_in.contiguous();
  const int64_t B = grad.size(0), N = grad.size(1), C = grad.size(2);
  const int32_t* w = winners.data_ptr<int32_t>();
  const int64_t bad = first_out_of_range(w, winners.numel(), N);
  TORCH_CHECK_VALUE(bad < 0, "winners must lie in [0, ", N, "), got ", bad < 0 ? 0 : w[bad]);
  const at::ScalarType acc_type = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor acc = at::zeros({B, N, C}, grad.options().dtype(acc_type));
  if (acc.numel() == 0) return acc.to(grad.scalar_type());
  const int64_t chunks = (C + kChannelChunk - 1) / kChannelChunk;
  const int64_t grain =
      std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(N * std::min(C, kChannelChunk), 1));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "crfold_graph_max_pool_backward_cpu", [&] {
        const scalar_t* g = grad.data_ptr<scalar_t>();
        acc_t<scalar_t>* a = acc.data_ptr<acc_t<scalar_t>>();
        parallel_for_dynamic(B * chunks, grain, [&](int64_t t) {
          const int64_t b = t / chunks, c0 = (t % chunks) * kChannelChunk;
          scatter_channels<scalar_t>(g, w, N, C, b, c0, std::min(C, c0 + kChannelChunk), a);
        });
      });
  return acc.scalar_type() == grad.scalar_type() ? acc : acc.to(grad.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> global_max_pool_forward_cpu(const at::Tensor& features_in) {
  check_global_pool_input(features_in);
  const at::Tensor features = features_in.contiguous();
  const int64_t B = features.size(0), N = features.size(1), C = features.size(2);
  at::Tensor out = at::empty({B, C}, features.options());
  at::Tensor win = at::empty({B, C}, features.options().dtype(at::kInt));
  if (out.numel() == 0) return {out, win};
  const int64_t chunks = (C + kGlobalChunk - 1) / kGlobalChunk;
  const int64_t grain =
      std::max<int64_t>(1, kMinWorkPerTask / std::max<int64_t>(N * std::min(C, kGlobalChunk), 1));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "crfold_global_max_pool_cpu", [&] {
        const scalar_t* f = features.data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        int32_t* w = win.data_ptr<int32_t>();
        parallel_for_dynamic(B * chunks, grain, [&](int64_t t) {
          const int64_t b = t / chunks, c0 = (t % chunks) * kGlobalChunk;
          global_channels<scalar_t>(f, N, C, b, c0, std::min(C, c0 + kGlobalChunk), o, w);
        });
      });
  return {out, win};
}

at::Tensor global_max_pool_backward_cpu(const at::Tensor& grad_in, const at::Tensor& winners_in,
                                        int64_t num_points) {
  check_global_pool_grad(grad_in, winners_in, num_points);
  const at::Tensor grad = grad_in.contiguous(), winners = winners_in.contiguous();
  const int64_t B = grad.size(0), C = grad.size(1), N = num_points;
  const int32_t* w = winners.data_ptr<int32_t>();
  const int64_t bad = first_out_of_range(w, winners.numel(), N);
  TORCH_CHECK_VALUE(bad < 0, "winners must lie in [0, ", N, "), got ", bad < 0 ? 0 : w[bad]);
  at::Tensor out = at::zeros({B, N, C}, grad.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "crfold_global_max_pool_backward_cpu", [&] {
        const scalar_t* g = grad.data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        for (int64_t e = 0; e < B * C; ++e) {  // one writer per element: no order to keep
          const int64_t b = e / C, c = e - b * C;
          o[(b * N + w[e]) * C + c] = g[e];
        }
      });
  return out;
}

}  // namespace crfold
