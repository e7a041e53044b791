# Two commands matter: `make test` and `make demo` (see README.md). Both create .venv first.
PYTHON ?= python3
VENV   ?= .venv
# The CPU wheel that lies on these machines' disk. A GPU user overrides it, e.g.
#   make test TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
NVCC   ?= nvcc

.PHONY: venv test test-fast demo bench bench-train lint format cuda-check build clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,viz]"
	touch $@

venv: $(VENV)/.installed

build: venv  ## compile the kNN extension once (cached) and say which backend runs
	$(PY) -m crfold.ops.build

test: build
	$(PY) -m pytest -q

test-fast: build
	$(PY) -m pytest -q -m "not slow"

demo: build  ## CR-FoldingNet on the embedded shapes, then the SVM / logistic probes
	$(PY) scripts/demo.py

bench: build  ## the kNN / Chamfer op against its peers (one table)
	$(PY) benchmarks/bench_chamfer.py

bench-train: build  ## training throughput: crfold vs a plain-PyTorch FoldingNet step
	$(PY) benchmarks/bench_train.py

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/clang-format --dry-run --Werror crfold/ops/csrc/*.h crfold/ops/csrc/*.cpp crfold/ops/csrc/*.cu

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/clang-format -i crfold/ops/csrc/*.h crfold/ops/csrc/*.cpp crfold/ops/csrc/*.cu

# Compile-only check of the CUDA kernels (no GPU needed): the .cu file includes no torch header.
cuda-check:
	mkdir -p build/cuda-check
	$(NVCC) -std=c++17 -O3 -Xcompiler -Wall \
	  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
	  -c crfold/ops/csrc/knn_cuda.cu -o build/cuda-check/knn_cuda.o
	@echo "nvcc compiled crfold/ops/csrc/knn_cuda.cu for sm_80 and sm_90"

clean:
	rm -rf build $(VENV) .pytest_cache .ruff_cache
