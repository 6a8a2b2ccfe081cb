# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv if missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: setup test test-all test-flower demo lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch 2.13.0 first: a plain `torch` requirement would pull a multi-GB CUDA build here.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q

# Flower 1.42 pins typer<0.21 and rich<15: installing the extra downgrades them in this venv.
test-flower: setup
	$(PY) -m pip install --quiet -e '.[dev,flower]'
	$(PY) -m pip check
	$(PY) -m pytest -q -m flower tests/integrations

demo: setup
	$(VENV)/bin/fedprllm-secure simulate --protocol plaintext --clients 8 --samples-per-client 8 \
	  --sparsity 0.5 --group layer --split iid --seed 0 --method fedprllm,centralized,local \
	  --out $(DEMO_OUT) --overwrite

lint: setup
	$(VENV)/bin/ruff check fedprllm_secure tests experiments
	$(VENV)/bin/ruff format --check fedprllm_secure tests experiments

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
