// Registers the compiled ops with the PyTorch dispatcher: the schemas and the CPU kernels here,
// the CUDA kernels in knn_cuda_glue.cpp and pool_cuda_glue.cpp (CUDA builds only).
// crfold/ops/knn.py and crfold/ops/pool.py add the fake (meta) kernels and the autograd
// formulas through torch.library.
#include <torch/library.h>

#include "knn.h"
#include "pool.h"

TORCH_LIBRARY(crfold, m) {
  m.def(
      "knn_forward(Tensor p1, Tensor p2, Tensor lengths1, Tensor lengths2, int K, int norm=2)"
      " -> (Tensor, Tensor)");
  m.def(
      "knn_backward(Tensor grad_dists, Tensor p1, Tensor p2, Tensor lengths1, "
      "Tensor lengths2, Tensor idx, bool deterministic, int norm=2) -> (Tensor, Tensor)");
  m.def("graph_max_pool_forward(Tensor features, Tensor neighbours) -> (Tensor, Tensor)");
  m.def(
      "graph_max_pool_backward(Tensor grad_out, Tensor winners, int num_points, "
      "bool deterministic) -> Tensor");
  m.def("global_max_pool_forward(Tensor features) -> (Tensor, Tensor)");
  m.def("global_max_pool_backward(Tensor grad_out, Tensor winners, int num_points) -> Tensor");
}

TORCH_LIBRARY_IMPL(crfold, CPU, m) {
  m.impl("knn_forward", &crfold::knn_forward_cpu);
  m.impl("knn_backward", &crfold::knn_backward_cpu);
  m.impl("graph_max_pool_forward", &crfold::graph_max_pool_forward_cpu);
  m.impl("graph_max_pool_backward", &crfold::graph_max_pool_backward_cpu);
  m.impl("global_max_pool_forward", &crfold::global_max_pool_forward_cpu);
  m.impl("global_max_pool_backward", &crfold::global_max_pool_backward_cpu);
}
