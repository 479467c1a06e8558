# One-command setup-and-run targets. Each bootstraps .venv idempotently.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmsa-installed
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_XET ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: test pretrain install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first (from local disk here), then the package under the same constraint.
	$(PY) -m pip install -q -c constraints/cpu.txt torch
	$(PY) -m pip install -q -c constraints/cpu.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

pretrain: $(STAMP)
	$(VENV)/bin/accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		scripts/pretrain.py --config small --max_molecules 6000 --num_epochs 8 --num_proc 2 --mixed_precision bf16 \
		--time_budget_minutes 9 $(ARGS)

clean-venv:
	rm -rf $(VENV)
