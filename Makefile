# xmodal: `make run` starts the app, `make test` runs every test. Both set up what is missing first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := espeak-ng flite tuxpaint-stamps-default dataset-fashion-mnist fonts-noto-color-emoji \
	ktuberling-data pocketsphinx-testdata chromium chromium-driver librsvg2-bin unicode-data \
	festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	fonts-dejavu-core fonts-liberation fonts-freefont-ttf fonts-urw-base35
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED := False
export PYTHONUNBUFFERED := 1

.PHONY: setup system run test test-fast bench bench-quick report clean-venv help

help:
	@echo "make run    - set up (if needed) and start the app on http://127.0.0.1:7860"
	@echo "make test   - set up (if needed) and run the whole test suite"
	@echo "make bench  - run all benchmarks (JSON under bench/results/); make bench-quick for the short set"
	@echo "make report - write docs/RESULTS.md from bench/results/"

setup: system $(STAMP)

# System packages: installed through apt-get when we are root and it exists; otherwise say what to run.
system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing system packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "missing system packages:" $$missing; \
		echo "run: sudo apt-get install -y" $$missing; exit 1; \
	fi

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The default model (xmodal-default) is trained first when it is missing (about 10-15 minutes on
# 2 CPU cores, with progress bars); then it is a lookup. SKIP_DEFAULT_MODEL=1 starts the app without it.
run: setup
	@if [ -z "$(SKIP_DEFAULT_MODEL)" ]; then $(PY) -m trainers.default_model; fi
	$(PY) app.py $(ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench.run_all

bench-quick: setup
	$(PY) -m bench.run_all --quick

report: setup
	$(PY) -m bench.report

clean-venv:
	rm -rf $(VENV)
