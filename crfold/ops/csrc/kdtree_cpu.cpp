// kd-tree forward for large target clouds. Exact: the distances come from the same
// dist_accumulate<NORM>() as the brute force and candidates enter through topk_insert(), so the
// result (distances and lowest-index ties) is identical to the brute force kernel, for the
// squared L2 and the L1 distance alike.
//
// Pruning is safe without a margin: a node's box distance is computed with the same monotone
// floating-point steps as a point distance (per coordinate a rounded |difference| or squared
// difference, then a rounded sum), from a clamp that is never farther than the point in any
// coordinate, so the computed bound never exceeds the computed distance of any point inside the
// box. A node is skipped only when its bound is strictly larger than the current K-th distance,
// so an equal distance with a lower index is never missed.
#include <algorithm>
#include <numeric>
#include <vector>

#include "knn.h"
#include "knn_common.h"
#include "parallel_cpu.h"

namespace crfold {
namespace {

constexpr int64_t kLeafSize = 16;
constexpr int64_t kTreeQueryBlock = 64;  // queries per work item of the tree search

template <typename T>
struct KdTree {
  struct Node {
    int64_t lo, hi;       // range of tree-ordered points
    int32_t left, right;  // children, -1 for a leaf
  };
  int D = 0;
  int64_t n = 0;
  std::vector<T> pts;        // (D, n): coordinates in tree order, SoA
  std::vector<int64_t> ids;  // original index of each tree-ordered point
  std::vector<Node> nodes;
  std::vector<T> lo_box, hi_box;  // (num_nodes, D) tight bounding boxes

  void build(const T* p, int64_t n_, int D_) {  // p: (n, D) row-major
    D = D_;
    n = n_;
    ids.resize(n);
    std::iota(ids.begin(), ids.end(), int64_t(0));
    nodes.clear();
    lo_box.clear();
    hi_box.clear();
    nodes.reserve(2 * static_cast<size_t>(n / kLeafSize + 1));
    build_node(p, 0, n);
    pts.resize(static_cast<size_t>(D) * n);
    for (int64_t pos = 0; pos < n; ++pos) {
      for (int d = 0; d < D; ++d) pts[d * n + pos] = p[ids[pos] * D + d];
    }
  }

  int32_t build_node(const T* p, int64_t lo, int64_t hi) {
    const int32_t id = static_cast<int32_t>(nodes.size());
    nodes.push_back({lo, hi, -1, -1});
    const size_t off = lo_box.size();
    lo_box.resize(off + D);
    hi_box.resize(off + D);
    for (int d = 0; d < D; ++d) {
      T mn = p[ids[lo] * D + d], mx = mn;
      for (int64_t i = lo + 1; i < hi; ++i) {
        const T v = p[ids[i] * D + d];
        mn = std::min(mn, v);
        mx = std::max(mx, v);
      }
      lo_box[off + d] = mn;
      hi_box[off + d] = mx;
    }
    if (hi - lo <= kLeafSize) return id;
    int dim = 0;
    for (int d = 1; d < D; ++d) {
      if (hi_box[off + d] - lo_box[off + d] > hi_box[off + dim] - lo_box[off + dim]) dim = d;
    }
    if (hi_box[off + dim] == lo_box[off + dim]) return id;  // all points equal: one leaf
    const int64_t mid = lo + (hi - lo) / 2;
    std::nth_element(ids.begin() + lo, ids.begin() + mid, ids.begin() + hi,
                     [&](int64_t a, int64_t b) { return p[a * D + dim] < p[b * D + dim]; });
    const int32_t left = build_node(p, lo, mid);
    const int32_t right = build_node(p, mid, hi);
    nodes[id].left = left;
    nodes[id].right = right;
    return id;
  }

  template <int NORM>
  T box_dist(int32_t node, const T* q) const {
    const T* lo = &lo_box[static_cast<size_t>(node) * D];
    const T* hi = &hi_box[static_cast<size_t>(node) * D];
    T acc = T(0);
    for (int d = 0; d < D; ++d) {
      const T c = q[d] < lo[d] ? lo[d] : (q[d] > hi[d] ? hi[d] : q[d]);
      acc = dist_accumulate<NORM>(acc, q[d], c);
    }
    return acc;
  }

  // Writes the K nearest (ascending, lowest-index ties) into od/oi; returns how many exist.
  template <int NORM>
  int query(const T* q, int K, T* od, int64_t* oi) const {
    struct Item {
      int32_t node;
      T bound;
    };
    Item stack[128];
    int sp = 0;
    int count = 0;
    stack[sp++] = {0, box_dist<NORM>(0, q)};
    while (sp > 0) {
      const Item it = stack[--sp];
      if (count == K && it.bound > od[K - 1]) continue;
      const Node& nd = nodes[it.node];
      if (nd.left < 0) {
        for (int64_t pos = nd.lo; pos < nd.hi; ++pos) {
          const T d = point_dist<NORM>(q, 1, &pts[pos], n, D);
          const int64_t j = ids[pos];
          if (count < K || precedes(d, j, od[K - 1], oi[K - 1])) {
            count = topk_insert(od, oi, count, K, d, j);
          }
        }
        continue;
      }
      const T bl = box_dist<NORM>(nd.left, q), br = box_dist<NORM>(nd.right, q);
      // Push the farther child first so that the nearer one is visited next.
      if (bl <= br) {
        stack[sp++] = {nd.right, br};
        stack[sp++] = {nd.left, bl};
      } else {
        stack[sp++] = {nd.left, bl};
        stack[sp++] = {nd.right, br};
      }
    }
    return count;
  }
};

template <typename T, int NORM>
void kdtree_forward(const at::Tensor& p1, const at::Tensor& p2, const int64_t* l1,
                    const int64_t* l2, int K, at::Tensor& dists, at::Tensor& idx) {
  const int64_t B = p1.size(0), P1 = p1.size(1), P2 = p2.size(1);
  const int D = static_cast<int>(p1.size(2));
  const T* x1 = p1.data_ptr<T>();
  const T* x2 = p2.data_ptr<T>();
  T* od = dists.data_ptr<T>();
  int64_t* oi = idx.data_ptr<int64_t>();
  std::vector<KdTree<T>> trees(B);
  const int64_t build_grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(P2, 1));
  parallel_for_dynamic(B, build_grain, [&](int64_t b) {
    if (l2[b] > 0) trees[b].build(x2 + b * P2 * D, l2[b], D);
  });
  // Items of kTreeQueryBlock queries; as before, a thread is worth it from 256 queries on.
  const int64_t blocks = (P1 + kTreeQueryBlock - 1) / kTreeQueryBlock;  // per cloud
  parallel_for_dynamic(B * blocks, 256 / kTreeQueryBlock, [&](int64_t item) {
    const int64_t b = item / blocks;
    if (l2[b] == 0) return;
    const int64_t i0 = (item % blocks) * kTreeQueryBlock;
    const int64_t i1 = std::min(l1[b], i0 + kTreeQueryBlock);
    for (int64_t w = b * P1 + i0; w < b * P1 + i1; ++w) {
      const int count = trees[b].template query<NORM>(x1 + w * D, K, od + w * K, oi + w * K);
      for (int k = count; k < K; ++k) {
        od[w * K + k] = T(0);
        oi[w * K + k] = -1;
      }
    }
  });
}

}  // namespace

void knn_forward_kdtree_cpu(const at::Tensor& p1, const at::Tensor& p2, const at::Tensor& lengths1,
                            const at::Tensor& lengths2, int64_t K, int64_t norm, at::Tensor& dists,
                            at::Tensor& idx) {
  AT_DISPATCH_FLOATING_TYPES(p1.scalar_type(), "crfold_knn_kdtree_cpu", [&] {
    const int64_t* l1 = lengths1.data_ptr<int64_t>();
    const int64_t* l2 = lengths2.data_ptr<int64_t>();
    if (norm == kNormL1) {
      kdtree_forward<scalar_t, kNormL1>(p1, p2, l1, l2, static_cast<int>(K), dists, idx);
    } else {
      kdtree_forward<scalar_t, kNormL2>(p1, p2, l1, l2, static_cast<int>(K), dists, idx);
    }
  });
}

}  // namespace crfold
