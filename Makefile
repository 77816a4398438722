# The two commands of the README:  make run  (the whole pipeline on the embedded default)  and  make test.
# Both create the project virtualenv and install everything on first use.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# This machine keeps the CPU torch wheel in /opt/wheels; elsewhere pip finds torch==2.13.0 on PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE ?= 1
export PREFECT_HOME ?= $(CURDIR)/.prefect
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint ui bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(FIND_LINKS) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m flows.server dvc repro   # one Prefect server for every stage process

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check components flows tests bench
	$(VENV)/bin/ruff format --check components flows tests bench

ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf .prefect mlflow.db mlartifacts
