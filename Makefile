# kdlab: `make demo` (main job) and `make test` (tests) each set up everything they need on a
# fresh Debian machine with Python >= 3.10: a virtual environment in .venv with kdlab installed
# editable (pip install -e .[dev,export,timm]) and Fashion-MNIST from the Debian package dataset-fashion-mnist.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kdlab-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data demo test test-slow bench docs clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed; installing python3-venv"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,export,timm]'
	@touch $@

# Fashion-MNIST offline: the Debian package, unless the files are already there (or in $KDLAB_DATA).
data:
	@root="$${KDLAB_DATA:-$$HOME/.cache/kdlab/data}"; \
	if [ -f $(FMNIST) ] || [ -f "$$root/FashionMNIST/raw/train-images-idx3-ubyte.gz" ]; then \
	  echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "Fashion-MNIST: installing the Debian package dataset-fashion-mnist"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST: not found and no apt-get; kdlab will try to download it into $$root"; \
	fi

demo: setup
	$(BIN)/kdlab demo

# the default tests on every core (pytest-xdist; TEST_WORKERS=0 runs them in this process), a test file per worker
TEST_WORKERS ?= auto
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# the docs site (mkdocs.yml) into site/: paper tables from results/, the config reference from the dataclasses
docs: setup
	$(BIN)/python -m pip install -q -e '.[docs]'
	$(BIN)/mkdocs build --strict

bench: setup
	$(BIN)/python benchmarks/bench_distill_step.py --threads 1
	$(BIN)/python benchmarks/bench_compile.py
	$(BIN)/python benchmarks/bench_jacobian_step.py
	$(BIN)/python benchmarks/bench_fid.py
	$(BIN)/python benchmarks/bench_kdgan.py
	$(BIN)/python benchmarks/bench_ddp.py --threads 1

clean:
	rm -rf $(VENV) runs .pytest_cache site
