# Set-up and the two everyday jobs. Each target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup bench test clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,quant]'
	touch $(STAMP)

## bf16 vs fp32 decode benchmark on the local GPU, else the CPU, then its roofline report
bench: $(STAMP)
	$(BIN)/llmbench decode --dtype bf16,fp32 --out results/runs
	$(BIN)/llmbench report results/runs --out results/runs/report

## the test suite (CPU only; GPU tests skip without CUDA)
test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) results/runs
