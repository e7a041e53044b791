# Two commands matter: `make test` and `make demo` (see README.md). Both create .venv first.
PYTHON ?= python3
VENV   ?= .venv
# The CPU wheel that lies on these machines' disk. A GPU user overrides it, e.g.
#   make test TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
NVCC   ?= nvcc

.PHONY: venv test test-fast demo bench bench-busy bench-train lint format cuda-check cuda-build build clean

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

bench: build  ## the kNN / Chamfer op against its peers, beside busy processes, then the max-pools
	$(PY) benchmarks/bench_chamfer.py
	$(PY) benchmarks/bench_busy.py --busy 2
	$(PY) benchmarks/bench_pool.py

bench-busy: build  ## crfold's Chamfer at 1 vs 2 threads beside 2 busy processes, in rounds
	$(PY) benchmarks/bench_busy.py --busy 2

bench-train: build  ## training throughput: crfold vs a plain-PyTorch FoldingNet step
	$(PY) benchmarks/bench_train.py

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) scripts/import_cycles.py crfold crfold_images data_prep viz
	$(VENV)/bin/clang-format --dry-run --Werror crfold/ops/csrc/*.h crfold/ops/csrc/*.cpp crfold/ops/csrc/*.cu

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/clang-format -i crfold/ops/csrc/*.h crfold/ops/csrc/*.cpp crfold/ops/csrc/*.cu

# Compile-only check of the CUDA kernels (no GPU needed): the .cu files include no torch header.
cuda-check:
	mkdir -p build/cuda-check
	for cu in crfold/ops/csrc/*.cu; do \
	  $(NVCC) -std=c++17 -O3 -Xcompiler -Wall \
	    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
	    -c $$cu -o build/cuda-check/$$(basename $$cu .cu).o || exit 1; \
	  echo "nvcc compiled $$cu for sm_80 and sm_90"; \
	done

# The whole extension (kernels, glue, CPU kernels, bindings) compiled with -DWITH_CUDA and linked
# against a CUDA torch wheel's headers and libraries, with no GPU and without importing that torch.
# The wheel is $CRFOLD_CUDA_WHEEL (a .whl or a folder), fetched from PyPI into
# ~/.cache/crfold/cuda-torch when absent (~530 MB). Outputs in build/cuda-build. Not run by CI.
cuda-build:
	NVCC=$(NVCC) $(PYTHON) scripts/cuda_build_check.py

clean:
	rm -rf build $(VENV) .pytest_cache .ruff_cache
