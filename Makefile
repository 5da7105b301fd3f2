# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs dpal, runs `dpal run mnist --quick`: a DP model on MNIST,
#               improved with bought public labels by every strategy; a table of accuracy and ε
#   make test   creates .venv if needed, runs ruff, mypy and pytest
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The offline copy of the datasets beside the project (see ../shared/datasets/README.md).
export DPAL_DATA ?= $(abspath ../shared/datasets)

.PHONY: demo test lint typecheck bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# torch and torchvision are pinned first and separately: they install from local disk here,
# and nothing later may replace them with a different (multi-GB) build.
$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/dpal run mnist --quick --out runs/demo-$$(date +%Y%m%d-%H%M%S)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# Two workers, one thread each: most tests are small tensors, where a second process beats a
# second thread (the default run took 2,030 s on 2 cores in one process).
test: lint typecheck
	$(BIN)/pytest -n 2 --dist loadgroup

# Opacus is the benchmark's reference, not a dependency: --no-deps keeps the pinned torch.
bench: $(VENV)/.installed
	$(BIN)/pip install -q --no-deps opacus==1.6.0
	$(BIN)/python benchmarks/dpsgd_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
