// Registers the kNN primitive with the PyTorch dispatcher: the schema and the CPU kernels here,
// the CUDA kernels in knn_cuda_glue.cpp (CUDA builds only). crfold/ops/knn.py adds the fake
// (meta) kernels and the autograd formula through torch.library.
#include <torch/library.h>

#include "knn.h"

TORCH_LIBRARY(crfold, m) {
  m.def(
      "knn_forward(Tensor p1, Tensor p2, Tensor lengths1, Tensor lengths2, int K)"
      " -> (Tensor, Tensor)");
  m.def(
      "knn_backward(Tensor grad_dists, Tensor p1, Tensor p2, Tensor lengths1, "
      "Tensor lengths2, Tensor idx, bool deterministic) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(crfold, CPU, m) {
  m.impl("knn_forward", &crfold::knn_forward_cpu);
  m.impl("knn_backward", &crfold::knn_backward_cpu);
}
