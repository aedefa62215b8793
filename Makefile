# The README's first two commands: `make demo` and `make test`. Both set everything up first and
# are cheap to re-run: each set-up step leaves a stamp file and is skipped when it is there.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
FMNIST := /usr/share/datasets/fashion-mnist
STAMP  := $(VENV)/.deepzip-installed

.PHONY: setup data demo test bench clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Exactly this pin: it is the local CPU wheel. Any other spec downloads GBs of CUDA packages.
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist. Installed with apt-get when we are root;
# otherwise deepzip itself says where it looked and how to get the data.
data:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ] && [ -z "$$DEEPZIP_DATA" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian package dataset-fashion-mnist"; \
	    (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	  else \
	    echo "Fashion-MNIST not in $(FMNIST): run 'sudo apt-get install dataset-fashion-mnist' or set DEEPZIP_DATA"; \
	  fi; \
	fi
# The King James Bible (public domain), the calibration / evaluation text for pretrained transformers:
# Debian's bible-kjv (its 'bible' program prints the text of bible-kjv-text). Skipped quietly if not root.
	@if ! command -v bible >/dev/null && [ -z "$$DEEPZIP_KJV" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian package bible-kjv"; \
	  (apt-get install -y -qq bible-kjv >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq bible-kjv)) >/dev/null || true; \
	fi

demo: setup
	$(VENV)/bin/deepzip demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/baselines.py
	$(PY) benchmarks/prune.py
	$(PY) benchmarks/quantize.py
	$(PY) benchmarks/compress.py
	$(PY) benchmarks/lottery.py
	$(PY) benchmarks/runtime.py
	$(PY) benchmarks/panels.py
	$(PY) benchmarks/rowtables_minilm.py
	$(PY) benchmarks/gpu_compile.py
	$(PY) benchmarks/fuzz_dz.py
	$(PY) benchmarks/scale_out.py

clean:
	rm -rf $(VENV) runs .pytest_cache
