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

CORPORA_SOURCE ?= ../shared/data

.PHONY: install corpora run test lint ui bench bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(FIND_LINKS) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The corpora live in the repo as DVC-tracked data (corpora.dvc in git, the files in .dvc/cache), so a
# queued or --temp experiment's copy of the repo checks them out. A clone without them in its cache
# copies them from CORPORA_SOURCE (made writable: CI's copy of shared/ is read-only); the content hash,
# and so corpora.dvc, stays the same.
corpora: install
	$(VENV)/bin/dvc checkout -q corpora.dvc 2>/dev/null || { test -d corpora || { cp -r $(CORPORA_SOURCE) corpora && chmod -R u+w corpora; }; $(VENV)/bin/dvc add -q corpora; }

run: install corpora
	$(PY) -m flows.server dvc repro   # one Prefect server for every stage process

test: install corpora
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check components flows tests bench
	$(VENV)/bin/ruff format --check components flows tests bench

# The maintained benchmarks (bench/; each script's docstring has its options). `make bench` reruns them
# all and rewrites their BENCHMARKS.md sections: many hours on a 2-core CPU. `make bench-smoke` runs
# each on tiny models (minutes in all) and writes nothing: BENCH_FLAGS=--smoke.
BENCHES := summarization prompt_sample_efficiency prompt_authors_protocol prompt_guidance_scale prompt_scoring \
  guidance_fit orchestration dvc_rerun memory disk_usage gpu_check
BENCH_FLAGS ?=

bench: install corpora
	set -e; for name in $(BENCHES); do echo "== bench.$$name $(BENCH_FLAGS)"; $(PY) -m bench.$$name $(BENCH_FLAGS); done

bench-smoke:
	$(MAKE) bench BENCH_FLAGS=--smoke

ui: install
	@echo "open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning  (the Model training view)"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf .prefect mlflow.db mlartifacts
